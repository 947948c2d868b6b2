// A Backend that writes nothing and remembers what it was asked, for tests of whoever drives a
// backend (the agent). Any call can be held open, to see what happens while it is in flight.
import { type Cidr, formatCidr } from '../../src/net/ip.js';
import type { Lease } from '../../src/store/lease.js';
import type { Backend, BackendPreparation, HostContext, ReconcileOptions, ReconcileReport } from '../../src/backends/types.js';

export interface ReconcileCall {
  /** The peers' subnets, sorted, so a test compares sets without caring for watch order. */
  readonly peers: readonly string[];
  readonly full: boolean;
}

type Op = 'prepare' | 'reconcile';

/** A held call: `entered` resolves once the call is waiting; release() lets it go on. */
export interface Gate {
  readonly entered: Promise<void>;
  release(): void;
}

export class RecordingBackend implements Backend {
  /** Every call in order, as short strings ("prepare", "activate 10.244.3.0/24", "close keep"). */
  readonly ops: string[] = [];
  readonly reconciles: ReconcileCall[] = [];
  /** What the next reconcile passes return, or throw. */
  report: ReconcileReport | Error = { repairs: 0, removals: 0, problems: [], skipped: [] };
  private readonly gates = new Map<Op, { entered: () => void; released: Promise<void> }>();

  constructor(readonly type: string, private readonly prep: BackendPreparation = { backendData: null, mtu: 1500 }) {}

  /** Holds the next call of `op` until the returned gate is released. */
  hold(op: Op): Gate {
    let entered!: () => void;
    let release!: () => void;
    const enteredP = new Promise<void>((r) => { entered = r; });
    const released = new Promise<void>((r) => { release = r; });
    this.gates.set(op, { entered, released });
    return { entered: enteredP, release };
  }

  private async gate(op: Op): Promise<void> {
    const g = this.gates.get(op);
    if (!g) return;
    this.gates.delete(op);
    g.entered();
    await g.released;
  }

  async prepare(_host: HostContext): Promise<BackendPreparation> {
    this.ops.push('prepare');
    await this.gate('prepare');
    return this.prep;
  }

  async activate(ownSubnet: Cidr, ownIPv6Subnet?: Cidr): Promise<void> {
    this.ops.push(`activate ${formatCidr(ownSubnet)}${ownIPv6Subnet && ownIPv6Subnet !== ownSubnet ? ` ${formatCidr(ownIPv6Subnet)}` : ''}`);
  }

  async reconcile(peers: readonly Lease[], opts: ReconcileOptions = {}): Promise<ReconcileReport> {
    const call = { peers: peers.map((p) => formatCidr(p.subnet)).sort(), full: opts.full ?? true };
    this.reconciles.push(call);
    this.ops.push(`reconcile ${call.full ? 'full' : 'incremental'} ${call.peers.length}`);
    await this.gate('reconcile');
    if (this.report instanceof Error) throw this.report;
    return this.report;
  }

  async close(opts: { keepDataplane: boolean }): Promise<void> {
    this.ops.push(`close ${opts.keepDataplane ? 'keep' : 'flush'}`);
  }
}

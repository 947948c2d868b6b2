// The node's own subnet lease: acquire (reuse ours, else the one in the previous subnet file,
// else a random free one), renew before expiry, report readiness, and treat the lease's removal
// or its takeover by another writer as fatal — another node may already have been handed the
// subnet. Both are seen as they happen through the watch of the others' leases, which also
// delivers the own key, not only at the next renewal (12 h away with the default TTL).
import { randomBytes, randomInt } from 'node:crypto';
import { CniCode, WeftError } from '../errors.js';
import { type Cidr, type IP, cidrEquals, formatCidr, formatIP, ipEquals, subnetKey } from '../net/ip.js';
import { createLogger, type Logger } from '../log.js';
import { type AddressPlan, type NetworkConfig, leasableSubnet, planAllows, subnetCount } from './config.js';
import { type Lease, type LeaseAttrs, encodeLeaseAttrs, parseLease, parseLeaseValue } from './lease.js';
import type { HeldEntry, RawEntry, SubnetStore } from './types.js';
import { LeaseWatcher, type LeaseEvent, type WatcherState } from './watch.js';

export const DEFAULT_LEASE_TTL_SECONDS = 24 * 3600;

export type ManagerStatus =
  | { readonly type: 'idle' }
  /** No lease yet, and why (kube: the Node has no podCIDR yet, or the API refuses). */
  | { readonly type: 'waiting'; readonly reason: string }
  | { readonly type: 'ready'; readonly lease: Lease }
  /** The store cannot be reached; the lease is kept and renewal keeps trying. */
  | { readonly type: 'not-ready'; readonly lease: Lease; readonly reason: string }
  | { readonly type: 'fatal'; readonly error: WeftError }
  | { readonly type: 'stopped' };

export interface LeaseManagerOptions {
  readonly store: SubnetStore;
  readonly config: NetworkConfig;
  /** The host's IPv4 underlay address, or its IPv6 one when it has no IPv4 underlay. */
  readonly publicIP: IP;
  readonly publicIPv6?: IP | undefined;
  readonly backendType: string;
  readonly backendData?: unknown;
  /** What the backend's IPv6 dataplane publishes (BackendV6Data), on a dual-stack network. */
  readonly backendV6Data?: unknown;
  readonly ttlSeconds?: number;
  /** Renew this often instead of at half the TTL (at most 1 h before expiry). */
  readonly renewEverySeconds?: number;
  /** The subnet from the node's previous subnet file, preferred when still free. */
  readonly previousSubnet?: Cidr | undefined;
  /** The IPv6 subnet from the previous subnet file (dual-stack), preferred when still free. */
  readonly previousIPv6Subnet?: Cidr | undefined;
  readonly log?: Logger;
  readonly onStatus?: (s: ManagerStatus) => void;
}

/** What the agent needs of whoever obtains its lease: the LeaseManager, or a store's own (kube). */
export interface SubnetLeaser {
  readonly status: ManagerStatus;
  /**
   * True when acquiring waits on someone else (kube: the controller assigning a podCIDR), so it
   * has no deadline; the leaser reports why it waits and the agent's readiness shows it.
   */
  readonly waitsForAssignment?: boolean;
  start(): Promise<Lease>;
  watchOthers(onEvent: (ev: LeaseEvent) => void, onState?: (s: WatcherState) => void): LeaseWatcher;
  stop(opts?: { release?: boolean }): Promise<void>;
}

/** How many conflicting put-if-absent attempts before giving up (each picks another subnet). */
const MAX_ATTEMPTS = 64;

export class LeaseManager implements SubnetLeaser {
  private held: HeldEntry | undefined;
  private lease: Lease | undefined;
  private statusNow: ManagerStatus = { type: 'idle' };
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private renewing: Promise<void> | undefined;
  /** A renewal run to confirm what a watch saw happen to the own key. */
  private verifying: Promise<void> | undefined;
  /** A write seen while a confirmation ran, which may have read the key before it. */
  private verifyAgain = false;
  /** Who last wrote the own key when it was not us, for the fatal message. */
  private writtenBy: string | undefined;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly attrs: LeaseAttrs;
  /** The plan of the lease's identity subnet: IPv4, or IPv6 on an IPv6-only network. */
  private readonly plan: AddressPlan;
  /** The IPv6 plan of a dual-stack network: each lease takes an IPv6 subnet beside its IPv4 one. */
  private readonly plan6: AddressPlan | undefined;
  /** The listing the lease was chosen from, handed to the first watchOthers (saves a re-list). */
  private listing: { readonly revision: bigint; readonly entries: readonly RawEntry[] } | undefined;

  constructor(private readonly opts: LeaseManagerOptions) {
    this.log = opts.log ?? createLogger({ component: 'lease-manager' });
    this.ttl = opts.ttlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    const primary = opts.config.ipv4 ?? opts.config.ipv6;
    if (!primary) throw new WeftError(CniCode.InvalidNetworkConfig, 'network config: neither Network nor IPv6Network');
    this.plan = primary;
    this.plan6 = opts.config.ipv4 ? opts.config.ipv6 : undefined;
    if (opts.config.ipv6 && !(opts.publicIPv6 ?? (opts.publicIP.family === 6 ? opts.publicIP : undefined))) {
      throw new WeftError(CniCode.InvalidNetworkConfig, 'network config: EnableIPv6: this host has no IPv6 public address (give --public-ipv6, or an interface with a global IPv6 address)');
    }
    this.attrs = {
      publicIP: opts.publicIP,
      publicIPv6: opts.publicIPv6,
      backendType: opts.backendType,
      backendData: opts.backendData ?? null,
      ...(opts.backendV6Data !== undefined && opts.backendV6Data !== null && { backendV6Data: opts.backendV6Data }),
    };
  }

  get status(): ManagerStatus {
    return this.statusNow;
  }

  /** The subnet held, if any. */
  get subnet(): Cidr | undefined {
    return this.lease?.subnet;
  }

  private setStatus(s: ManagerStatus): void {
    const changed = s.type !== this.statusNow.type;
    this.statusNow = s;
    if (changed) {
      if (s.type === 'not-ready') this.log.warn('lease store unreachable; keeping the lease', { reason: s.reason });
      if (s.type === 'ready' ) this.log.info('lease held', { subnet: formatCidr(s.lease.subnet) });
      this.opts.onStatus?.(s);
    }
  }

  /** Acquires the lease and starts renewing it. Throws "out of subnets" when none is free. */
  async start(): Promise<Lease> {
    const lease = await this.acquire();
    this.scheduleRenew();
    return lease;
  }

  /** Whether an entry's subnets fit the config (its IPv6 half included): reusable as it is. */
  private fits(e: RawEntry): boolean {
    if (!planAllows(this.plan, e.subnet)) return false;
    if (!this.plan6) return this.plan.network.ip.family === 6 || e.ipv6Subnet === undefined;
    return e.ipv6Subnet !== undefined && planAllows(this.plan6, e.ipv6Subnet);
  }

  private async acquire(): Promise<Lease> {
    const value = encodeLeaseAttrs(this.attrs);
    const tried = new Set<string>();
    const tried6 = new Set<string>();
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const listing = await this.opts.store.listSubnets();
      const { entries } = listing;
      // On an IPv6-only network the subnets to avoid include dual-stack leases' IPv6 halves.
      const v6only = this.plan.network.ip.family === 6;
      const takenOf = (e: RawEntry): Cidr => (v6only ? e.ipv6Subnet ?? e.subnet : e.subnet);
      const taken = new Set(entries.map((e) => subnetKey(takenOf(e))));
      for (const k of tried) taken.add(k);
      const taken6 = new Set(entries.flatMap((e) => (e.ipv6Subnet ? [subnetKey(e.ipv6Subnet)] : [])));
      for (const k of tried6) taken6.add(k);

      // 1. Our own lease from before a restart: same PublicIP, still inside the config's range.
      const ours = (e: RawEntry): boolean => {
        const p = parseLease(e);
        return p.ok && ipEquals(p.lease.attrs.publicIP, this.opts.publicIP) && planAllows(this.plan, takenOf(e));
      };
      let mine = entries.find(ours);
      let keep: Cidr | undefined;
      if (mine && !this.fits(mine)) {
        // Ours, but of another address family set (IPv6 enabled or disabled since): flanneld
        // drops such a lease and takes a new one; its IPv4 subnet is kept where it is free.
        this.log.info('own lease does not fit the network config\'s address families; replacing it', { subnet: formatCidr(mine.subnet) });
        await this.opts.store.deleteSubnet(mine.subnet);
        taken.delete(subnetKey(takenOf(mine)));
        if (mine.ipv6Subnet) taken6.delete(subnetKey(mine.ipv6Subnet));
        keep = takenOf(mine);
        mine = undefined;
      }
      let choice: { subnet: Cidr; ipv6Subnet?: Cidr | undefined; expect: { type: 'absent' } | { type: 'revision'; revision: bigint } } | undefined;
      if (mine) {
        choice = { subnet: mine.subnet, ipv6Subnet: mine.ipv6Subnet, expect: { type: 'revision', revision: mine.revision } };
      } else {
        const prev = keep ?? this.opts.previousSubnet;
        const subnet = prev && planAllows(this.plan, prev) && !taken.has(subnetKey(prev)) ? prev : this.pickFree(this.plan, taken);
        if (!subnet) throw this.outOfSubnets(this.plan, entries.length);
        let ipv6Subnet: Cidr | undefined;
        if (this.plan6) {
          const prev6 = this.opts.previousIPv6Subnet;
          ipv6Subnet = prev6 && planAllows(this.plan6, prev6) && !taken6.has(subnetKey(prev6)) ? prev6 : this.pickFree(this.plan6, taken6);
          if (!ipv6Subnet) throw this.outOfSubnets(this.plan6, entries.length);
        } else if (subnet.ip.family === 6) ipv6Subnet = subnet;
        choice = { subnet, ipv6Subnet, expect: { type: 'absent' } };
      }
      const dual = choice.ipv6Subnet !== undefined && choice.subnet.ip.family === 4 ? choice.ipv6Subnet : undefined;
      const res = await this.opts.store.writeSubnet(choice.subnet, value, this.ttl, choice.expect, dual);
      if (res.type === 'written') {
        if (mine && mine.expiresAt !== null) {
          // A restart, normally. Were another weftd still running with this address, it now sees
          // its key taken over and stops, saying so.
          this.log.info('took over the lease published under this node\'s public IP', { subnet: formatCidr(mine.subnet), publicIP: formatIP(this.opts.publicIP) });
        }
        this.listing = listing;
        this.held = res.held;
        const parsed = parseLease({ subnet: res.held.subnet, ipv6Subnet: choice.ipv6Subnet, value, revision: res.held.revision, expiresAt: res.held.expiresAt });
        if (!parsed.ok) throw new WeftError(CniCode.Internal, parsed.reason);
        this.lease = parsed.lease;
        this.setStatus({ type: 'ready', lease: parsed.lease });
        return parsed.lease;
      }
      // Someone else got there first; do not pick those subnets again.
      tried.add(subnetKey(choice.subnet));
      if (dual) tried6.add(subnetKey(dual));
    }
    throw new WeftError(CniCode.TryAgainLater, `could not lease a subnet of ${formatCidr(this.plan.network)} after ${MAX_ATTEMPTS} conflicting attempts`);
  }

  private outOfSubnets(plan: AddressPlan, leased: number): WeftError {
    const v6 = plan.network.ip.family === 6 ? 'IPv6' : '';
    return new WeftError(CniCode.IpamExhausted,
      `out of subnets: all ${subnetCount(plan)} /${plan.subnetLen} subnets of ${formatCidr(plan.network)} `
      + `between ${v6}SubnetMin ${formatIP(plan.subnetMin.ip)} and ${v6}SubnetMax ${formatIP(plan.subnetMax.ip)} are taken (${leased} leases in the store)`);
  }

  /**
   * A uniformly random subnet not in `taken`. Random probes find one at once while the range is
   * mostly free; a full enumeration settles the crowded (or exhausted) case.
   */
  private pickFree(plan: AddressPlan, taken: ReadonlySet<string>): Cidr | undefined {
    const count = subnetCount(plan);
    const randomIndex = () => (count < 2n ** 48n ? BigInt(randomInt(Number(count))) : randomBytes(8).readBigUInt64BE() % count);
    for (let probe = 0; probe < 64; probe++) {
      const s = leasableSubnet(plan, randomIndex());
      if (!taken.has(subnetKey(s))) return s;
    }
    if (count > 1n << 20n) return undefined;
    const free: Cidr[] = [];
    for (let i = 0n; i < count; i++) {
      const s = leasableSubnet(plan, i);
      if (!taken.has(subnetKey(s))) free.push(s);
    }
    return free.length === 0 ? undefined : free[randomInt(free.length)];
  }

  private renewDelayMs(): number {
    if (this.opts.renewEverySeconds !== undefined) return this.opts.renewEverySeconds * 1000;
    // Half the TTL, but never later than an hour before expiry (flannel's margin for 24 h).
    return Math.max(1000, Math.min(this.ttl / 2, Math.max(this.ttl - 3600, this.ttl / 2)) * 1000);
  }

  private scheduleRenew(delayMs = this.renewDelayMs()): void {
    if (this.stopped) return;
    // A renewal run out of turn (see verify) reschedules too: one timer, never two.
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.renewing = this.renewOnce(); }, delayMs);
    this.timer.unref?.();
  }

  /** One renewal; exposed so tests and the agent can force it. */
  async renewOnce(): Promise<void> {
    const held = this.held;
    const lease = this.lease;
    if (!held || !lease || this.stopped) return;
    try {
      const r = await this.opts.store.renewSubnet(held);
      if (this.stopped) return;
      if (r.type === 'lost') {
        this.fail(this.writtenBy === undefined ? r.reason : `${r.reason}; ${this.writtenBy}`);
        return;
      }
      this.held = r.held;
      this.writtenBy = undefined;
      this.lease = { ...lease, expiresAt: r.held.expiresAt, revision: r.held.revision };
      this.setStatus({ type: 'ready', lease: this.lease });
      this.scheduleRenew();
    } catch (err) {
      if (this.stopped) return;
      const reason = err instanceof Error ? err.message : String(err);
      this.setStatus({ type: 'not-ready', lease, reason });
      // Retry soon: the lease is only safe while it has TTL left.
      this.scheduleRenew(Math.min(1000, this.renewDelayMs()));
    }
  }

  private fail(reason: string): void {
    if (this.statusNow.type === 'fatal' || this.stopped) return;
    const error = new WeftError(CniCode.Store,
      `own subnet lease lost: ${reason}; stopping, because another node may now be given this subnet`);
    this.log.error('own subnet lease lost', { reason });
    if (this.timer) clearTimeout(this.timer);
    this.setStatus({ type: 'fatal', error });
  }

  /** Called when a watcher saw our key vanish; confirmed by a renewal before declaring it fatal. */
  ownLeaseRemoved(subnet: Cidr): void {
    if (!this.lease || !cidrEquals(this.lease.subnet, subnet) || this.stopped) return;
    this.verify();
  }

  /**
   * Called with each write to our key a watcher sees. Our own (the acquiring write, renewals)
   * carry our owner token and value; an older one is the watch catching up. Anything else is
   * someone else's write — a second weftd with this node's address taking the lease over, an
   * operator's — and is confirmed by a renewal, which checks the owner, before it is fatal.
   */
  ownLeaseWritten(entry: RawEntry): void {
    const held = this.held;
    if (!held || this.stopped || !cidrEquals(held.subnet, entry.subnet) || entry.revision < held.revision) return;
    if ((entry.owner === undefined || entry.owner === held.token) && entry.value === held.value) return;
    const p = parseLeaseValue(entry.value);
    if (!p.ok) this.writtenBy = 'the key was last written with an unreadable value';
    else if (ipEquals(p.attrs.publicIP, this.opts.publicIP)) {
      this.writtenBy = `the key was last written by a writer publishing this node's own public IP ${formatIP(this.opts.publicIP)} — a second weftd for this node?`;
    } else this.writtenBy = `the key was last written by a node with public IP ${formatIP(p.attrs.publicIP)}`;
    this.verify();
  }

  private verify(): void {
    if (this.verifying) { this.verifyAgain = true; return; }
    this.verifying = this.renewOnce().finally(() => {
      this.verifying = undefined;
      if (this.verifyAgain) { this.verifyAgain = false; this.verify(); }
    });
  }

  /** A watch of every other node's lease, wired to this manager's own-lease detection. */
  watchOthers(onEvent: (ev: LeaseEvent) => void, onState?: (s: WatcherState) => void): LeaseWatcher {
    const initialListing = this.listing;
    this.listing = undefined;
    return new LeaseWatcher({
      ...(initialListing && { initialListing }),
      store: this.opts.store,
      onEvent,
      ownSubnet: () => this.lease?.subnet,
      onOwnRemoved: (s) => this.ownLeaseRemoved(s),
      onOwnPut: (e) => this.ownLeaseWritten(e),
      ...(onState ? { onState } : {}),
      log: this.log,
    });
  }

  /** Stops renewing; with `release`, deletes the lease so the subnet is free at once. */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    this.listing = undefined;
    if (this.timer) clearTimeout(this.timer);
    await Promise.all([this.renewing?.catch(() => {}), this.verifying?.catch(() => {})]);
    if (opts.release && this.held) {
      try {
        await this.opts.store.releaseSubnet(this.held);
      } catch (err) {
        this.log.warn('could not release the lease; it lapses with its TTL', { error: err instanceof Error ? err.message : String(err) });
      }
    }
    this.statusNow = { type: 'stopped' };
  }
}

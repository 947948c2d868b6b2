// Asking each host's weftd what it has programmed, for the web view. weftd answers on its health
// address or its --api-socket (/peers, and /bgp/status on the bgp backend). A weftd that cannot be
// reached is 'down' — nothing keeps its side of the links right; one that answers something else
// than weftd would (an older weftd without /peers, another program on the port) is 'unknown'.
// Which weftds can be asked depends on where the view runs: a lab names a socket per host, a node
// its own weftd, and --agent-port every lease's public IP.
import { z } from 'zod';
import { weftdGet } from '../cli/weftd-http.js';
import { CniCode, WeftError } from '../errors.js';
import type { AgentAnswer } from './build.js';
import type { UiBgpSession } from './model.js';
import { type FlowRecord, flowKey, flowsDocSchema, trafficDocSchema } from '../flows/record.js';

/** One weftd to ask, and the lease it holds when the view knows it without asking. */
export interface AgentTarget {
  /** host:port or unix:/path, as weftdGet takes it. */
  readonly addr: string;
  /** The host's lease subnet (formatCidr), known beforehand (a lab's subnet.env); else from /peers. */
  readonly subnet?: string;
  /** A node name known beforehand (a lab's hN). */
  readonly name?: string;
}

const peersDoc = z.object({
  node: z.string(),
  subnet: z.string().nullable(),
  backend: z.string().nullable(),
  ready: z.boolean(),
  why: z.string().optional(),
  problems: z.array(z.string()).optional(),
  programmed: z.array(z.string()),
  skipped: z.array(z.object({ subnet: z.string(), reason: z.string() })),
  lastReconcile: z.string().nullable(),
  reconcileError: z.string().optional(),
}).passthrough();
type PeersDoc = z.infer<typeof peersDoc>;

const bgpDoc = z.object({
  asn: z.number(),
  sessions: z.array(z.object({
    peer: z.string(), asn: z.number(), state: z.string(), uptimeSeconds: z.number(), prefixesReceived: z.number(), prefixesSent: z.number(),
  }).passthrough()),
}).passthrough();

/** Dropped connections a poller keeps per weftd, newest last. */
const DROPS_KEPT = 50;

export interface AskedAgent {
  readonly target: AgentTarget;
  /** The lease subnet the answer (or the target) names; undefined when neither does. */
  readonly subnet: string | undefined;
  readonly answer: AgentAnswer;
  /** Bytes forwarded to and from each peer subnet (weftd's /traffic), when it has them. */
  readonly traffic?: Readonly<Record<string, { readonly tx: number; readonly rx: number }>>;
  /** Its latest policy-dropped flow records (weftd's /flows?verdict=dropped), oldest first. */
  readonly drops?: readonly FlowRecord[];
  /** Where its /flows left off. */
  readonly flowsNext?: number;
  /** /peers' ETag, to ask "changed?" next time. */
  readonly etag?: string;
  /** The /peers document behind the answer, kept for a 304. */
  readonly doc?: PeersDoc;
}

/** Not reaching weftd (refused, no socket, no answer in time) — as opposed to a strange answer. */
function unreachable(err: unknown): boolean {
  return err instanceof WeftError && err.code === CniCode.TryAgainLater;
}

async function getPeers(addr: string, timeoutMs: number, prev: AskedAgent | undefined): Promise<{ doc: PeersDoc; etag: string | undefined; same: boolean }> {
  const r = await weftdGet(addr, '/peers', timeoutMs, { ...(prev?.etag !== undefined && { etag: prev.etag }), maxBytes: 16 * 1024 * 1024 });
  if (r.status === 304 && prev?.doc) return { doc: prev.doc, etag: prev.etag, same: true };
  if (r.status !== 200) throw new Error(`/peers answered HTTP ${r.status}${r.status === 404 ? ' (a weftd older than /peers?)' : ''}`);
  return { doc: peersDoc.parse(JSON.parse(r.body)), etag: r.etag, same: false };
}

/**
 * Its per-peer traffic (/traffic) and the drops recorded since the last ask (/flows after the
 * last cursor, dropped only). Either is simply absent on a weftd without them.
 */
async function trafficAndDrops(addr: string, timeoutMs: number, prev: AskedAgent | undefined): Promise<Pick<AskedAgent, 'traffic' | 'drops' | 'flowsNext'>> {
  const out: { traffic?: Record<string, { tx: number; rx: number }>; drops?: readonly FlowRecord[]; flowsNext?: number } = {};
  const json = (body: string): unknown => { try { return JSON.parse(body); } catch { return undefined; } };
  const traffic = await weftdGet(addr, '/traffic', timeoutMs).catch(() => undefined);
  const t = traffic?.status === 200 ? trafficDocSchema.safeParse(json(traffic.body)) : undefined;
  if (t?.success) out.traffic = Object.fromEntries(t.data.peers.map((p) => [p.subnet, { tx: p.tx.bytes, rx: p.rx.bytes }]));
  const flows = await weftdGet(addr, `/flows?after=${prev?.flowsNext ?? 0}&verdict=dropped`, timeoutMs).catch(() => undefined);
  const f = flows?.status === 200 ? flowsDocSchema.safeParse(json(flows.body)) : undefined;
  if (f?.success) {
    const fresh = f.data.records as FlowRecord[];
    // A drop record comes again each time more of its packets are dropped: the newest wins.
    const same = (a: FlowRecord, b: FlowRecord) => flowKey(a) === flowKey(b) && a.start === b.start;
    out.drops = fresh.length === 0 && prev?.drops ? prev.drops
      : [...(prev?.drops ?? []).filter((o) => !fresh.some((n) => same(o, n))), ...fresh].slice(-DROPS_KEPT);
    out.flowsNext = f.data.next;
  } else if (prev?.drops) {
    out.drops = prev.drops;
    if (prev.flowsNext !== undefined) out.flowsNext = prev.flowsNext;
  }
  return out;
}

/** Asks one weftd; `prev` (its last answer) lets an unchanged /peers come back as a 304. */
export async function askAgent(target: AgentTarget, timeoutMs = 1000, prev?: AskedAgent): Promise<AskedAgent> {
  try {
    const { doc, etag, same } = await getPeers(target.addr, timeoutMs, prev);
    let bgp: { asn: number; sessions: UiBgpSession[] } | undefined;
    if (doc.backend === 'bgp') {
      const r = await weftdGet(target.addr, '/bgp/status', timeoutMs).catch(() => undefined);
      const parsed = r?.status === 200 ? bgpDoc.safeParse(JSON.parse(r.body)) : undefined;
      if (parsed?.success) {
        bgp = { asn: parsed.data.asn, sessions: parsed.data.sessions.map((s) => ({ peer: s.peer, asn: s.asn, state: s.state, uptimeSeconds: s.uptimeSeconds, prefixesReceived: s.prefixesReceived, prefixesSent: s.prefixesSent })) };
      }
    }
    const extras = await trafficAndDrops(target.addr, timeoutMs, prev);
    const unchanged = prev !== undefined && JSON.stringify(extras.traffic) === JSON.stringify(prev.traffic) && extras.drops === prev.drops;
    // Unchanged /peers, no sessions that could have moved, and no new traffic or drops: the very
    // same answer, so the model builder's work on it is reused.
    if (same && bgp === undefined && unchanged && prev?.answer.type === 'answered') return prev;
    const detail = doc.ready ? `ready, ${doc.programmed.length} peers programmed` : `not ready: ${doc.why ?? doc.reconcileError ?? 'see its /readyz'}`;
    return {
      target, subnet: doc.subnet ?? target.subnet, doc, ...(etag !== undefined && { etag }), ...extras,
      // An unchanged /peers keeps the answer object: the model builder's memo is keyed on it.
      answer: same && prev?.answer.type === 'answered' && bgp === undefined ? prev.answer : {
        type: 'answered', node: doc.node, ready: doc.ready, detail, programmed: doc.programmed,
        // Peers a backend skipped are among its problems already (and show as missing links).
        problems: doc.problems ?? [],
        ...(bgp && { bgp }),
      },
    };
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    const answer: AgentAnswer = unreachable(err)
      ? { type: 'down', detail: `weftd at ${target.addr} does not answer: ${why}` }
      : { type: 'unknown', detail: `${target.addr} answered, but not as weftd does: ${why}` };
    if (prev?.answer.type === answer.type && prev.answer.detail === answer.detail) return prev;
    return { target, subnet: target.subnet, answer };
  }
}

interface Polled {
  target: AgentTarget;
  last: AskedAgent | undefined;
  /** Epoch ms of the next ask. */
  due: number;
  failures: number;
  asking: boolean;
}

export interface AgentPollerOptions {
  /** How often a weftd that answers is asked. */
  readonly intervalMs: number;
  /** Called with each answer that differs from the target's last one. */
  readonly onChange: () => void;
  readonly timeoutMs?: number;
  /** Asks in flight at most. */
  readonly parallel?: number;
}

/** A weftd that does not answer is asked again after this at most (1 s, 2 s, 4 s, … capped). */
const MAX_BACKOFF_MS = 8000;

/**
 * Asks every target on its own schedule and keeps the latest answer of each: a weftd that
 * answers every interval, one that does not less and less often, and each answer counts as soon
 * as it arrives — a few dead hosts never hold back the others.
 */
export class AgentPoller {
  private readonly polled = new Map<string, Polled>();
  private inFlight = 0;
  private closed = false;
  private readonly pending = new Set<Promise<void>>();
  /** Looks for asks that fell due (a timer per target would be thousands of timers). */
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly o: AgentPollerOptions) {
    this.timer = setInterval(() => this.askDue(), Math.max(50, Math.floor(o.intervalMs / 4)));
    this.timer.unref?.();
  }

  /** The targets to follow from now on (others are forgotten); asks those due. */
  update(targets: readonly AgentTarget[]): void {
    const keep = new Set<string>();
    for (const t of targets) {
      keep.add(t.addr);
      const p = this.polled.get(t.addr);
      if (p) p.target = t;
      else this.polled.set(t.addr, { target: t, last: undefined, due: 0, failures: 0, asking: false });
    }
    for (const addr of [...this.polled.keys()]) if (!keep.has(addr)) { this.polled.delete(addr); this.o.onChange(); }
    this.askDue();
  }

  /** The latest answer of every target that has one. */
  answers(): AskedAgent[] {
    return [...this.polled.values()].flatMap((p) => (p.last ? [p.last] : []));
  }

  /** Resolves once the asks in flight are done. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await Promise.all([...this.pending]);
  }

  private askDue(): void {
    const now = Date.now();
    for (const p of this.polled.values()) {
      if (this.closed || this.inFlight >= (this.o.parallel ?? 32)) return;
      if (p.asking || p.due > now) continue;
      p.asking = true;
      this.inFlight += 1;
      const ask = askAgent(p.target, this.o.timeoutMs ?? 1000, p.last).then((a) => {
        p.asking = false;
        this.inFlight -= 1;
        if (this.closed || this.polled.get(p.target.addr) !== p) return;
        p.failures = a.answer.type === 'down' ? p.failures + 1 : 0;
        p.due = Date.now() + (p.failures === 0 ? this.o.intervalMs : Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (p.failures - 1)));
        const changed = p.last !== a;
        p.last = a;
        if (changed) this.o.onChange();
        this.askDue();
      });
      this.pending.add(ask);
      void ask.finally(() => this.pending.delete(ask));
    }
  }
}

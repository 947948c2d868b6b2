// Turns what the kernel reports into flow records. Forwarded connections come from conntrack: a
// record when one starts (no end yet) and the same record completed — end, packets and bytes of
// both directions — when it is destroyed. Dropped ones come from the policy's NFLOG group: a
// packet the default deny dropped, named by the log prefix (src/policy/deny-log.ts); repeats of
// one connection (a client retrying its SYN) count into one record until it has been quiet for a
// while. A policy-dropped packet never gets a confirmed conntrack entry, so no connection is
// recorded twice by one node. Pure apart from the clock: src/agent/flow-service.ts feeds it.
import { type Cidr, type IP, cidrContains, formatIP } from '../net/ip.js';
import { parseDenyPrefix } from '../policy/deny-log.js';
import type { FlowEnd, FlowProto, FlowRecord } from './record.js';
import { FlowRing } from './ring.js';

/** The parts of a conntrack event the observer reads (src/netlink/conntrack.ts gives more). */
export interface CtTuple {
  readonly src: IP;
  readonly dst: IP;
  readonly proto: number;
  readonly srcPort?: number;
  readonly dstPort?: number;
}

export interface CtFlow {
  readonly original: CtTuple;
  readonly id?: number;
  readonly counters?: { readonly original: { readonly packets: number; readonly bytes: number }; readonly reply: { readonly packets: number; readonly bytes: number } };
  readonly startMs?: number;
  readonly stopMs?: number;
}

/** A packet the policy's NFLOG rule copied. */
export interface LoggedPacket {
  readonly prefix?: string;
  readonly timestampMs?: number;
  readonly ip?: { readonly src: IP; readonly dst: IP; readonly proto: number; readonly length: number; readonly srcPort?: number; readonly dstPort?: number };
}

export interface ObserverOptions {
  readonly node: string;
  /** Records kept (the ring's size). */
  readonly capacity: number;
  /** Connections worth a record: at least one end in here (the cluster network). */
  readonly network: readonly Cidr[];
  /** The pod holding an address, where the node knows it. */
  readonly podOf: (ip: IP) => { readonly namespace: string; readonly pod: string } | undefined;
  readonly now?: () => number;
  /** Each completed record (for the JSON-lines export). */
  readonly onRecord?: (r: FlowRecord) => void;
}

/** Drops of one connection this close together are one record. */
export const DROP_QUIET_MS = 5000;

const PROTO: Record<number, FlowProto> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP' };

export function protoName(n: number): FlowProto {
  return PROTO[n] ?? String(n);
}

export class FlowObserver {
  readonly ring: FlowRing;
  /** conntrack id → the open record's ring sequence number and the record. */
  private readonly open = new Map<number, { seq: number; rec: FlowRecord; closedAt?: string }>();
  /** 5-tuple → the drop record being counted into. */
  private readonly drops = new Map<string, { seq: number; rec: FlowRecord; last: number }>();
  /** Events the kernel dropped before they were read (conntrack overruns). */
  lostEvents = 0;
  private readonly now: () => number;

  constructor(private readonly o: ObserverOptions) {
    this.ring = new FlowRing(o.capacity);
    this.now = o.now ?? Date.now;
  }

  private relevant(t: CtTuple): boolean {
    return this.o.network.some((c) => cidrContains(c, t.src) || cidrContains(c, t.dst));
  }

  private end(ip: IP): FlowEnd {
    const pod = this.o.podOf(ip);
    return pod ? { ip: formatIP(ip), namespace: pod.namespace, pod: pod.pod } : { ip: formatIP(ip) };
  }

  private base(t: { src: IP; dst: IP; proto: number; srcPort?: number; dstPort?: number }): Pick<FlowRecord, 'src' | 'dst' | 'proto' | 'srcPort' | 'dstPort' | 'node'> {
    return { src: this.end(t.src), dst: this.end(t.dst), proto: protoName(t.proto), srcPort: t.srcPort ?? 0, dstPort: t.dstPort ?? 0, node: this.o.node };
  }

  /** A confirmed connection: recorded now, without an end. */
  started(f: CtFlow): void {
    if (!this.relevant(f.original)) return;
    const rec: FlowRecord = {
      ...this.base(f.original), bytes: 0, packets: 0, verdict: 'forwarded', start: new Date(f.startMs ?? this.now()).toISOString(),
    };
    const seq = this.ring.push(rec);
    if (f.id !== undefined) {
      this.open.set(f.id, { seq, rec });
      // Entries whose destroy never came (missed in an overrun) are not kept forever.
      if (this.open.size > this.o.capacity) this.open.delete(this.open.keys().next().value as number);
    }
  }

  /**
   * The connection is over. `final`: conntrack destroyed the entry — the record is completed in
   * place (or added, if its start was not seen) and exported. Not final: a TCP connection that
   * closed (FIN or RST seen) — conntrack keeps it in TIME_WAIT for minutes, and counters only
   * come with the destroy, so the service reads them from a dump and completes the record now;
   * the destroy later completes it again, in place.
   */
  ended(f: CtFlow, final = true): void {
    if (!this.relevant(f.original)) return;
    const known = f.id !== undefined ? this.open.get(f.id) : undefined;
    if (final && f.id !== undefined) this.open.delete(f.id);
    const c = f.counters;
    // The end is when it closed, even if the entry lingered in TIME_WAIT before its destroy.
    const end = known?.closedAt ?? new Date(f.stopMs ?? this.now()).toISOString();
    const rec: FlowRecord = {
      ...this.base(f.original),
      bytes: c ? c.original.bytes + c.reply.bytes : 0, packets: c ? c.original.packets + c.reply.packets : 0, verdict: 'forwarded',
      start: known?.rec.start ?? new Date(f.startMs ?? this.now()).toISOString(), end,
    };
    if (known?.closedAt !== undefined && this.ring.replace(known.seq, rec)) {
      // Completed before, when it closed: the destroy only brings the last packets' counts.
    } else {
      // Moved to the ring's head, so a reader following by cursor (weftctl flows --follow, the
      // web view) is given the completed record, not only the open one it saw before.
      if (known) this.ring.remove(known.seq);
      const seq = this.ring.push(rec);
      if (!final && f.id !== undefined) this.open.set(f.id, { seq, rec, closedAt: end });
    }
    if (final) this.o.onRecord?.(rec);
  }

  /** A connection recorded open and not yet seen closing: its counters are still to be read. */
  isOpen(id: number): boolean {
    const o = this.open.get(id);
    return o !== undefined && o.closedAt === undefined;
  }

  /** A packet the policy dropped; anything else on the group (another program's log) is ignored. */
  dropped(p: LoggedPacket): void {
    const deny = p.prefix !== undefined ? parseDenyPrefix(p.prefix) : undefined;
    if (!deny || !p.ip) return;
    const at = p.timestampMs !== undefined && Number.isFinite(p.timestampMs) && p.timestampMs > 0 ? p.timestampMs : this.now();
    this.closeQuietDrops(at);
    const key = `${p.ip.proto} ${formatIP(p.ip.src)}:${p.ip.srcPort ?? 0} ${formatIP(p.ip.dst)}:${p.ip.dstPort ?? 0}`;
    const policy = [...deny.policies, ...(deny.omitted > 0 ? [`+${deny.omitted} more`] : [])].join(',');
    const seen = this.drops.get(key);
    if (seen) {
      seen.rec = { ...seen.rec, packets: seen.rec.packets + 1, bytes: seen.rec.bytes + p.ip.length, end: new Date(at).toISOString() };
      seen.last = at;
      this.ring.remove(seen.seq);
      seen.seq = this.ring.push(seen.rec);
      return;
    }
    const rec: FlowRecord = {
      ...this.base(p.ip), bytes: p.ip.length, packets: 1, verdict: 'dropped', ...(policy !== '' && { policy }),
      start: new Date(at).toISOString(), end: new Date(at).toISOString(),
    };
    this.drops.set(key, { seq: this.ring.push(rec), rec, last: at });
  }

  /** Drop records quiet for DROP_QUIET_MS are complete: exported, and a later drop starts anew. */
  closeQuietDrops(now = this.now()): void {
    for (const [key, d] of this.drops) {
      if (now - d.last < DROP_QUIET_MS) continue;
      this.drops.delete(key);
      this.o.onRecord?.(d.rec);
    }
  }
}

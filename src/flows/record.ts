// A flow record: one connection between pods (or a pod and the outside) as a node saw it — its
// ends named by pod where the address is a pod's, its packets and bytes, when it started and
// ended, and whether it was forwarded or dropped by policy (and which). weftd keeps them in a
// bounded ring per node (ring.ts); `weftctl flows` reads the ring of every node and merges them.
// The JSON form is what `weftctl flows --json` prints, one object per line.
import { z } from 'zod';

export type FlowVerdict = 'forwarded' | 'dropped';
export type FlowProto = 'TCP' | 'UDP' | 'SCTP' | 'ICMP' | 'ICMPv6' | string;

export interface FlowEnd {
  readonly ip: string;
  /** Set when the address is a pod's the node knows of (its own, or another node's from the store). */
  readonly namespace?: string;
  readonly pod?: string;
}

export interface FlowRecord {
  readonly src: FlowEnd;
  readonly dst: FlowEnd;
  readonly proto: FlowProto;
  /** 0 for protocols without ports. */
  readonly srcPort: number;
  readonly dstPort: number;
  /** Both directions (conntrack's original + reply counters); for a dropped flow, what was dropped. */
  readonly bytes: number;
  readonly packets: number;
  readonly verdict: FlowVerdict;
  /** Dropped: the policies (namespace/name) isolating the destination (or source, on egress). */
  readonly policy?: string;
  /** ISO 8601. */
  readonly start: string;
  /** ISO 8601; absent while the connection is open. */
  readonly end?: string;
  /** The node that recorded it. */
  readonly node: string;
}

/** Same connection, whichever node saw it: protocol and both ends' addresses and ports. */
export function flowKey(f: FlowRecord): string {
  return `${f.proto} ${f.src.ip}:${f.srcPort} ${f.dst.ip}:${f.dstPort}`;
}

export function endLabel(e: FlowEnd): string {
  return e.pod !== undefined ? `${e.namespace ?? ''}/${e.pod}` : e.ip;
}

const end = z.object({ ip: z.string(), namespace: z.string().optional(), pod: z.string().optional() });

/** GET /flows as weftd answers it, checked where it is read (weftctl flows, the web view). */
export const flowsDocSchema = z.object({
  node: z.string(),
  records: z.array(z.object({
    src: end, dst: end, proto: z.string(), srcPort: z.number(), dstPort: z.number(), bytes: z.number(), packets: z.number(),
    verdict: z.enum(['forwarded', 'dropped']), policy: z.string().optional(), start: z.string(), end: z.string().optional(), node: z.string(),
  })),
  next: z.number(),
  lost: z.number(),
  lostEvents: z.number().optional(),
  problems: z.array(z.string()).optional(),
});

/** GET /traffic: bytes and packets this host forwarded to (tx) and from (rx) each peer. */
export const trafficDocSchema = z.object({
  peers: z.array(z.object({
    subnet: z.string(), publicIP: z.string(),
    tx: z.object({ bytes: z.number(), packets: z.number() }), rx: z.object({ bytes: z.number(), packets: z.number() }),
  })),
});

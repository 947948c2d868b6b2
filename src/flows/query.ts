// What `weftctl flows` does with the records of every node: keep those the filters ask for, and
// fold the records two nodes made of one connection (a pod on h0 talking to one on h1 is in both
// nodes' conntrack) into one.
import { type FlowRecord, type FlowVerdict, flowKey } from './record.js';

export interface FlowFilter {
  /** namespace/pod, or a pod name in any namespace: either end. */
  readonly pod?: string;
  /** Either end in this namespace. */
  readonly namespace?: string;
  readonly verdict?: FlowVerdict;
  /** Records that ended (or, still open, started) at or after this epoch ms. */
  readonly since?: number;
}

function podMatches(query: string, e: FlowRecord['src']): boolean {
  if (e.pod === undefined) return false;
  return query.includes('/') ? `${e.namespace ?? ''}/${e.pod}` === query : e.pod === query;
}

export function flowMatches(f: FlowRecord, q: FlowFilter): boolean {
  if (q.verdict !== undefined && f.verdict !== q.verdict) return false;
  if (q.pod !== undefined && !podMatches(q.pod, f.src) && !podMatches(q.pod, f.dst)) return false;
  if (q.namespace !== undefined && f.src.namespace !== q.namespace && f.dst.namespace !== q.namespace) return false;
  if (q.since !== undefined && Date.parse(f.end ?? f.start) < q.since) return false;
  return true;
}

/** Two records of one connection start within this of each other (the nodes' clocks, event delivery). */
const SAME_START_MS = 2000;

/**
 * One record per connection, oldest first. Records of one connection from several nodes become
 * one: the larger counters, the earliest start, the latest end, a drop over a forward (the node
 * that dropped it knows why), and every node's name.
 */
export function mergeFlows(lists: readonly (readonly FlowRecord[])[]): FlowRecord[] {
  const all = lists.flat().map((r) => ({ r, t: Date.parse(r.start) })).sort((a, b) => a.t - b.t);
  /** Per connection key, the records kept so far: their place in `out` and start time. */
  const byKey = new Map<string, Array<{ at: number; t: number }>>();
  const out: FlowRecord[] = [];
  for (const { r, t } of all) {
    const key = flowKey(r);
    const kept = byKey.get(key) ?? [];
    const same = kept.find((k) => Math.abs(k.t - t) <= SAME_START_MS && !(out[k.at]?.node.split(',').includes(r.node) ?? true));
    if (!same) {
      kept.push({ at: out.length, t });
      byKey.set(key, kept);
      out.push(r);
      continue;
    }
    const m = out[same.at] as FlowRecord;
    out[same.at] = {
      ...m,
      src: { ...r.src, ...m.src }, dst: { ...r.dst, ...m.dst },
      bytes: Math.max(m.bytes, r.bytes), packets: Math.max(m.packets, r.packets),
      ...(r.verdict === 'dropped' && m.verdict !== 'dropped' ? { verdict: 'dropped' as const, ...(r.policy !== undefined && { policy: r.policy }) } : {}),
      ...(r.end !== undefined && (m.end === undefined || r.end > m.end) ? { end: r.end } : {}),
      node: `${m.node},${r.node}`,
    };
  }
  return out;
}

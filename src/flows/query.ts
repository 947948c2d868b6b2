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
  const all = lists.flat().sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  const open = new Map<string, FlowRecord[]>();
  const out: FlowRecord[] = [];
  for (const r of all) {
    const key = flowKey(r);
    const same = (open.get(key) ?? []).find((m) => Math.abs(Date.parse(m.start) - Date.parse(r.start)) <= SAME_START_MS && !m.node.split(',').includes(r.node));
    if (!same) {
      out.push(r);
      open.set(key, [...(open.get(key) ?? []), r]);
      continue;
    }
    const merged: FlowRecord = {
      ...same,
      src: { ...r.src, ...same.src }, dst: { ...r.dst, ...same.dst },
      bytes: Math.max(same.bytes, r.bytes), packets: Math.max(same.packets, r.packets),
      ...(r.verdict === 'dropped' && same.verdict !== 'dropped' ? { verdict: 'dropped' as const, ...(r.policy !== undefined && { policy: r.policy }) } : {}),
      ...(r.end !== undefined && (same.end === undefined || r.end > same.end) ? { end: r.end } : {}),
      node: `${same.node},${r.node}`,
    };
    out[out.indexOf(same)] = merged;
    open.set(key, (open.get(key) ?? []).map((m) => (m === same ? merged : m)));
  }
  return out;
}

// Policy verdict counters: the nftables counters of `inet weft-policy` read back and summed per
// policy and per endpoint, kept monotonic across the enforcer's table changes.
//
// Where they come from (see compile.ts): every rule that allows carries a counter and names its
// policy; the default deny of a chain counts on its drop rules for every policy isolating the
// chain's endpoints; per endpoint, each element of the address maps counts the packets its chain
// judged (`seen`) and each element of the deny sets the packets it dropped, so allowed = seen −
// denied. Chains are shared by endpoints with the same policies, which is why per-endpoint counts
// live in the (per-address) elements and per-policy ones in the (shared) rules. A packet that
// rules of two policies would allow counts for the first in the chain (namespace/name order); a
// drop counts for every policy isolating the endpoint, so per-policy denied counts do not add up
// to the packets dropped.
//
// What resets them: a whole-table replace (new chains) zeroes every counter, and an element
// deleted and added again (an endpoint moving to another chain) starts from zero. The kernel's
// numbers are therefore read as *sources* (one per rule or element, by a stable id), and a
// source that vanished, went backwards or changed meaning has its last value moved into
// `settled`; the enforcer reads once more right before a change that would reset sources of
// endpoints and policies that stay, and settles everything after a replace. Exported totals are
// settled + what the kernel holds now. Counts of policies and pods that no longer exist are
// dropped, so series go with their policy or pod.
import type { CounterLayout } from './compile.js';
import type { DenyDirection } from './deny-log.js';

export interface PacketBytes {
  packets: number;
  bytes: number;
}

export type Verdict = 'allowed' | 'denied';

export interface PolicyCounter {
  /** "ns/name" */
  readonly policy: string;
  readonly direction: DenyDirection;
  readonly verdict: Verdict;
  readonly packets: number;
  readonly bytes: number;
}

export interface EndpointCounter {
  readonly namespace: string;
  readonly pod: string;
  readonly direction: DenyDirection;
  readonly verdict: Verdict;
  readonly packets: number;
  readonly bytes: number;
}

/** weftd's JSON document of this host's verdict counters (weftctl policy list reads it). */
export const POLICY_COUNTERS_PATH = '/policy/counters';

/** GET /policy/counters on weftd: this host's counts. */
export interface PolicyCountersDoc {
  readonly node: string;
  /** When the kernel's counters were read (ISO time). */
  readonly at: string;
  /** Only packets policy chains judge: a connection's first one, and every denied one. */
  readonly policies: readonly PolicyCounter[];
  readonly endpoints: readonly EndpointCounter[];
}

/** One counter in the kernel and the totals it adds to. */
interface Source {
  readonly keys: readonly string[];
  readonly packets: number;
  readonly bytes: number;
}

// Keys of the totals: P<tab>ns/name<tab>direction<tab>verdict, E<tab>ns/pod<tab>direction<tab>seen|denied.
const policyKey = (policy: string, dir: DenyDirection, verdict: Verdict) => `P\t${policy}\t${dir}\t${verdict}`;
const endpointKey = (pod: string, dir: DenyDirection, counts: 'seen' | 'denied') => `E\t${pod}\t${dir}\t${counts}`;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function counterOf(v: unknown): PacketBytes | undefined {
  if (!isRecord(v) || typeof v.packets !== 'number' || typeof v.bytes !== 'number') return undefined;
  return { packets: v.packets, bytes: v.bytes };
}

/**
 * The counters of an `nft -j list table inet weft-policy` listing, as sources attributed by the
 * layout the table was compiled with. Rules whose comment is not the one the layout expects at
 * that place (a table someone edited, a listing of another compile) are left out.
 */
export function readSources(items: readonly unknown[], layout: CounterLayout): Map<string, Source> {
  const out = new Map<string, Source>();
  const position = new Map<string, number>();
  for (const item of items) {
    if (!isRecord(item)) continue;
    if (isRecord(item.rule)) {
      const r = item.rule;
      if (typeof r.chain !== 'string') continue;
      const i = position.get(r.chain) ?? 0;
      position.set(r.chain, i + 1);
      const meaning = layout.rules.get(r.chain)?.[i];
      if (!meaning || r.comment !== meaning.comment || !Array.isArray(r.expr)) continue;
      const c = r.expr.map((e) => (isRecord(e) ? counterOf(e.counter) : undefined)).find((x) => x !== undefined);
      if (!c) continue;
      out.set(`rule\t${r.chain}\t${i}`, { keys: meaning.policies.map((p) => policyKey(p, meaning.direction, meaning.verdict)), ...c });
      continue;
    }
    const s = isRecord(item.map) ? item.map : isRecord(item.set) ? item.set : undefined;
    if (!s || typeof s.name !== 'string' || !Array.isArray(s.elem)) continue;
    const meaning = layout.elementSets.get(s.name);
    if (!meaning) continue;
    for (const el of s.elem) {
      // A set lists {elem:{val,counter}}; a map lists [{elem:{val,counter}}, verdict].
      const [head, value] = Array.isArray(el) ? [el[0], el[1]] : [el, undefined];
      const e = isRecord(head) && isRecord(head.elem) ? head.elem : undefined;
      const c = counterOf(e?.counter);
      if (!e || typeof e.val !== 'string' || !c) continue;
      const pod = layout.addresses.get(e.val);
      if (pod === undefined) continue;
      // The verdict is part of a map element's identity: moved to another chain, it starts anew.
      const target = isRecord(value) && isRecord(value.jump) && typeof value.jump.target === 'string' ? value.jump.target : '';
      out.set(`elem\t${s.name}\t${e.val}\t${target}`, { keys: [endpointKey(pod, meaning.direction, meaning.counts)], ...c });
    }
  }
  return out;
}

const sameKeys = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((k, i) => k === b[i]);

/** Monotonic totals over the kernel's resettable counters. */
export class VerdictCounters {
  private readonly settled = new Map<string, PacketBytes>();
  private live = new Map<string, Source>();

  private settle(s: Source): void {
    for (const k of s.keys) {
      const t = this.settled.get(k);
      if (t) { t.packets += s.packets; t.bytes += s.bytes; } else this.settled.set(k, { packets: s.packets, bytes: s.bytes });
    }
  }

  /** Takes a reading of the kernel's counters (readSources of a listing). */
  observe(sources: ReadonlyMap<string, Source>): void {
    for (const [id, prev] of this.live) {
      const now = sources.get(id);
      // Gone, restarted, or now counting for something else: what it had counted stays counted.
      if (!now || now.packets < prev.packets || now.bytes < prev.bytes || !sameKeys(now.keys, prev.keys)) this.settle(prev);
    }
    this.live = new Map(sources);
  }

  /** After a whole-table replace: every counter in the kernel starts from zero. */
  settleAll(): void {
    for (const s of this.live.values()) this.settle(s);
    this.live.clear();
  }

  /** Forgets everything (the table is gone, and with it every policy's series). */
  clear(): void {
    this.settled.clear();
    this.live.clear();
  }

  /** Drops the totals of policies and pods the layout no longer knows. */
  prune(layout: CounterLayout): void {
    for (const k of this.settled.keys()) {
      const [kind, name] = k.split('\t');
      if (name === undefined || (kind === 'P' ? !layout.policies.has(name) : !layout.pods.has(name))) this.settled.delete(k);
    }
  }

  /** Totals per policy and per endpoint: every series the layout has, at zero too. */
  totals(layout: CounterLayout): { policies: PolicyCounter[]; endpoints: EndpointCounter[] } {
    const sum = new Map<string, PacketBytes>();
    const add = (k: string, v: PacketBytes) => {
      const t = sum.get(k);
      if (t) { t.packets += v.packets; t.bytes += v.bytes; } else sum.set(k, { packets: v.packets, bytes: v.bytes });
    };
    for (const [k, v] of this.settled) add(k, v);
    for (const s of this.live.values()) for (const k of s.keys) add(k, s);
    const zero = { packets: 0, bytes: 0 };
    const policies: PolicyCounter[] = [];
    const endpoints: EndpointCounter[] = [];
    const policyRows = new Set<string>();
    const podRows = new Set<string>();
    for (const dir of ['ingress', 'egress'] as const) {
      for (const p of layout.isolating.get(dir) ?? []) policyRows.add(`${p}\t${dir}`);
      for (const p of layout.isolated.get(dir) ?? []) podRows.add(`${p}\t${dir}`);
    }
    for (const k of sum.keys()) {
      const [kind, name, dir] = k.split('\t');
      if (kind === 'P' && layout.policies.has(name ?? '')) policyRows.add(`${name}\t${dir}`);
      if (kind === 'E' && layout.pods.has(name ?? '')) podRows.add(`${name}\t${dir}`);
    }
    for (const row of [...policyRows].sort()) {
      const [policy = '', dir = 'ingress'] = row.split('\t') as [string, DenyDirection];
      for (const verdict of ['allowed', 'denied'] as const) policies.push({ policy, direction: dir, verdict, ...(sum.get(policyKey(policy, dir, verdict)) ?? zero) });
    }
    for (const row of [...podRows].sort()) {
      const [pod = '', dir = 'ingress'] = row.split('\t') as [string, DenyDirection];
      const seen = sum.get(endpointKey(pod, dir, 'seen')) ?? zero;
      const denied = sum.get(endpointKey(pod, dir, 'denied')) ?? zero;
      const slash = pod.indexOf('/');
      const id = { namespace: pod.slice(0, slash), pod: pod.slice(slash + 1), direction: dir };
      // Seen and denied are read in one listing, so seen ≥ denied but for a reset between them.
      endpoints.push({ ...id, verdict: 'allowed', packets: Math.max(0, seen.packets - denied.packets), bytes: Math.max(0, seen.bytes - denied.bytes) });
      endpoints.push({ ...id, verdict: 'denied', ...denied });
    }
    return { policies, endpoints };
  }
}

// The verdict counters behind `weftctl policy list`'s ALLOWED and DENIED columns: each weftd's
// /policy/counters (its own host's counts), summed over the weftds that answer. On a node that is
// the local weftd; in a lab, every host's weftd through its API socket.
import { z } from 'zod';
import { mapLimit } from '../map-limit.js';
import { CniCode, WeftError } from '../errors.js';
import { POLICY_COUNTERS_PATH } from '../policy/counters.js';
import { weftdGet } from './weftd-http.js';

/** One weftd to ask: a name for messages and its address as weftdGet takes it. */
export interface CounterTarget {
  readonly label: string;
  readonly addr: string;
}

const countersDoc = z.object({
  node: z.string(),
  at: z.string(),
  policies: z.array(z.object({
    policy: z.string(), direction: z.enum(['ingress', 'egress']), verdict: z.enum(['allowed', 'denied']), packets: z.number(), bytes: z.number(),
  }).passthrough()),
}).passthrough();

export interface VerdictTotals {
  allowedPackets: number;
  deniedPackets: number;
  allowedBytes: number;
  deniedBytes: number;
}

export interface GatheredCounters {
  /** Per policy ("ns/name"), both directions together, over every weftd that answered. */
  readonly byPolicy: ReadonlyMap<string, VerdictTotals>;
  readonly answered: readonly string[];
  readonly failed: readonly { readonly label: string; readonly reason: string }[];
}

async function fetchCounters(t: CounterTarget, timeoutMs: number): Promise<z.infer<typeof countersDoc>> {
  const r = await weftdGet(t.addr, POLICY_COUNTERS_PATH, timeoutMs);
  // An older weftd, or one whose policy service has not started, has no such document.
  if (r.status === 404) throw new WeftError(CniCode.Internal, `weftd at ${t.addr} serves no ${POLICY_COUNTERS_PATH} (still starting, or an older weftd)`);
  if (r.status !== 200) throw new WeftError(CniCode.Internal, `weftd at ${t.addr} answered ${r.status} for ${POLICY_COUNTERS_PATH}: ${r.body.trim()}`);
  return countersDoc.parse(JSON.parse(r.body));
}

export async function gatherCounters(targets: readonly CounterTarget[], timeoutMs = 3000): Promise<GatheredCounters> {
  const byPolicy = new Map<string, VerdictTotals>();
  const answered: string[] = [];
  const failed: { label: string; reason: string }[] = [];
  const docs = await mapLimit(targets, 8, async (t) => {
    try {
      return { t, doc: await fetchCounters(t, timeoutMs) };
    } catch (err) {
      return { t, error: WeftError.wrap(err).message };
    }
  });
  for (const d of docs) {
    if (!('doc' in d) || d.doc === undefined) { failed.push({ label: d.t.label, reason: d.error ?? 'no answer' }); continue; }
    answered.push(d.t.label);
    for (const c of d.doc.policies) {
      let t = byPolicy.get(c.policy);
      if (!t) { t = { allowedPackets: 0, deniedPackets: 0, allowedBytes: 0, deniedBytes: 0 }; byPolicy.set(c.policy, t); }
      if (c.verdict === 'allowed') { t.allowedPackets += c.packets; t.allowedBytes += c.bytes; } else { t.deniedPackets += c.packets; t.deniedBytes += c.bytes; }
    }
  }
  return { byPolicy, answered, failed };
}

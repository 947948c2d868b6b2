// Asking each host's weftd what it has programmed, for the web view. weftd answers on its health
// address or its --api-socket (/peers, /readyz, and /bgp/status on the bgp backend); a weftd that
// does not answer is 'down' — nothing keeps its side of the links right. Which weftds can be asked
// depends on where the view runs: a lab names a socket per host, a node its own weftd, and
// --agent-port every lease's public IP.
import { z } from 'zod';
import { weftdGet } from '../cli/weftd-http.js';
import { mapLimit } from '../map-limit.js';
import type { AgentAnswer } from './build.js';
import type { UiBgpSession } from './model.js';

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
  programmed: z.array(z.string()),
  skipped: z.array(z.object({ subnet: z.string(), reason: z.string() })),
  lastReconcile: z.string().nullable(),
  reconcileError: z.string().optional(),
}).passthrough();

const readyzDoc = z.object({
  phase: z.string().optional(),
  lease: z.object({ status: z.string().optional(), reason: z.string().optional() }).passthrough().optional(),
  store: z.object({ status: z.string().optional(), reason: z.string().optional() }).passthrough().optional(),
  problems: z.array(z.string()).optional(),
  reconcileError: z.string().optional(),
}).passthrough();

const bgpDoc = z.object({
  asn: z.number(),
  sessions: z.array(z.object({
    peer: z.string(), asn: z.number(), state: z.string(), uptimeSeconds: z.number(), prefixesReceived: z.number(), prefixesSent: z.number(),
  }).passthrough()),
}).passthrough();

async function getJson<T>(addr: string, path: string, schema: z.ZodType<T, z.ZodTypeDef, unknown>, timeoutMs: number): Promise<T> {
  const r = await weftdGet(addr, path, timeoutMs);
  // /readyz answers 503 with its document while weftd is not ready.
  if (r.status !== 200 && !(path === '/readyz' && r.status === 503)) throw new Error(`${path} answered HTTP ${r.status}`);
  return schema.parse(JSON.parse(r.body));
}

/** Why weftd is not ready, in a line: the first of its own reasons. */
function notReadyReason(r: z.infer<typeof readyzDoc>): string {
  if (r.lease?.status !== undefined && r.lease.status !== 'ready') return `lease ${r.lease.status}${r.lease.reason ? `: ${r.lease.reason}` : ''}`;
  if (r.store?.status === 'unreachable') return `store unreachable${r.store.reason ? `: ${r.store.reason}` : ''}`;
  if (r.reconcileError !== undefined) return `last pass failed: ${r.reconcileError}`;
  return `phase ${r.phase ?? '?'}`;
}

export interface AskedAgent {
  readonly target: AgentTarget;
  /** The lease subnet the answer (or the target) names; undefined when neither does. */
  readonly subnet: string | undefined;
  readonly answer: AgentAnswer;
}

export async function askAgent(target: AgentTarget, timeoutMs = 1000): Promise<AskedAgent> {
  try {
    const [peers, readyz] = await Promise.all([
      getJson(target.addr, '/peers', peersDoc, timeoutMs),
      getJson(target.addr, '/readyz', readyzDoc, timeoutMs),
    ]);
    let bgp: { asn: number; sessions: UiBgpSession[] } | undefined;
    if (peers.backend === 'bgp') {
      const doc = await getJson(target.addr, '/bgp/status', bgpDoc, timeoutMs).catch(() => undefined);
      if (doc) {
        bgp = { asn: doc.asn, sessions: doc.sessions.map((s) => ({ peer: s.peer, asn: s.asn, state: s.state, uptimeSeconds: s.uptimeSeconds, prefixesReceived: s.prefixesReceived, prefixesSent: s.prefixesSent })) };
      }
    }
    const detail = peers.ready
      // No pass time here: it moves every repair pass, and each move would be a new model.
      ? `ready, ${peers.programmed.length} peers programmed`
      : `not ready: ${notReadyReason(readyz)}`;
    return {
      target, subnet: peers.subnet ?? target.subnet,
      answer: {
        type: 'answered', node: peers.node, ready: peers.ready, detail, programmed: peers.programmed,
        // Peers a backend skipped are among its problems already (and show as missing links).
        problems: readyz.problems ?? [],
        ...(bgp && { bgp }),
      },
    };
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { target, subnet: target.subnet, answer: { type: 'down', detail: `weftd at ${target.addr} does not answer: ${why}` } };
  }
}

/** Asks every target, a bounded number at once (a cluster of a thousand hosts behind --agent-port). */
export function askAgents(targets: readonly AgentTarget[], timeoutMs = 1000, parallel = 32): Promise<AskedAgent[]> {
  return mapLimit(targets, parallel, (t) => askAgent(t, timeoutMs));
}

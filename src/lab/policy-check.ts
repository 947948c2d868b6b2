// A kube lab's NetworkPolicy step (the demo's kube row): one policy applied with kubectl, as an
// operator would — the pods of host h1 take connections only from the pods of host h0 — then
// every container probes every other one (ICMP and TCP to the echo port), and each answer is held
// against what the policy evaluator says the policy allows. weftd learns the policy from the API
// server, so this shows the whole kube path: kubectl → API → weftd's watch → nftables → packets.
// In a dual-stack lab every pair is probed over both families (the policy names no ipBlock, so
// its pod selectors match a pod's addresses of either family).
import { CniCode, WeftError } from '../errors.js';
import { mapLimit } from '../map-limit.js';
import { parseIP } from '../net/ip.js';
import { allowed, policySelects } from '../policy/evaluate.js';
import { type Endpoint, type PolicyWorld, parsePolicy } from '../policy/model.js';
import { LAB_SCRIPT_DIR, execIn } from './exec.js';
import { parseLabName } from './naming.js';
import { LAB_POD_NAMESPACE, labKubectl, podLabels } from './kube.js';
import { ECHO_PORT } from './lab.js';
import type { ProbeLine } from './probe.js';
import { LabDirs, type LabRecord } from './state.js';

export const DEMO_POLICY_NAME = 'h1-only-from-h0';

/** The demo's policy: ingress to the pods of h1 only from the pods of h0 (any port, any protocol). */
export function demoPolicy(): Record<string, unknown> {
  return {
    apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy',
    metadata: { name: DEMO_POLICY_NAME, namespace: LAB_POD_NAMESPACE },
    spec: {
      podSelector: { matchLabels: { host: 'h1' } },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ podSelector: { matchLabels: { host: 'h0' } } }] }],
    },
  };
}

export interface PolicyPair {
  readonly from: string;
  readonly to: string;
  readonly family: 4 | 6;
  /** The evaluator's verdicts (the demo policy names no ports: the same for both). */
  readonly expected: { readonly icmp: boolean; readonly tcp: boolean };
  /** What the probes saw. */
  readonly observed: { readonly icmp: boolean; readonly tcp: boolean };
}

export interface PolicyCheckReport {
  /** namespace/name of the applied policy. */
  readonly policy: string;
  readonly pairs: readonly PolicyPair[];
  /** Container pairs the policy blocks entirely, and the others, per the evaluator. */
  readonly expectedBlocked: number;
  readonly expectedAllowed: number;
  /** Pairs whose ICMP or TCP probe came out otherwise than the evaluator said. */
  readonly wrong: number;
  readonly ok: boolean;
  readonly durationMs: number;
}

/** How long weftd may take to enforce, on a loaded machine; it takes milliseconds. */
const ENFORCE_DEADLINE_MS = 30_000;
/** A blocked probe waits this long for the answer that does not come. */
const PROBE_TIMEOUT_MS = 1000;

/** The lab's containers as the policy world sees them: Pods in namespace lab with the lab's labels. */
function labWorld(rec: LabRecord, policy: Record<string, unknown>): PolicyWorld {
  const endpoints: Endpoint[] = rec.containers.map((c) => ({
    namespace: LAB_POD_NAMESPACE, pod: c.name, labels: podLabels(c.name, c.host), ips: addressesOf(c).map(parseIP), host: `h${c.host}`, ifname: 'eth0',
  }));
  return { endpoints, namespaces: [{ name: LAB_POD_NAMESPACE, labels: {} }], policies: [parsePolicy(policy)] };
}

function addressesOf(c: { readonly ip?: string | undefined; readonly ip6?: string | undefined }): string[] {
  return [c.ip, c.ip6].filter((a): a is string => a !== undefined);
}

async function policyTable(ns: string): Promise<string> {
  const r = await execIn(ns, ['nft', 'list', 'table', 'inet', 'weft-policy'], { timeoutMs: 5000 });
  return r.code === 0 ? r.stdout : '';
}

async function probeAll(rec: LabRecord): Promise<Map<string, ProbeLine[]>> {
  const containers = rec.containers;
  const lines = await mapLimit(containers, containers.length, async (c) => {
    const targets = containers.filter((t) => t.name !== c.name).flatMap((t) => addressesOf(t).map((ip) => ({ name: t.name, ip })));
    const r = await execIn(c.ns, [process.execPath, `${LAB_SCRIPT_DIR}probe.js`, JSON.stringify({ targets, port: ECHO_PORT, count: 1, timeoutMs: PROBE_TIMEOUT_MS })], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new WeftError(CniCode.Internal, `probe from ${c.name} failed: ${r.stderr.trim()}`);
    return [c.name, JSON.parse(r.stdout) as ProbeLine[]] as const;
  });
  return new Map(lines);
}

/**
 * Applies the demo policy with kubectl, waits until the hosts whose pods it selects hold it, and
 * probes until every pair answers as the evaluator says (or the deadline passes: the last round
 * is the report). The policy stays; the lab's down removes it with the rest.
 */
export async function labPolicyCheck(rec: LabRecord): Promise<PolicyCheckReport> {
  const t0 = Date.now();
  const manifest = demoPolicy();
  const world = labWorld(rec, manifest);
  const policy = world.policies[0];
  if (!policy) throw new WeftError(CniCode.Internal, 'demo policy did not parse');
  const id = `${policy.namespace}/${policy.name}`;
  const applied = await labKubectl(rec, LabDirs.of(parseLabName(rec.name))).kubectl(['apply', '-f', '-'], { input: JSON.stringify(manifest), allowFailure: true });
  if (applied.code !== 0) throw new WeftError(CniCode.Store, `kubectl apply ${id}: ${applied.stderr.trim()}`);

  const deadline = Date.now() + ENFORCE_DEADLINE_MS;
  const enforcing = new Set(world.endpoints.filter((e) => policySelects(policy, e)).map((e) => e.host));
  for (const h of rec.hostList.filter((x) => enforcing.has(`h${x.index}`))) {
    while (!(await policyTable(h.ns)).includes(id)) {
      if (Date.now() > deadline) throw new WeftError(CniCode.Timeout, `h${h.index} did not enforce ${id} within ${ENFORCE_DEADLINE_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const addrs = new Map(rec.containers.map((c) => [c.name, addressesOf(c).map(parseIP)]));
  for (;;) {
    const seen = await probeAll(rec);
    const pairs: PolicyPair[] = [];
    for (const [from, lines] of seen) {
      for (const l of lines) {
        const dst = parseIP(l.ip);
        const src = addrs.get(from)?.find((a) => a.family === dst.family);
        if (!src) throw new WeftError(CniCode.Internal, `${from} has no IPv${dst.family} address to probe ${l.ip} from`);
        const conn = { src, dst, port: ECHO_PORT };
        pairs.push({
          from, to: l.target, family: dst.family,
          expected: { icmp: allowed({ ...conn, protocol: 'ICMP' }, world), tcp: allowed({ ...conn, protocol: 'TCP' }, world) },
          observed: { icmp: l.icmp.ok, tcp: l.tcp.ok },
        });
      }
    }
    const wrong = pairs.filter((p) => p.observed.icmp !== p.expected.icmp || p.observed.tcp !== p.expected.tcp).length;
    if (wrong === 0 || Date.now() > deadline) {
      const expectedBlocked = pairs.filter((p) => !p.expected.icmp && !p.expected.tcp).length;
      return {
        policy: id, pairs, expectedBlocked, expectedAllowed: pairs.length - expectedBlocked, wrong, ok: wrong === 0, durationMs: Date.now() - t0,
      };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

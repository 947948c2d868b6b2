// "Enforced" as the policy benchmarks read it from each host's kernel (bench policy, bench kube):
// `nft monitor` timestamps every committed transaction, and after each commit the `inet
// weft-policy` table is listed (`nft -j list`); a change is enforced on a host at the commit
// after which the listing first shows exactly the set element and chain rule counts the compiled
// policy predicts (expected shapes computed before the clock starts). A commit's time is when its
// first notification arrived.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type Cidr } from '../../src/net/ip.js';
import { compilePolicies, expectedShape, type TableShape } from '../../src/policy/compile.js';
import { shapeOfListing } from '../../src/policy/enforcer.js';
import { type NetworkPolicy, type PolicyWorld, parsePolicy } from '../../src/policy/model.js';
import { loadPolicyWorld, policyKey } from '../../src/policy/store.js';
import type { KeyValue, KeyValueStore } from '../../src/store/kv.js';
import { cleanEnv, inNs } from './process.js';

/**
 * Commit times of the nft transactions in one namespace, from `nft monitor`: the kernel sends a
 * transaction's notifications once its new generation is live, and ends them with a "# new
 * generation" line. The time kept is that of the transaction's first line: the monitor takes a
 * while to print thousands of element lines, and the last one would add that delay to the result.
 */
export class CommitWatch {
  readonly commits: number[] = [];
  private waiters: (() => void)[] = [];
  private batchStart: number | undefined;

  constructor(readonly proc: ChildProcess) {
    if (!proc.stdout) throw new Error('nft monitor without a stdout pipe');
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const now = performance.now();
      this.batchStart ??= now;
      if (!line.startsWith('# new generation')) return;
      this.commits.push(this.batchStart);
      this.batchStart = undefined;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Resolves at the next commit, or after timeoutMs. */
  next(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.waiters.push(() => { clearTimeout(t); resolve(); });
    });
  }
}

/** The first set or chain whose count differs, for a failure message. */
export function shapeDifference(want: string | null, got: string | null): string {
  if (want === null || got === null) return `kernel ${got === null ? 'has no table' : 'has a table'}, wanted ${want === null ? 'none' : 'one'}`;
  const w = JSON.parse(want) as TableShape;
  const g = JSON.parse(got) as TableShape;
  const out: string[] = [];
  for (const kind of ['sets', 'chains'] as const) {
    for (const name of new Set([...Object.keys(w[kind]), ...Object.keys(g[kind])])) {
      if (w[kind][name] !== g[kind][name]) out.push(`${name}: kernel ${g[kind][name] ?? 'absent'}, want ${w[kind][name] ?? 'absent'}`);
    }
  }
  return out.slice(0, 8).join('; ');
}

export function sortShape(s: TableShape): unknown {
  const sort = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { sets: sort(s.sets), chains: sort(s.chains) };
}

/** Policy objects as stored, by store key (what `weftctl policy apply` writes). */
export function storedPolicies(objs: unknown[]): Map<string, { policy: NetworkPolicy; json: string }> {
  const out = new Map<string, { policy: NetworkPolicy; json: string }>();
  for (const o of objs) {
    const policy = parsePolicy(o);
    out.set(policyKey(policy.namespace, policy.name), { policy, json: JSON.stringify(o) });
  }
  return out;
}

/** `world` with `objs` added (replacing policies of the same namespace/name). */
export function withPolicies(world: PolicyWorld, objs: unknown[]): PolicyWorld {
  const byKey = new Map(world.policies.map((p) => [policyKey(p.namespace, p.name), p]));
  for (const [key, { policy }] of storedPolicies(objs)) byKey.set(key, policy);
  return { ...world, policies: [...byKey.values()] };
}

/**
 * n NetworkPolicy objects over `namespaces` namespaces ns0…: a mix of ingress by namespace AND
 * pod selector plus same-namespace peers, numeric ports and an endPort range; every fourth an
 * egress policy. Pods are labelled app=a(i%7), tier=x(i%5); namespaces team=t(i%3).
 */
export function policyObjects(n: number, namespaces: number, first = 0): unknown[] {
  return Array.from({ length: n }, (_, k) => {
    const i = first + k;
    const ns = `ns${i % namespaces}`;
    const app = `a${i % 7}`;
    const spec = i % 4 === 3
      ? { podSelector: { matchLabels: { app } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: { matchLabels: { team: `t${i % 3}` } } }], ports: [{ protocol: 'UDP', port: 53 }] }] }
      : { podSelector: { matchLabels: { app } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: `t${i % 3}` } }, podSelector: { matchLabels: { tier: `x${i % 5}` } } }, { podSelector: {} }], ports: [{ protocol: 'TCP', port: 8000 + (i % 50) }, { protocol: 'TCP', port: 9000, endPort: 9100 }] }] };
    return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: ns, name: `p${i}` }, spec };
  });
}

/** A host's policy target: the node name weftd runs under (endpoints' `host`) and its pod subnet. */
export interface PolicyTarget {
  readonly name: string;
  readonly subnet: Cidr;
}

/**
 * One `nft monitor` per host namespace and the wait for a wanted table shape on all of them. The
 * monitors start at once (before weftd, so they see every commit); the caller owns their
 * lifetime through `procs` (killed in its cleanup).
 */
export class EnforcementProbe {
  readonly monitors: CommitWatch[];

  constructor(private readonly namespaces: readonly string[], procs: ChildProcess[], private readonly timeoutMs: number, private readonly diagnose: (h: number) => string = () => '') {
    this.monitors = namespaces.map((ns) => {
      const m = spawn('ip', ['netns', 'exec', ns, 'nft', 'monitor'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'ignore'] });
      procs.push(m);
      return new CommitWatch(m);
    });
  }

  /** Each host's expected table shape for `world` (null: no table, as with no policy at all). */
  static wantFor(w: PolicyWorld, targets: readonly PolicyTarget[]): (string | null)[] {
    return targets.map((t) => (w.policies.length === 0 ? null
      : JSON.stringify(sortShape(expectedShape(compilePolicies(w, t.name, { subnets: [t.subnet], extraKnown: [] }))))));
  }

  async kernelShape(h: number): Promise<string | null> {
    const r = await inNs(this.namespaces[h]!, ['nft', '-j', 'list', 'table', 'inet', 'weft-policy']);
    return r.status === 0 ? JSON.stringify(sortShape(shapeOfListing((JSON.parse(r.stdout) as { nftables: unknown[] }).nftables))) : null;
  }

  /**
   * Per host, ms from `start` to the commit after which the kernel's table first listed
   * exactly the wanted shape. The table is read after every commit; a listing counts only if
   * no further commit landed while it ran, so the time is never earlier than the truth.
   */
  async waitEnforced(want: (string | null)[], start: number): Promise<number[]> {
    const at: (number | undefined)[] = want.map(() => undefined);
    const checked = want.map(() => -1);
    for (;;) {
      await Promise.all(want.map(async (w, h) => {
        const mon = this.monitors[h]!;
        if (at[h] !== undefined || checked[h] === mon.commits.length) return;
        const seen = mon.commits.length;
        checked[h] = seen;
        const got = await this.kernelShape(h);
        if (got === w && mon.commits.length === seen) at[h] = Math.max(0, (mon.commits[seen - 1] ?? start) - start);
      }));
      if (at.every((x) => x !== undefined)) return at as number[];
      if (performance.now() - start > this.timeoutMs) {
        const late = at.flatMap((x, h) => (x === undefined ? [h] : []));
        const detail = await Promise.all(late.map(async (h) => `h${h}: ${shapeDifference(want[h] ?? null, await this.kernelShape(h))}\n  weftd warnings:\n${this.diagnose(h)}`));
        throw new Error(`policies not enforced within ${this.timeoutMs} ms on ${late.map((h) => `h${h}`).join(', ')}\n${detail.join('\n')}`);
      }
      await Promise.race(this.monitors.filter((_, h) => at[h] === undefined).map((m) => m.next(250)));
    }
  }
}

/**
 * The policy world from raw store entries (a dump of policies/, namespaces/, endpoints/ taken
 * where the store is reachable), read by the same loader weftctl and the tests use.
 */
export async function worldFromEntries(entries: readonly KeyValue[]): Promise<{ world: PolicyWorld; skipped: readonly { key: string; reason: string }[] }> {
  const sorted = [...entries].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const readOnly = async (): Promise<never> => { throw new Error('a dump is read-only'); };
  const kv: KeyValueStore = {
    where: 'dump',
    get: async (key) => sorted.find((e) => e.key === key)?.value,
    put: readOnly,
    delete: readOnly,
    list: async (prefix) => sorted.filter((e) => e.key.startsWith(prefix)),
    watch: () => { throw new Error('a dump cannot be watched'); },
    close: async () => {},
  };
  return loadPolicyWorld(kv);
}

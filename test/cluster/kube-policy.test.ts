// The NetworkPolicy examples of the Kubernetes documentation (restated in doc-policies.ts and
// written to files), `kubectl apply -f`-ed to a kube lab — 3 hosts, vxlan, weftd on the weft
// ServiceAccount reading NetworkPolicy, Namespace and Pod objects from a real kube-apiserver.
// For each example the policy world is read back from the API the way weftd reads it
// (KubeKeyValueStore + loadPolicyWorld), the evaluator computes the truth table of every ordered
// pod pair (TCP to the echo port and to the examples' port 6379, ICMP), of the pods towards
// addresses the examples' ipBlocks name (and just outside them), and of outside sources in and
// out of the ingress ipBlock towards every pod; the kernel's answers are polled until they equal
// it, then the example is deleted with kubectl and everything must be open again.
//
// Beyond the docs' examples: kubectl label on pods and namespaces under a policy, a pod created
// while a policy holds (isolated from its first packet) and deleted again, and a named port.
//
// The pods: the lab's six (namespace `lab`; labelled role=db on h1c0 and h2c1, role=frontend on
// h0c0 and h2c0 with kubectl label), myproject/mp0 on h0 (namespace labelled project=myproject)
// and other/ot0 on h1 (labelled role=frontend in an unlabelled namespace, so the example's
// podSelector, which means "in the policy's namespace", must not let it in).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LAB_POD_NAMESPACE } from '../../src/lab/kube.js';
import { writeDocPolicies } from './doc-policies.js';
import { inNs, killChildren } from '../netns/agent-harness.js';
import { type ProbeProto, type ProbeTarget, cell, probeFrom, serveIn } from '../netns/policy-traffic.js';
import { downQuietly, lab, labName, namespacesOf } from './lab-harness.js';
import { type KubeLab, type WorldAnswer, type WorldConn, addKubePod, createNamespace, deleteKubePod, kubeLab, kubectl, readWorld } from './kube-lab.js';

const DOCS = writeDocPolicies();
after(() => DOCS.remove());
const NS = LAB_POD_NAMESPACE;
/** What the probes wait for an answer; a blocked probe costs this much. */
const PROBE_TIMEOUT_MS = 1000;
/** Convergence deadline per table: weftd applies within milliseconds, this is for a loaded machine. */
const CONVERGE_MS = 60_000;

interface Check { readonly proto: ProbeProto; readonly port: number; readonly label: string }
const tcp = (port: number): Check => ({ proto: 'tcp', port, label: `tcp/${port}` });
const ICMP: Check = { proto: 'icmp', port: 0, label: 'icmp' };

/** Towards pods: the lab's echo port, the example's redis port, ping. */
const POD_CHECKS = [tcp(7), tcp(6379), ICMP];
/**
 * Addresses outside the cluster, held by the lab's outside namespace (reached through the hosts'
 * masquerade): inside the examples' egress ipBlock 10.0.0.0/24 with its port 5978 and the edges
 * of the endPort range 32000–32768, and one just outside the block.
 */
const EXT_DSTS = [
  { label: '10.0.0.5', ip: '10.0.0.5', checks: [tcp(5978), tcp(31999), tcp(32000), tcp(32768), tcp(32769), ICMP] },
  { label: '10.0.1.5', ip: '10.0.1.5', checks: [tcp(5978), tcp(32000)] },
];
const EXT_PORTS = [5978, 31999, 32000, 32768, 32769];
/** Sources outside the cluster, inside the ingress ipBlock 172.17.0.0/16 and in its except. */
const EXT_SRCS = ['172.17.0.5', '172.17.1.5'];

const ROLES: Array<[string, string, string]> = [[NS, 'h1c0', 'db'], [NS, 'h2c1', 'db'], [NS, 'h0c0', 'frontend'], [NS, 'h2c0', 'frontend'], ['other', 'ot0', 'frontend']];

interface Pod { readonly namespace: string; readonly name: string; readonly host: number; readonly netns: string; readonly ip: string }
interface Source { readonly label: string; readonly netns: string; readonly ip: string; readonly from?: string }
interface Dest { readonly label: string; readonly ip: string; readonly checks: readonly Check[] }

const name = labName('wkp');
const children: ChildProcess[] = [];
let kl: KubeLab | undefined;
const pods: Pod[] = [];

const K = (): KubeLab => {
  assert.ok(kl, 'lab is up');
  return kl;
};

function sources(): Source[] {
  const outside = K().rec.outside ?? '';
  return [
    ...pods.map((p) => ({ label: p.namespace === NS ? p.name : `${p.namespace}/${p.name}`, netns: p.netns, ip: p.ip })),
    ...EXT_SRCS.map((ip) => ({ label: `ext ${ip}`, netns: outside, ip, from: ip })),
  ];
}

function dests(): Dest[] {
  return [...pods.map((p) => ({ label: p.name, ip: p.ip, checks: POD_CHECKS })), ...EXT_DSTS];
}

/** Every (source, destination) pair the truth table holds: outside sources only reach pods. */
function plan(): Array<{ src: Source; dsts: Array<Dest | undefined> }> {
  const podIPs = new Set(pods.map((p) => p.ip));
  return sources().map((src) => ({
    src,
    dsts: dests().map((d) => (d.ip === src.ip || (src.from !== undefined && !podIPs.has(d.ip)) ? undefined : d)),
  }));
}

function conns(): WorldConn[] {
  return plan().flatMap(({ src, dsts }) => dsts.flatMap((d) => (d ? d.checks.map((c): WorldConn => ({
    src: src.ip, dst: d.ip, protocol: c.proto === 'icmp' ? 'ICMP' : 'TCP', port: c.port,
  })) : [])));
}

/** The kernel's answers, in conns() order. */
async function observe(): Promise<boolean[]> {
  const rows = await Promise.all(plan().map(({ src, dsts }) => {
    const targets = dsts.flatMap((d) => (d ? d.checks.map((c): ProbeTarget => ({ ip: d.ip, proto: c.proto, port: c.port, ...(src.from !== undefined && { from: src.from }) })) : []));
    return probeFrom(src.netns, targets, PROBE_TIMEOUT_MS);
  }));
  return rows.flatMap((r) => r.map((x) => x.ok));
}

/** Per source row, per destination, the cells of `bits` (conns() order). */
function cells(bits: readonly boolean[]): string[][] {
  let i = 0;
  return plan().map(({ dsts }) => dsts.map((d) => {
    if (!d) return '·';
    const c = cell(bits.slice(i, i + d.checks.length));
    i += d.checks.length;
    return c;
  }));
}

function render(title: string, expected: readonly boolean[], observed: readonly boolean[]): string {
  const exp = cells(expected);
  const obs = cells(observed);
  const ds = dests();
  const widths = ds.map((d) => Math.max(d.label.length, d.checks.length) + 1);
  const head = ds.map((d, j) => d.label.padEnd(widths[j] ?? 0)).join('');
  const lines = [
    `── ${title}`,
    `   cells: towards pods ${POD_CHECKS.map((c) => c.label).join(' ')}; towards ${EXT_DSTS.map((d) => `${d.label} ${d.checks.map((c) => c.label).join(' ')}`).join('; ')}  (+ open, . blocked)`,
    `${'from \\ to'.padEnd(16)}${head}│ ${head}`,
    `${''.padEnd(16)}${'expected (evaluator)'.padEnd(head.length)}│ observed (kernel)`,
  ];
  plan().forEach(({ src }, i) => {
    const e = (exp[i] ?? []).map((c, j) => c.padEnd(widths[j] ?? 0)).join('');
    const o = (obs[i] ?? []).map((c, j) => c.padEnd(widths[j] ?? 0)).join('');
    lines.push(`${src.label.padEnd(16)}${e}│ ${o}${e === o ? '' : '  ← differs'}`);
  });
  return lines.join('\n') + '\n';
}

function policyTable(hostNs: string): string {
  const r = inNs(hostNs, ['nft', 'list', 'table', 'inet', 'weft-policy']);
  return r.code === 0 ? r.stdout : '';
}

async function until(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = CONVERGE_MS, stepMs = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

/**
 * Waits until every host's policy table names exactly the policies selecting one of its
 * endpoints (cheap: no probe waits out a timeout before that), then probes until the kernel's
 * truth table equals the evaluator's; past the deadline the last difference fails the test.
 */
async function converge(title: string, world: WorldAnswer): Promise<void> {
  const lab = K();
  await until(`every host's weft-policy table to hold ${world.policies.map((p) => `${p.namespace}/${p.name}`).join(', ') || 'nothing'}`, () => lab.rec.hostList.every((h) => {
    const text = policyTable(h.ns);
    if (world.policies.length === 0) return text === '';
    return world.policies.every((p) => text.includes(`${p.namespace}/${p.name}`) === p.hosts.includes(`h${h.index}`));
  }));
  const deadline = Date.now() + CONVERGE_MS;
  let rounds = 0;
  for (;;) {
    rounds++;
    const observed = await observe();
    const same = observed.every((b, i) => b === world.allowed[i]);
    if (same || Date.now() > deadline) {
      const blocked = world.allowed.filter((b) => !b).length;
      process.stdout.write(render(`${title}: ${blocked} of ${world.allowed.length} probes blocked${rounds > 1 ? ` (kernel matched after ${rounds} rounds)` : ''}`, world.allowed, observed));
      assert.deepEqual(cells(observed), cells(world.allowed), `${title}: the kernel's truth table differs from the evaluator's`);
      return;
    }
    await sleep(300);
  }
}

/** The world from the API, once it holds exactly `names` (kubectl returns once they are stored). */
async function worldWith(names: readonly string[]): Promise<WorldAnswer> {
  const lab = K();
  const want = names.map((n) => `${NS}/${n}`).sort();
  let world = await readWorld(lab, conns());
  assert.deepEqual(world.skipped, [], 'every API object makes a policy record');
  assert.deepEqual(world.policies.map((p) => `${p.namespace}/${p.name}`).sort(), want, 'the API serves exactly the applied policies');
  assert.equal(world.endpoints.length, pods.length, 'every pod is an endpoint');
  return world;
}

const fixture = (file: string) => join(DOCS.dir, file);

/**
 * kubectl apply -f each example file (or a manifest on stdin), check the truth table, kubectl
 * delete -f, check everything is open again.
 */
async function example(title: string, what: readonly string[] | Record<string, unknown>, policyNames: readonly string[], during?: (world: WorldAnswer) => void | Promise<void>): Promise<void> {
  const lab = K();
  const input = Array.isArray(what) ? undefined : JSON.stringify(what);
  const fileArgs = Array.isArray(what) ? what.flatMap((f: string) => ['-f', fixture(f)]) : ['-f', '-'];
  const applied = await kubectl(lab, ['apply', '-n', NS, ...fileArgs], input);
  assert.equal(applied.trim().split('\n').length, policyNames.length, applied);
  const world = await worldWith(policyNames);
  await converge(title, world);
  await during?.(world);
  await kubectl(lab, ['delete', '-n', NS, ...fileArgs], input);
  const open = await worldWith([]);
  assert.ok(open.allowed.every(Boolean), 'no policy: the evaluator allows everything');
  await converge(`${title} — deleted with kubectl`, open);
}

/** Whether the evaluator, in `world`, lets `from` reach `to` over `check` (a pod pair). */
function verdict(world: WorldAnswer, from: string, to: string, check: Check): boolean {
  const all = conns();
  const ip = (n: string) => pods.find((p) => p.name === n)?.ip;
  const i = all.findIndex((c) => c.src === ip(from) && c.dst === ip(to) && c.port === check.port && c.protocol === (check.proto === 'icmp' ? 'ICMP' : 'TCP'));
  assert.ok(i >= 0, `${from} → ${to} ${check.label} is in the table`);
  return world.allowed[i] ?? false;
}

describe('Kubernetes docs NetworkPolicy examples via kubectl on a kube lab (3 hosts, vxlan): evaluator = kernel', { timeout: 600_000 }, () => {
  before(async () => {
    const up = lab(['up', '--name', name, '--store', 'kube', '--backend', 'vxlan', '--hosts', '3', '--pods', '2'], 120_000);
    assert.equal(up.code, 0, `lab up failed:\n${up.stderr}`);
    kl = kubeLab(name);
    const l = K();
    const outside = l.rec.outside ?? '';
    for (const c of l.rec.containers) pods.push({ namespace: NS, name: c.name, host: c.host, netns: c.ns, ip: c.ip ?? '' });
    await createNamespace(l, 'myproject', { project: 'myproject' });
    await createNamespace(l, 'other');
    pods.push(await addKubePod(l, 'myproject', 'mp0', 0));
    pods.push(await addKubePod(l, 'other', 'ot0', 1));
    for (const [ns, pod, role] of ROLES) await kubectl(l, ['label', 'pod', '-n', ns, pod, `role=${role}`]);
    // The outside namespace plays the world beyond the cluster: the addresses the examples'
    // ipBlocks name, and routes to each node's pods so its 172.17.* sources can reach them.
    for (const a of [...EXT_DSTS.map((d) => d.ip), ...EXT_SRCS]) assert.equal(inNs(outside, ['ip', 'addr', 'add', `${a}/32`, 'dev', 'lo']).code, 0);
    for (const h of l.rec.hostList) assert.equal(inNs(outside, ['ip', 'route', 'add', h.subnet ?? '', 'via', h.ip]).code, 0);
    await Promise.all([
      // The lab's containers echo on 7 already; extra pods get both ports.
      ...pods.map((p) => serveIn(p.netns, children, p.namespace === NS ? [6379] : [7, 6379])),
      serveIn(outside, children, EXT_PORTS),
    ]);
  });

  after(() => {
    killChildren(children);
    downQuietly(name);
    assert.deepEqual(namespacesOf(name), [], 'lab down left namespaces');
  });

  it('the API serves every pod with its labels and node, and with no policy every probe passes', async () => {
    const world = await worldWith([]);
    const got = world.endpoints.map((e) => `${e.namespace}/${e.pod}@${e.host} ${e.labels.role ?? '-'} ${e.ips.join(',')}`).sort();
    const want = pods.map((p) => `${p.namespace}/${p.name}@h${p.host} ${ROLES.find(([ns, n]) => ns === p.namespace && n === p.name)?.[2] ?? '-'} ${p.ip}`).sort();
    assert.deepEqual(got, want);
    assert.equal(world.namespaces.find((n) => n.name === 'myproject')?.labels.project, 'myproject');
    await converge('no policy', world);
  });

  it('default-deny-ingress: the lab namespace takes nothing in, its pods still reach out', async () => {
    await example('default-deny-ingress', ['network-policy-default-deny-ingress.json'], ['default-deny-ingress'], (w) => {
      assert.equal(verdict(w, 'mp0', 'h1c0', ICMP), false);
      assert.equal(verdict(w, 'h1c0', 'mp0', tcp(7)), true);
    });
  });

  it('allow-all-ingress next to default-deny-ingress: the union is open', async () => {
    await example('default-deny-ingress + allow-all-ingress', ['network-policy-default-deny-ingress.json', 'network-policy-allow-all-ingress.json'], ['allow-all-ingress', 'default-deny-ingress'], (w) => {
      assert.ok(w.allowed.every(Boolean), 'allow-all-ingress opens what default-deny-ingress closed');
    });
  });

  it('default-deny-egress: the lab namespace sends nothing out, it is still reachable', async () => {
    await example('default-deny-egress', ['network-policy-default-deny-egress.json'], ['default-deny-egress'], (w) => {
      assert.equal(verdict(w, 'h0c0', 'h1c0', tcp(7)), false);
      assert.equal(verdict(w, 'mp0', 'h1c0', tcp(7)), true);
    });
  });

  it('allow-all-egress next to default-deny-egress: the union is open', async () => {
    await example('default-deny-egress + allow-all-egress', ['network-policy-default-deny-egress.json', 'network-policy-allow-all-egress.json'], ['allow-all-egress', 'default-deny-egress'], (w) => {
      assert.ok(w.allowed.every(Boolean));
    });
  });

  it('default-deny-all: the lab namespace is cut off both ways; the other namespaces still talk', async () => {
    await example('default-deny-all', ['network-policy-default-deny-all.json'], ['default-deny-all'], (w) => {
      assert.equal(verdict(w, 'mp0', 'ot0', tcp(7)), true);
      assert.equal(verdict(w, 'h0c0', 'h0c1', ICMP), false);
    });
  });

  it('allow-egress-deny-ingress: out yes, in no', async () => {
    await example('allow-egress-deny-ingress', ['network-policy-allow-all-egress-deny-all-ingress.json'], ['allow-egress-deny-ingress'], (w) => {
      assert.equal(verdict(w, 'h0c0', 'mp0', tcp(7)), true);
      assert.equal(verdict(w, 'mp0', 'h0c0', tcp(7)), false);
    });
  });

  it('test-network-policy: role=db takes 6379 from frontends, myproject and 172.17/16 except 172.17.1/24, sends only to 10.0.0.0/24:5978', async () => {
    await example('test-network-policy', ['networkpolicy.json'], ['test-network-policy'], (w) => {
      assert.equal(verdict(w, 'h0c0', 'h1c0', tcp(6379)), true, 'frontend → db');
      assert.equal(verdict(w, 'h0c0', 'h1c0', tcp(7)), false, 'only 6379');
      assert.equal(verdict(w, 'mp0', 'h2c1', tcp(6379)), true, 'myproject → db');
      assert.equal(verdict(w, 'ot0', 'h1c0', tcp(6379)), false, 'role=frontend in another namespace');
      assert.equal(verdict(w, 'h0c1', 'h1c0', tcp(6379)), false, 'no role');
      assert.equal(verdict(w, 'h1c0', 'h0c0', ICMP), false, 'db egress is isolated');
    });
  });

  it('test-network-policy follows kubectl label on pods and namespaces', async () => {
    const l = K();
    await kubectl(l, ['apply', '-n', NS, '-f', fixture('networkpolicy.json')]);
    try {
      await converge('test-network-policy', await worldWith(['test-network-policy']));
      // A peer's labels (the sets on every host), a namespace's labels, and a pod's own labels
      // (h0c1 becomes a db: its own host isolates it, from the Pod's labels, not from CNI_ARGS).
      await kubectl(l, ['label', 'pod', '-n', NS, 'h1c1', 'role=frontend']);
      await kubectl(l, ['label', 'namespace', 'other', 'project=myproject']);
      await kubectl(l, ['label', 'pod', '-n', NS, 'h0c1', 'role=db']);
      const relabelled = await worldWith(['test-network-policy']);
      assert.equal(verdict(relabelled, 'h1c1', 'h2c1', tcp(6379)), true, 'h1c1 is a frontend now');
      assert.equal(verdict(relabelled, 'ot0', 'h1c0', tcp(6379)), true, 'other is labelled project=myproject now');
      assert.equal(verdict(relabelled, 'h0c0', 'h0c1', tcp(7)), false, 'h0c1 is a db now');
      await converge('test-network-policy after kubectl label pod h1c1 role=frontend, pod h0c1 role=db, namespace other project=myproject', relabelled);
      await kubectl(l, ['label', 'pod', '-n', NS, 'h1c1', 'role-']);
      await kubectl(l, ['label', 'pod', '-n', NS, 'h0c1', 'role-']);
      await kubectl(l, ['label', 'namespace', 'other', 'project-']);
      await converge('test-network-policy after the labels are removed again', await worldWith(['test-network-policy']));
    } finally {
      await kubectl(l, ['delete', '-n', NS, '--ignore-not-found', '-f', fixture('networkpolicy.json')]);
    }
    await converge('test-network-policy deleted', await worldWith([]));
  });

  it('default-deny-all + test-network-policy: a frontend may no longer send to db (egress is isolated too)', async () => {
    await example('default-deny-all + test-network-policy', ['network-policy-default-deny-all.json', 'networkpolicy.json'], ['default-deny-all', 'test-network-policy'], (w) => {
      assert.equal(verdict(w, 'h0c0', 'h1c0', tcp(6379)), false, 'frontend egress is denied');
      assert.equal(verdict(w, 'mp0', 'h1c0', tcp(6379)), true, 'myproject is not isolated');
    });
  });

  it('a pod created while test-network-policy holds is isolated from its first packet (labels from the API), and leaves every table when deleted', async () => {
    const l = K();
    await kubectl(l, ['apply', '-n', NS, '-f', fixture('networkpolicy.json')]);
    try {
      await converge('test-network-policy', await worldWith(['test-network-policy']));
      // On h0, which had no role=db pod: its table gets the policy's chain only now.
      const db2 = await addKubePod(l, NS, 'db2', 0, { role: 'db' });
      pods.push(db2);
      await serveIn(db2.netns, children, [7, 6379]);
      // The kubelet passes no labels: weftd must have read role=db from the Pod before the ADD
      // returned, or its neighbour without a role would get through until the watch caught up.
      const neighbour = pods.find((p) => p.name === 'h0c1');
      assert.ok(neighbour);
      const early = await probeFrom(neighbour.netns, [{ ip: db2.ip, proto: 'tcp', port: 6379 }, { ip: db2.ip, proto: 'icmp', port: 0 }], PROBE_TIMEOUT_MS);
      process.stdout.write(`new pod lab/db2 (role=db) on h0, right after ADD, from h0c1: ${early.map((r) => `${r.proto} ${r.ok ? 'open' : 'blocked'}`).join(', ')}\n`);
      assert.deepEqual(early.map((r) => r.ok), [false, false], 'isolated from its first packet');
      const world = await worldWith(['test-network-policy']);
      assert.equal(verdict(world, 'h0c0', 'db2', tcp(6379)), true);
      assert.deepEqual(world.policies[0]?.hosts, ['h0', 'h1', 'h2']);
      await converge('test-network-policy with the new pod lab/db2 (role=db) on h0', world);
      await deleteKubePod(l, db2);
      pods.splice(pods.indexOf(db2), 1);
      const after = await worldWith(['test-network-policy']);
      assert.deepEqual(after.policies[0]?.hosts, ['h1', 'h2']);
      await converge('test-network-policy after lab/db2 is deleted (CNI DEL, kubectl delete pod)', after);
    } finally {
      await kubectl(l, ['delete', '-n', NS, '--ignore-not-found', '-f', fixture('networkpolicy.json')]);
    }
    await converge('test-network-policy deleted', await worldWith([]));
  });

  it('beyond the docs\' files: a named port (the lab\'s container port `echo`), resolved per pod at the receiver and, for egress, from the API\'s Pods on other hosts', async () => {
    // Named ports are what the page's `port` field allows ("a numerical or named port on a pod");
    // none of the example files uses one.
    const policy = {
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'db-by-port-name' },
      spec: {
        podSelector: { matchLabels: { role: 'db' } }, policyTypes: ['Ingress', 'Egress'],
        ingress: [{ ports: [{ port: 'echo' }] }],
        egress: [{ to: [{ namespaceSelector: {} }], ports: [{ protocol: 'TCP', port: 'echo' }] }],
      },
    };
    await example('db-by-port-name', policy, ['db-by-port-name'], (w) => {
      assert.equal(verdict(w, 'ot0', 'h1c0', tcp(7)), true);
      assert.equal(verdict(w, 'ot0', 'h1c0', tcp(6379)), false);
      assert.equal(verdict(w, 'h1c0', 'mp0', tcp(7)), true, 'egress to a pod of another namespace on another host, on its port named echo');
      assert.equal(verdict(w, 'h1c0', 'mp0', tcp(6379)), false);
    });
  });

  it('multi-port-egress (endPort): role=db sends only to 10.0.0.0/24 on TCP 32000–32768', async () => {
    await example('multi-port-egress', ['networkpolicy-multiport-egress.json'], ['multi-port-egress'], (w) => {
      const i = conns().findIndex((c) => c.src === pods.find((p) => p.name === 'h1c0')?.ip && c.dst === '10.0.0.5' && c.port === 32768);
      assert.equal(w.allowed[i], true, 'endPort is inclusive');
    });
  });
});

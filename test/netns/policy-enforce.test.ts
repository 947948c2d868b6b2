// Policy enforcement on the real kernel. One host namespace with a bridge (pods talk across it at
// L2, seen by the forward hook through br_netfilter) and a routed link to an "outside" namespace
// (L3 forwarding, as every overlay backend does). Four pods in two labelled namespaces run echo
// servers; for each policy set the suite prints the evaluator's expected matrix next to the
// observed one (TCP 8080, TCP 9090, UDP 5353) and asserts they are equal.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { NetnsPool, ipIn } from '../../src/netns/testing.js';
import { runInNetns } from '../../src/netns/netns.js';
import { parseIP } from '../../src/net/ip.js';
import { type Endpoint, type NetworkPolicy, type PolicyWorld } from '../../src/policy/model.js';
import { allowed } from '../../src/policy/evaluate.js';
import { PolicyEnforcer, netnsNft } from '../../src/policy/enforcer.js';
import { NAMESPACES, policy, selectorCases } from './policy-cases.js';

const PROBE = fileURLToPath(new URL('./policy-probe.js', import.meta.url));
const pool = new NetnsPool('wpo');
const children: ChildProcess[] = [];
const childEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
};

interface Pod { ns: string; name: string; labels: Record<string, string>; ip: string; netns: string; namedPorts?: Endpoint['namedPorts'] }

const OUTSIDE_IPS = ['198.18.7.2', '198.18.7.3'];
const CHECKS = [
  { proto: 'tcp', port: 8080 },
  { proto: 'tcp', port: 9090 },
  { proto: 'udp', port: 5353 },
] as const;

let host = '';
let outside = '';
const pods: Pod[] = [];
let namespaces = NAMESPACES;

function startServer(netns: string, udpAddrs: string[] = []): Promise<void> {
  const p = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'serve', '8080,9090', '5353', udpAddrs.join(',')], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: p.stdout! });
    rl.once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(`server in ${netns}: ${l}`))));
    p.once('exit', (code) => reject(new Error(`server in ${netns} exited ${code}`)));
  });
}

function probeFrom(netns: string, targets: { ip: string; proto: string; port: number }[]): Promise<{ ip: string; proto: string; port: number; ok: boolean }[]> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'probe', JSON.stringify(targets)], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as never) : reject(new Error(`probe in ${netns} exited ${code}`))));
  });
}

function world(policies: NetworkPolicy[]): PolicyWorld {
  return {
    namespaces,
    policies,
    endpoints: pods.map((p) => ({
      namespace: p.ns, pod: p.name, labels: p.labels, ips: [parseIP(p.ip)], host: 'node-a', ifname: 'eth0',
      ...(p.namedPorts ? { namedPorts: p.namedPorts } : {}),
    })),
  };
}

const sources = (): { label: string; netns: string; ip: string }[] => [
  ...pods.map((p) => ({ label: `${p.ns}/${p.name}`, netns: p.netns, ip: p.ip })),
  { label: 'outside', netns: outside, ip: OUTSIDE_IPS[0]! },
];
const destinations = (): { label: string; ip: string }[] => [
  ...pods.map((p) => ({ label: `${p.ns}/${p.name}`, ip: p.ip })),
  ...OUTSIDE_IPS.map((ip) => ({ label: `out ${ip.split('.').pop()}`, ip })),
];

const cell = (bits: boolean[]) => bits.map((b) => (b ? '+' : '.')).join('');

/** Probes everything, prints expected | observed, returns both as comparable rows. */
async function matrix(title: string, w: PolicyWorld): Promise<{ expected: string[]; observed: string[] }> {
  const srcs = sources();
  const dsts = destinations();
  const observedBySrc = await Promise.all(srcs.map((s) => {
    const targets = dsts.filter((d) => d.ip !== s.ip && !(s.label === 'outside' && d.label.startsWith('out')))
      .flatMap((d) => CHECKS.map((c) => ({ ip: d.ip, proto: c.proto, port: c.port })));
    return probeFrom(s.netns, targets);
  }));
  const expected: string[] = [];
  const observed: string[] = [];
  const width = 14;
  const lines = [`── ${title}  (each cell: tcp/8080 tcp/9090 udp/5353; + open, . blocked)`,
    `${'from \\ to'.padEnd(width)}${dsts.map((d) => d.label.padEnd(width)).join('')}   ${dsts.map((d) => d.label.padEnd(width)).join('')}`,
    `${''.padEnd(width)}${'expected'.padEnd(width * dsts.length)}   observed`];
  srcs.forEach((s, i) => {
    const exp: string[] = [];
    const obs: string[] = [];
    for (const d of dsts) {
      const res = observedBySrc[i]!.filter((r) => r.ip === d.ip);
      if (res.length === 0) { exp.push('-'); obs.push('-'); continue; }
      exp.push(cell(CHECKS.map((c) => allowed({ src: parseIP(s.ip), dst: parseIP(d.ip), protocol: c.proto === 'tcp' ? 'TCP' : 'UDP', port: c.port }, w))));
      obs.push(cell(CHECKS.map((c) => res.find((r) => r.proto === c.proto && r.port === c.port)?.ok === true)));
    }
    lines.push(`${s.label.padEnd(width)}${exp.map((e) => e.padEnd(width)).join('')}   ${obs.map((e) => e.padEnd(width)).join('')}${exp.join() === obs.join() ? '' : '   ← differs'}`);
    expected.push(`${s.label}: ${exp.join(' ')}`);
    observed.push(`${s.label}: ${obs.join(' ')}`);
  });
  process.stdout.write(lines.join('\n') + '\n');
  return { expected, observed };
}

describe('network policy enforcement in namespaces', { timeout: 120_000 }, () => {
  let enforcer: PolicyEnforcer;

  before(async () => {
    const h = pool.make();
    host = h.name;
    ipIn(host, ['link', 'add', 'br0', 'type', 'bridge']);
    ipIn(host, ['addr', 'add', '10.77.0.1/24', 'dev', 'br0']);
    ipIn(host, ['link', 'set', 'br0', 'up']);
    ipIn(host, ['link', 'set', 'lo', 'up']);
    runInNetns(host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const defs: Omit<Pod, 'netns' | 'ip'>[] = [
      { ns: 'prod', name: 'web', labels: { app: 'web' }, namedPorts: { http: { port: 8080, protocol: 'TCP' } } },
      { ns: 'prod', name: 'db', labels: { app: 'db', role: 'client' } },
      { ns: 'dev', name: 'client', labels: { app: 'client', role: 'client' } },
      { ns: 'dev', name: 'tool', labels: { app: 'web' }, namedPorts: { http: { port: 9090, protocol: 'TCP' } } },
    ];
    defs.forEach((d, i) => {
      const n = pool.make();
      const ip = `10.77.0.${10 + i}`;
      ipIn(host, ['link', 'add', `vp${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.name]);
      ipIn(host, ['link', 'set', `vp${i}`, 'master', 'br0', 'up']);
      ipIn(n.name, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      ipIn(n.name, ['link', 'set', 'eth0', 'up']);
      ipIn(n.name, ['link', 'set', 'lo', 'up']);
      ipIn(n.name, ['route', 'add', 'default', 'via', '10.77.0.1']);
      pods.push({ ...d, ip, netns: n.name });
    });
    const o = pool.make();
    outside = o.name;
    ipIn(host, ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside]);
    ipIn(host, ['addr', 'add', '198.18.7.1/24', 'dev', 'up0']);
    ipIn(host, ['link', 'set', 'up0', 'up']);
    for (const ip of OUTSIDE_IPS) ipIn(outside, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    ipIn(outside, ['link', 'set', 'eth0', 'up']);
    ipIn(outside, ['link', 'set', 'lo', 'up']);
    ipIn(outside, ['route', 'add', '10.77.0.0/24', 'via', '198.18.7.1']);
    await Promise.all([...pods.map((p) => startServer(p.netns)), startServer(outside, OUTSIDE_IPS)]);
    enforcer = new PolicyEnforcer({ host: 'node-a', nft: netnsNft(host) });
  });

  after(() => {
    for (const c of children) if (c.pid !== undefined && c.exitCode === null) c.kill('SIGKILL');
    pool.cleanup();
  });

  const check = async (title: string, policies: NetworkPolicy[]) => {
    const w = world(policies);
    const r = await enforcer.update(w);
    const m = await matrix(title, w);
    assert.deepEqual(m.observed, m.expected, title);
    return r;
  };

  it('bridged pod traffic reaches the forward hook (br_netfilter on in the host namespace)', () => {
    assert.equal(enforcer.bridgedTrafficEnforced(), true);
  });

  it('no policy: everything flows', async () => {
    const r = await check('no policy', []);
    assert.equal(r.type, 'replaced');
  });

  selectorCases({ check, setNamespaces: (ns) => { namespaces = ns; } });

  it('pod and namespace selector together (AND) versus as two peers (OR)', async () => {
    await check('AND: one peer {namespaceSelector env=dev, podSelector role=client}', [policy('prod', 'and', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } }, podSelector: { matchLabels: { role: 'client' } } }] }],
    })]);
    await check('OR: two peers [{namespaceSelector env=dev}, {podSelector role=client}]', [policy('prod', 'or', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }, { podSelector: { matchLabels: { role: 'client' } } }] }],
    })]);
  });

  it('named and numeric ports, endPort', async () => {
    await check('app=web pods allow named port http (web: 8080, tool: 9090); db allows 9000-9100/TCP and 5353/UDP', [
      policy('prod', 'web-http', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 'http' }] }] }),
      policy('dev', 'tool-http', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] }),
      policy('prod', 'db-range', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ ports: [{ port: 9000, endPort: 9100 }, { protocol: 'UDP', port: 5353 }] }] }),
    ]);
  });

  it('default-deny egress with an allowed DNS-like port (replies of allowed connections still pass)', async () => {
    await check('dev: egress only UDP 5353', [policy('dev', 'egress-dns', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'UDP', port: 5353 }] }] })]);
  });

  it('ipBlock with except towards the outside namespace; named port egress', async () => {
    await check('prod/web egress: 198.18.7.0/24 except 198.18.7.3/32; dev/client egress: pods with port http', [
      policy('prod', 'web-out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '198.18.7.0/24', except: ['198.18.7.3/32'] } }] }] }),
      policy('dev', 'client-http', { podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] }),
    ]);
  });

  it('a policy deleted: traffic restored', async () => {
    await check('deny in prod', [policy('prod', 'deny', { podSelector: {} })]);
    await check('after deleting it', []);
  });

  it('a policy update keeps an established flow it still allows, and repair() restores a deleted table', async () => {
    const client = pods.find((p) => p.name === 'client')!;
    const web = pods.find((p) => p.name === 'web')!;
    await enforcer.update(world([policy('prod', 'from-dev', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }] }] })]));
    const p = spawn('ip', ['netns', 'exec', client.netns, process.execPath, PROBE, 'hold', web.ip, '8080'], { env: childEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(p);
    const lines = createInterface({ input: p.stdout! });
    const next = () => new Promise<string>((resolve) => {
      const t = setTimeout(() => { lines.off('line', on); resolve('timeout'); }, 1500);
      const on = (l: string) => { clearTimeout(t); lines.off('line', on); resolve(l); };
      lines.on('line', on);
    });
    try {
      assert.equal(await next(), 'connected');
      p.stdin!.write('one\n');
      assert.equal(await next(), 'echo one');
      // A structurally different policy set (rules rebuilt, table replaced) that still allows dev→web.
      const r = await enforcer.update(world([
        policy('prod', 'from-dev-8080', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }], ports: [{ port: 8080 }] }] }),
        policy('prod', 'deny', { podSelector: {} }),
      ]));
      assert.equal(r.type, 'replaced');
      p.stdin!.write('two\n');
      assert.equal(await next(), 'echo two', 'the established connection survives the table replace');
      // Someone deletes weft's table: repair notices and puts it back.
      const del = runInNetns(host, ['nft', 'delete', 'table', 'inet', 'weft-policy']);
      assert.equal(del.status, 0, del.stderr);
      const rep = await enforcer.repair();
      assert.deepEqual(rep, { type: 'repaired', reason: 'table is missing' });
      assert.deepEqual(await enforcer.repair(), { type: 'ok' });
      p.stdin!.write('three\n');
      assert.equal(await next(), 'echo three');
    } finally {
      p.stdin!.end();
      p.kill('SIGKILL');
    }
  });

  it('remove() deletes the table', async () => {
    await enforcer.remove();
    const r = runInNetns(host, ['nft', 'list', 'table', 'inet', 'weft-policy']);
    assert.notEqual(r.status, 0);
  });
});

// NetworkPolicy over IPv6 and dual stack on the real kernel. One host namespace with a bridge
// carrying 10.79.0.0/24 and fd00:79::/64 (pods talk across it at L2, seen by the forward hook
// through br_netfilter's two switches, one per family) and a routed link to an "outside"
// namespace holding two addresses of each family (L3 forwarding, as the overlay backends do).
// Five pods: three dual-stack, one IPv6-only, one IPv4-only, in two labelled namespaces. For each
// policy set every (source, destination, family, check) is probed — TCP 8080, TCP 9090, UDP 5353
// and an ICMP/ICMPv6 echo — and the observed truth table must equal what the policy evaluator
// (src/policy/evaluate.ts) computes. Neighbour caches are flushed before each round, so every
// table also proves that neighbour discovery got through whatever the policies isolate.
// Then what the tables cannot show: neighbour discovery of isolated pods, link-local addresses
// (which no policy can name), the guard for unknown local pods, the deny log and verdict
// counters for IPv6 packets, weftd's policy service fed dual-stack endpoint records (and
// br_netfilter's IPv6 switch turned off under it), and the conntrack bypass with an IPv6 DNAT.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PolicyService } from '../../src/agent/policy-service.js';
import { createLogger } from '../../src/log.js';
import { endpointRecordFile } from '../../src/policy/endpoint-record.js';
import { fileKeyValueStore } from '../../src/store/kv.js';
import { NetnsPool, ipIn, ipJson } from '../../src/netns/testing.js';
import { runInNetns } from '../../src/netns/netns.js';
import { type IPFamily, formatIP, parseCidr, parseIP } from '../../src/net/ip.js';
import { nftApply } from '../../src/nft/nft.js';
import { watchNflog, type NflogEvent, type NflogWatch } from '../../src/netlink/nflog.js';
import { flushConntrack } from '../../src/netlink/conntrack.js';
import { netnsPath } from '../../src/netns/index.js';
import { type Endpoint, type NetworkPolicy, type PolicyWorld } from '../../src/policy/model.js';
import { type Connection, allowed } from '../../src/policy/evaluate.js';
import { type LocalGuard } from '../../src/policy/compile.js';
import { type CounterReading, PolicyEnforcer, netnsNft } from '../../src/policy/enforcer.js';
import { bypassShape } from '../../src/policy/bypass.js';
import { waitFor } from './agent-harness.js';
import { NAMESPACES, policy, selectorCases } from './policy-cases.js';
import { type ProbeProto, type ProbeTarget, cell, probeFrom, serveIn } from './policy-traffic.js';
import { bypassChains, observedCounts, observerScript } from './conntrack-observer.js';

const pool = new NetnsPool('wp6');
/** Links live only inside this suite's namespaces; the suffix still keeps their names its own. */
const SUFFIX = randomBytes(3).toString('hex');
const link = (what: string): string => `wp6${SUFFIX}${what}`;
const POD_IF = link('e');
const BRIDGE = link('b');
const children: ChildProcess[] = [];

const POD_NET = { 4: '10.79.0.0/24', 6: 'fd00:79::/64' } as const;
const GATEWAY = { 4: '10.79.0.1', 6: 'fd00:79::1' } as const;
const UPLINK = { 4: '198.18.8.1', 6: '2001:2:0:8::1' } as const;
const FAMILIES = [4, 6] as const;

interface PodDef {
  readonly ns: string;
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly ip: Partial<Record<IPFamily, string>>;
  readonly namedPorts?: Endpoint['namedPorts'];
}
interface Pod extends PodDef { readonly netns: string }

const POD_DEFS: readonly PodDef[] = [
  { ns: 'prod', name: 'web', labels: { app: 'web' }, ip: { 4: '10.79.0.10', 6: 'fd00:79::a' }, namedPorts: { http: { port: 8080, protocol: 'TCP' } } },
  { ns: 'prod', name: 'db', labels: { app: 'db', role: 'client' }, ip: { 4: '10.79.0.11', 6: 'fd00:79::b' } },
  { ns: 'dev', name: 'client', labels: { app: 'client', role: 'client' }, ip: { 4: '10.79.0.12', 6: 'fd00:79::c' } },
  { ns: 'dev', name: 'tool', labels: { app: 'web' }, ip: { 6: 'fd00:79::d' }, namedPorts: { http: { port: 9090, protocol: 'TCP' } } },
  { ns: 'dev', name: 'legacy', labels: { app: 'legacy', role: 'client' }, ip: { 4: '10.79.0.14' } },
];
/** The outside namespace's addresses: each is a source row (bound explicitly) and a destination. */
const OUTSIDE: readonly { label: string; ip: Record<IPFamily, string> }[] = [
  { label: 'out .2', ip: { 4: '198.18.8.2', 6: '2001:2:0:8::2' } },
  { label: 'out .3', ip: { 4: '198.18.8.3', 6: '2001:2:0:8::3' } },
];
const CHECKS: readonly { proto: ProbeProto; port: number }[] = [
  { proto: 'tcp', port: 8080 },
  { proto: 'tcp', port: 9090 },
  { proto: 'udp', port: 5353 },
  { proto: 'icmp', port: 0 },
];
/** Generous: a blocked probe costs this once per round, a slow allowed one must not look blocked. */
const PROBE_TIMEOUT_MS = 1000;

let host = '';
let outside = '';
const pods: Pod[] = [];
let namespaces = NAMESPACES;
const guard: LocalGuard = { subnets: [parseCidr(POD_NET[4]), parseCidr(POD_NET[6])], extraKnown: [] };
/** Probes over all truth tables, per family: how many the evaluator allowed and blocked. */
const tally: Record<IPFamily, { allowed: number; blocked: number }> = { 4: { allowed: 0, blocked: 0 }, 6: { allowed: 0, blocked: 0 } };

const pod = (name: string): Pod => {
  const p = pods.find((x) => x.name === name);
  if (!p) throw new Error(`no pod ${name}`);
  return p;
};
const ipOf = (p: Pod, f: IPFamily): string => {
  const ip = p.ip[f];
  if (ip === undefined) throw new Error(`${p.name} has no IPv${f} address`);
  return ip;
};

function world(policies: NetworkPolicy[]): PolicyWorld {
  return {
    namespaces,
    policies,
    endpoints: pods.map((p) => ({
      namespace: p.ns, pod: p.name, labels: p.labels, host: 'node-a', ifname: 'eth0',
      ips: FAMILIES.flatMap((f) => (p.ip[f] !== undefined ? [parseIP(p.ip[f])] : [])),
      ...(p.namedPorts ? { namedPorts: p.namedPorts } : {}),
    })),
  };
}

interface Row { label: string; netns: string; ip: Partial<Record<IPFamily, string>>; bind: boolean }
const sources = (): Row[] => [
  ...pods.map((p) => ({ label: `${p.ns}/${p.name}`, netns: p.netns, ip: p.ip, bind: false })),
  ...OUTSIDE.map((o) => ({ label: o.label, netns: outside, ip: o.ip, bind: true })),
];
const destinations = (): { label: string; ip: Partial<Record<IPFamily, string>>; outside: boolean }[] => [
  ...pods.map((p) => ({ label: `${p.ns}/${p.name}`, ip: p.ip, outside: false })),
  ...OUTSIDE.map((o) => ({ label: o.label, ip: o.ip, outside: true })),
];

const protocolOf = (proto: ProbeProto): Connection['protocol'] => (proto === 'tcp' ? 'TCP' : proto === 'udp' ? 'UDP' : 'ICMP');

/** Neighbour entries gone everywhere: the next packets between any two parties need ND first. */
function flushNeighbours(): void {
  for (const ns of [host, outside, ...pods.map((p) => p.netns)]) ipIn(ns, ['neigh', 'flush', 'all']);
}

/**
 * Probes every (source, destination, family, check), prints expected | observed per family and
 * returns comparable rows. A pair without a common family, and outside to outside, is '-'.
 */
async function matrix(title: string, w: PolicyWorld): Promise<{ expected: string[]; observed: string[] }> {
  flushNeighbours();
  // A connection of an earlier round stays established in conntrack (UDP for 30 s), and a probe
  // that happens to reuse its ephemeral port would pass as part of it — as Kubernetes expects of
  // established connections when a policy changes, but not what a table of new connections asks.
  flushConntrack(netnsPath(host));
  const srcs = sources();
  const dsts = destinations();
  const targetsOf = (s: Row): ProbeTarget[] => dsts.flatMap((d) => {
    if (d.label === s.label || (s.bind && d.outside)) return [];
    return FAMILIES.flatMap((f) => {
      const from = s.ip[f];
      const to = d.ip[f];
      if (from === undefined || to === undefined) return [];
      return CHECKS.map((c) => ({ ip: to, proto: c.proto, port: c.port, ...(s.bind && { from }) }));
    });
  });
  const results = await Promise.all(srcs.map((s) => probeFrom(s.netns, targetsOf(s), PROBE_TIMEOUT_MS)));
  const expected: string[] = [];
  const observed: string[] = [];
  const width = 12;
  const head = `${'from \\ to'.padEnd(width)}${dsts.map((d) => d.label.padEnd(width)).join('')}`;
  const lines = [`── ${title}  (cell: tcp/8080 tcp/9090 udp/5353 echo; + open, . blocked, - no such pair)`];
  for (const f of FAMILIES) {
    lines.push(`IPv${f}  expected${' '.repeat(width * (dsts.length + 1) - 8)}   observed`, `${head}   ${head}`);
    srcs.forEach((s, i) => {
      const exp: string[] = [];
      const obs: string[] = [];
      for (const d of dsts) {
        const from = s.ip[f];
        const to = d.ip[f];
        const res = results[i]!.filter((r) => r.ip === to);
        if (from === undefined || to === undefined || res.length === 0) { exp.push('-'); obs.push('-'); continue; }
        const want = CHECKS.map((c) => allowed({ src: parseIP(from), dst: parseIP(to), protocol: protocolOf(c.proto), port: c.port }, w));
        for (const b of want) tally[f][b ? 'allowed' : 'blocked']++;
        exp.push(cell(want));
        obs.push(cell(CHECKS.map((c) => res.find((r) => r.proto === c.proto && r.port === c.port)?.ok === true)));
      }
      const differs = exp.join() === obs.join() ? '' : '   ← differs';
      lines.push(`${s.label.padEnd(width)}${exp.map((e) => e.padEnd(width)).join('')}   ${s.label.padEnd(width)}${obs.map((e) => e.padEnd(width)).join('')}${differs}`);
      expected.push(`IPv${f} ${s.label}: ${exp.join(' ')}`);
      observed.push(`IPv${f} ${s.label}: ${obs.join(' ')}`);
    });
  }
  process.stdout.write(lines.join('\n') + '\n');
  return { expected, observed };
}

/** The pod's link-local address on its bridge interface. */
function linkLocal(p: Pod): string {
  const links = ipJson<{ addr_info: { family: string; local: string; scope: string }[] }[]>(p.netns, ['-6', 'addr', 'show', 'dev', POD_IF]);
  const a = links[0]?.addr_info.find((x) => x.scope === 'link');
  if (!a) throw new Error(`${p.name} has no link-local address`);
  return a.local;
}

/** The neighbour entry `ns` holds for `ip`, if any. */
function neighbour(ns: string, ip: string): { state: string[]; lladdr?: string } | undefined {
  return ipJson<{ dst: string; lladdr?: string; state: string[] }[]>(ns, ['-6', 'neigh', 'show']).find((n) => n.dst === ip);
}

function ping(ns: string, ip: string): boolean {
  return runInNetns(ns, ['ping', '-n', '-q', '-c', '1', '-W', '1', ip]).status === 0;
}

describe('network policy over IPv6 and dual stack in namespaces', { timeout: 240_000 }, () => {
  let enforcer: PolicyEnforcer;
  const watches: NflogWatch[] = [];

  /** A namespace of this suite, with IPv6 addresses usable at once (no DAD wait for link-local ones). */
  const makeNs = (): string => {
    const ns = pool.make().name;
    const r = runInNetns(ns, ['sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
    assert.equal(r.status, 0, r.stderr);
    ipIn(ns, ['link', 'set', 'lo', 'up']);
    return ns;
  };

  before(async () => {
    host = makeNs();
    const fwd = runInNetns(host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    assert.equal(fwd.status, 0, fwd.stderr);
    ipIn(host, ['link', 'add', BRIDGE, 'type', 'bridge']);
    ipIn(host, ['addr', 'add', `${GATEWAY[4]}/24`, 'dev', BRIDGE]);
    ipIn(host, ['addr', 'add', `${GATEWAY[6]}/64`, 'dev', BRIDGE, 'nodad']);
    ipIn(host, ['link', 'set', BRIDGE, 'up']);
    POD_DEFS.forEach((d, i) => {
      const ns = makeNs();
      ipIn(host, ['link', 'add', link(`p${i}`), 'type', 'veth', 'peer', 'name', POD_IF, 'netns', ns]);
      ipIn(host, ['link', 'set', link(`p${i}`), 'master', BRIDGE, 'up']);
      ipIn(ns, ['link', 'set', POD_IF, 'up']);
      for (const f of FAMILIES) {
        const ip = d.ip[f];
        if (ip === undefined) continue;
        ipIn(ns, f === 4 ? ['addr', 'add', `${ip}/24`, 'dev', POD_IF] : ['addr', 'add', `${ip}/64`, 'dev', POD_IF, 'nodad']);
        ipIn(ns, [`-${f}`, 'route', 'add', 'default', 'via', GATEWAY[f]]);
      }
      pods.push({ ...d, netns: ns });
    });
    outside = makeNs();
    ipIn(host, ['link', 'add', link('u'), 'type', 'veth', 'peer', 'name', link('o'), 'netns', outside]);
    ipIn(host, ['addr', 'add', `${UPLINK[4]}/24`, 'dev', link('u')]);
    ipIn(host, ['addr', 'add', `${UPLINK[6]}/64`, 'dev', link('u'), 'nodad']);
    ipIn(host, ['link', 'set', link('u'), 'up']);
    for (const o of OUTSIDE) {
      ipIn(outside, ['addr', 'add', `${o.ip[4]}/24`, 'dev', link('o')]);
      ipIn(outside, ['addr', 'add', `${o.ip[6]}/64`, 'dev', link('o'), 'nodad']);
    }
    ipIn(outside, ['link', 'set', link('o'), 'up']);
    for (const f of FAMILIES) ipIn(outside, [`-${f}`, 'route', 'add', POD_NET[f], 'via', UPLINK[f]]);
    // UDP is bound per address outside: a wildcard socket would answer from whichever address
    // routing picks, which conntrack does not take for the reply.
    await Promise.all([
      ...pods.map((p) => serveIn(p.netns, children, [8080, 9090], [5353])),
      serveIn(outside, children, [8080, 9090], [5353], OUTSIDE.flatMap((o) => [o.ip[4], o.ip[6]])),
    ]);
    enforcer = new PolicyEnforcer({ host: 'node-a', nft: netnsNft(host) });
  });

  after(() => {
    for (const w of watches) w.close();
    for (const c of children) if (c.pid !== undefined && c.exitCode === null) c.kill('SIGKILL');
    pool.cleanup();
  });

  const check = async (title: string, policies: NetworkPolicy[]) => {
    const w = world(policies);
    const r = await enforcer.update(w, guard);
    const m = await matrix(title, w);
    assert.deepEqual(m.observed, m.expected, title);
    return r;
  };

  it('bridged pod traffic of both families reaches the forward hook (br_netfilter, both switches on)', () => {
    assert.equal(enforcer.bridgedTrafficEnforced(4), true);
    assert.equal(enforcer.bridgedTrafficEnforced(6), true);
  });

  it('no policy: everything flows, over both families', async () => {
    await check('no policy', []);
  });

  selectorCases({ check, setNamespaces: (ns) => { namespaces = ns; }, over: ', over both families' });

  it('pod and namespace selector in one peer (AND), over both families', async () => {
    await check('AND: {namespaceSelector env=dev, podSelector role=client}', [policy('prod', 'and', {
      podSelector: {},
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } }, podSelector: { matchLabels: { role: 'client' } } }] }],
    })]);
  });

  it('named and numeric ports, endPort, resolved per pod whatever its families', async () => {
    await check('app=web allow named port http (web: 8080, IPv6-only tool: 9090); db allows 9000-9100/TCP and 5353/UDP', [
      policy('prod', 'web-http', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 'http' }] }] }),
      policy('dev', 'tool-http', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] }),
      policy('prod', 'db-range', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ ports: [{ port: 9000, endPort: 9100 }, { protocol: 'UDP', port: 5353 }] }] }),
    ]);
  });

  it('ingress ipBlocks: IPv6 with except; an ipBlock of one family never admits the other', async () => {
    await check('web: from 2001:2:0:8::/64 except ::3 and from fd00:79::c/128 (IPv6 only); db: from 198.18.8.0/24 (IPv4 only); tool: from 10.79.0.0/24 (IPv4 only, tool has none)', [
      policy('prod', 'web-v6', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '2001:2:0:8::/64', except: ['2001:2:0:8::3/128'] } }, { ipBlock: { cidr: 'fd00:79::c/128' } }] }] }),
      policy('prod', 'db-v4', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ ipBlock: { cidr: '198.18.8.0/24' } }] }] }),
      policy('dev', 'tool-v4', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: POD_NET[4] } }] }] }),
    ]);
  });

  it('whole-family ipBlocks: ::/0 admits no IPv4, 0.0.0.0/0 no IPv6', async () => {
    await check('client: from ::/0; web: from 0.0.0.0/0 on TCP 8080', [
      policy('dev', 'client-any6', { podSelector: { matchLabels: { app: 'client' } }, ingress: [{ from: [{ ipBlock: { cidr: '::/0' } }] }] }),
      policy('prod', 'web-any4', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0' } }], ports: [{ port: 8080 }] }] }),
    ]);
  });

  it('egress: IPv6 ipBlock with except, named ports of remote pods in both families, an ipBlock over the pod network', async () => {
    await check('web: to 2001:2:0:8::/64 except ::3; client: to pods, port http; db: to fd00:79::/64 except ::a, and 0.0.0.0/0 on TCP 9090', [
      policy('prod', 'web-out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '2001:2:0:8::/64', except: ['2001:2:0:8::3/128'] } }] }] }),
      policy('dev', 'client-http', { podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] }),
      policy('prod', 'db-out', { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Egress'], egress: [
        { to: [{ ipBlock: { cidr: POD_NET[6], except: ['fd00:79::a/128'] } }] },
        { to: [{ ipBlock: { cidr: '0.0.0.0/0' } }], ports: [{ port: 9090 }] },
      ] }),
    ]);
  });

  it('default-deny egress with one UDP port open; ICMPv6 echo passes only rules without ports', async () => {
    await check('dev: egress only UDP 5353; prod: ingress from dev on any port, TCP 8080 from prod', [
      policy('dev', 'egress-dns', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'UDP', port: 5353 }] }] }),
      policy('prod', 'from-dev', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }] }, { from: [{ podSelector: {} }], ports: [{ port: 8080 }] }] }),
    ]);
  });

  it('ingress and egress together on both ends', async () => {
    await check('every pod: egress to pods only, ingress from role=client only', [
      policy('prod', 'prod-both', { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'client' } } }] }], egress: [{ to: [{ namespaceSelector: {} }] }] }),
      policy('dev', 'dev-both', { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'client' } } }] }], egress: [{ to: [{ namespaceSelector: {} }] }] }),
    ]);
    // The kernel's listing of a dual-stack table (IPv6 elements, the ND and link-local rules)
    // has the shape the compiler predicts, or every repair pass would rebuild it.
    assert.deepEqual(await enforcer.repair(), { type: 'ok' });
  });

  it('the truth tables held allowed and blocked probes of both families', () => {
    process.stdout.write(`probes compared with the evaluator: IPv4 ${tally[4].allowed} allowed, ${tally[4].blocked} blocked; IPv6 ${tally[6].allowed} allowed, ${tally[6].blocked} blocked\n`);
    for (const f of FAMILIES) {
      assert.ok(tally[f].allowed > 0 && tally[f].blocked > 0, `IPv${f}: ${JSON.stringify(tally[f])}`);
    }
  });

  it('isolated pods still resolve their neighbours: pod to pod across the bridge, pod to gateway, gateway to pod', async () => {
    const [web, db] = [pod('web'), pod('db')];
    await enforcer.update(world([
      policy('prod', 'isolate', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
      policy('dev', 'isolate', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
    ]), guard);
    flushNeighbours();
    // The gateway is the host itself (input, not forward): reachable, so ND with it went both ways.
    assert.equal(ping(web.netns, GATEWAY[6]), true, 'an isolated pod reaches its gateway over IPv6');
    assert.ok(neighbour(web.netns, GATEWAY[6])?.lladdr, 'the pod resolved its gateway');
    assert.ok(neighbour(host, ipOf(web, 6))?.lladdr, 'the gateway resolved the pod');
    // Both pods isolated in both directions: the echo is dropped, its solicitation is not.
    assert.equal(ping(web.netns, ipOf(db, 6)), false, 'the echo itself is not allowed');
    const n = await waitFor('web\'s neighbour entry for db', () => {
      const e = neighbour(web.netns, ipOf(db, 6));
      return e && !e.state.includes('INCOMPLETE') ? e : undefined;
    }, 3000);
    assert.ok(n.lladdr, `web resolved db across the bridge: ${JSON.stringify(n)}`);
    assert.ok(!n.state.includes('FAILED'), JSON.stringify(n));
  });

  it('link-local addresses carry nothing between pods while one is isolated here, and everything while none is', async () => {
    const [web, db, client] = [pod('web'), pod('db'), pod('client')];
    const ll = (p: Pod) => `${linkLocal(p)}%${POD_IF}`;
    const probeLL = async (from: Pod, to: Pod, bind: boolean) => (await probeFrom(from.netns, [
      { ip: ll(to), proto: 'tcp', port: 8080, ...(bind && { from: ll(from) }) },
      { ip: ll(to), proto: 'icmp', port: 0, ...(bind && { from: ll(from) }) },
    ], PROBE_TIMEOUT_MS)).map((r) => r.ok);
    // From its link-local address to db's global one: the kernel sends it, db answers on the link.
    const fromLinkLocal = async () => (await probeFrom(client.netns, [{ ip: ipOf(db, 6), proto: 'tcp', port: 8080, from: ll(client) }], PROBE_TIMEOUT_MS)).map((r) => r.ok);
    await enforcer.update(world([]), guard);
    assert.deepEqual(await probeLL(client, web, false), [true, true], 'link-local is reachable: the probes themselves work');
    assert.deepEqual(await fromLinkLocal(), [true]);
    // web is ingress-isolated: its global addresses are closed to client, and so must be its link-local one.
    await enforcer.update(world([policy('prod', 'deny', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'] })]), guard);
    assert.deepEqual((await probeFrom(client.netns, [{ ip: ipOf(web, 6), proto: 'tcp', port: 8080 }], PROBE_TIMEOUT_MS)).map((r) => r.ok), [false]);
    assert.deepEqual(await probeLL(client, web, false), [false, false], 'an ingress-isolated pod is not reachable at its link-local address');
    // client is egress-isolated to nothing: it must not get out through its link-local source.
    await enforcer.update(world([policy('dev', 'no-egress', { podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'] })]), guard);
    assert.deepEqual(await probeLL(client, db, true), [false, false], 'an egress-isolated pod cannot send from its link-local address');
    assert.deepEqual(await fromLinkLocal(), [false], 'not even to a global address, which the egress map (keyed by source) would miss');
    assert.deepEqual((await probeFrom(db.netns, [{ ip: ipOf(web, 6), proto: 'tcp', port: 8080 }], PROBE_TIMEOUT_MS)).map((r) => r.ok), [true], 'global addresses between pods nobody isolates stay open');
  });

  it('a local pod weftd does not know yet is cut off over IPv6 as over IPv4 while policies exist', async () => {
    const stranger = makeNs();
    ipIn(host, ['link', 'add', link('s'), 'type', 'veth', 'peer', 'name', POD_IF, 'netns', stranger]);
    ipIn(host, ['link', 'set', link('s'), 'master', BRIDGE, 'up']);
    ipIn(stranger, ['link', 'set', POD_IF, 'up']);
    ipIn(stranger, ['addr', 'add', '10.79.0.20/24', 'dev', POD_IF]);
    ipIn(stranger, ['addr', 'add', 'fd00:79::14/64', 'dev', POD_IF, 'nodad']);
    await serveIn(stranger, children, [8080], []);
    const client = pod('client');
    const probeBoth = async () => (await probeFrom(client.netns, [
      { ip: '10.79.0.20', proto: 'tcp', port: 8080 }, { ip: 'fd00:79::14', proto: 'tcp', port: 8080 },
    ], PROBE_TIMEOUT_MS)).map((r) => r.ok);
    await enforcer.update(world([]), guard);
    assert.deepEqual(await probeBoth(), [true, true], 'no policy, no table: the stranger is reachable');
    await enforcer.update(world([policy('prod', 'deny', { podSelector: {}, policyTypes: ['Ingress'] })]), guard);
    assert.deepEqual(await probeBoth(), [false, false], 'unknown addresses of the node\'s pod subnets are dropped in both families');
  });

  it('IPv6 drops are logged to NFLOG with the isolating policies and counted per policy and per endpoint, apart from IPv4', async () => {
    const [web, client] = [pod('web'), pod('client')];
    const events: NflogEvent[] = [];
    watches.push(watchNflog(7, (e) => events.push(e), { nsPath: `/run/netns/${host}` }));
    await enforcer.update(world([
      policy('prod', 'deny', { podSelector: {}, policyTypes: ['Ingress'] }),
      policy('prod', 'allow-client-v6', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: 'fd00:79::c/128' } }], ports: [{ port: 8080 }] }] }),
    ]), guard);
    const before = await enforcer.readCounters();
    const results = await probeFrom(client.netns, [
      { ip: ipOf(web, 6), proto: 'tcp', port: 8080 },
      { ip: ipOf(web, 6), proto: 'tcp', port: 9090 },
    ], PROBE_TIMEOUT_MS);
    assert.deepEqual(results.map((r) => r.ok), [true, false]);
    const logged = await waitFor('the denied IPv6 SYN on NFLOG', () => events.find((e) => e.type === 'packet' && e.packet.ip?.family === 6), 3000);
    assert.ok(logged.type === 'packet' && logged.packet.ip);
    assert.equal(logged.packet.prefix, 'weft-deny:ingress:prod/allow-client-v6,prod/deny');
    assert.equal(logged.packet.hook, 2, 'the forward hook');
    assert.deepEqual([formatIP(logged.packet.ip.src), formatIP(logged.packet.ip.dst), logged.packet.ip.dstPort], [ipOf(client, 6), ipOf(web, 6), 9090]);
    assert.deepEqual(events.filter((e) => e.type === 'packet' && e.packet.ip?.family !== 6), [], 'only the IPv6 probe was denied');

    const after = await enforcer.readCounters();
    const policyGain = (name: string, verdict: string) => {
      const at = (r: CounterReading) => r.policies.find((c) => c.policy === name && c.direction === 'ingress' && c.verdict === verdict)?.packets ?? 0;
      return at(after) - at(before);
    };
    const webGain = (verdict: string) => {
      const at = (r: CounterReading) => r.endpoints.find((c) => c.namespace === 'prod' && c.pod === 'web' && c.direction === 'ingress' && c.verdict === verdict)?.packets ?? 0;
      return at(after) - at(before);
    };
    assert.ok(policyGain('prod/allow-client-v6', 'allowed') >= 1, 'the allowing rule counted the IPv6 SYN');
    assert.ok(policyGain('prod/deny', 'denied') >= 1, 'the default deny counted for every isolating policy');
    assert.ok(policyGain('prod/allow-client-v6', 'denied') >= 1);
    assert.ok(webGain('allowed') >= 1, 'web\'s IPv6 map element counted what its chain judged');
    assert.ok(webGain('denied') >= 1, 'web\'s IPv6 deny element counted the drop');

    // Per family in the kernel: the IPv6 element of web's deny set counted, the IPv4 one did not.
    const items = await netnsNft(host).listTable();
    const elementPackets = (set: string, addr: string): number | undefined => {
      for (const it of items ?? []) {
        const s = (it as { set?: { name: string; elem?: { elem?: { val: string; counter?: { packets: number } } }[] } }).set;
        if (s?.name !== set) continue;
        return s.elem?.find((e) => e.elem?.val === addr)?.elem?.counter?.packets;
      }
      return undefined;
    };
    assert.ok((elementPackets('ingress-deny-6', ipOf(web, 6)) ?? 0) >= 1, 'nft lists the IPv6 element as the layout names it, with its drops');
    assert.equal(elementPackets('ingress-deny-4', ipOf(web, 4)), 0);
  });

  it('weftd\'s policy service enforces and publishes dual-stack endpoint records; with br_netfilter\'s IPv6 switch off it warns, and bridged IPv6 escapes the rules', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wp6-svc-'));
    const kv = fileKeyValueStore(join(dir, 'store'), '/weft/network');
    const recordDir = join(dir, 'records');
    mkdirSync(recordDir, { recursive: true });
    const logged: { msg: string; family?: number }[] = [];
    const log = createLogger({ test: 'policy-dualstack' }, { level: 'warn', write: (l) => { logged.push(JSON.parse(l) as { msg: string }); } });
    const services: PolicyService[] = [];
    const startService = async () => {
      const svc = new PolicyService({ kv, host: 'node-a', recordDir, subnets: guard.subnets, nft: netnsNft(host), log, batchDelayMs: 5, repairIntervalMs: 60_000 });
      services.push(svc);
      await svc.start();
      await svc.settle();
    };
    const bridgeSwitch = (v: 0 | 1) => {
      const r = runInNetns(host, ['sysctl', '-qw', `net.bridge.bridge-nf-call-ip6tables=${v}`]);
      assert.equal(r.status, 0, r.stderr);
    };
    const [web, db, client, tool, legacy] = ['web', 'db', 'client', 'tool', 'legacy'].map(pod) as [Pod, Pod, Pod, Pod, Pod];
    const probeWeb = async (from: Pod, f: IPFamily, port: number) => (await probeFrom(from.netns, [{ ip: ipOf(web, f), proto: 'tcp', port }], PROBE_TIMEOUT_MS))[0]?.ok;
    const bridgeWarnings = () => logged.filter((l) => l.msg.includes('across a bridge')).map((l) => l.family);
    try {
      for (const n of namespaces) await kv.put(`namespaces/${n.name}`, JSON.stringify(n));
      await kv.put('policies/prod/from-dev-8080', JSON.stringify({
        apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: 'prod', name: 'from-dev-8080' },
        spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }], ports: [{ port: 8080 }] }] },
      }));
      // What the weft plugin writes for each ADD: the CNI result's addresses, with their prefixes.
      pods.forEach((p, i) => writeFileSync(endpointRecordFile(recordDir, `c${i}`, 'eth0'), JSON.stringify({
        containerID: `c${i}`, ifname: 'eth0', namespace: p.ns, pod: p.name, labels: p.labels,
        ips: FAMILIES.flatMap((f) => (p.ip[f] !== undefined ? [`${p.ip[f]}/${f === 4 ? 24 : 64}`] : [])),
        ...(p.namedPorts && { namedPorts: p.namedPorts }),
      })));
      await startService();
      assert.deepEqual(bridgeWarnings(), []);
      assert.deepEqual([
        await probeWeb(client, 6, 8080), await probeWeb(tool, 6, 8080), await probeWeb(client, 6, 9090), await probeWeb(db, 6, 8080),
        await probeWeb(legacy, 4, 8080), await probeWeb(db, 4, 8080),
      ], [true, true, false, false, true, false], 'dev → web on 8080 over either family, nothing else');
      const published = new Map((await kv.list('endpoints/')).map((e) => [e.key, JSON.parse(e.value) as { ips: string[] }]));
      assert.deepEqual(published.get('endpoints/node-a/prod/web/eth0')?.ips, ['10.79.0.10/24', 'fd00:79::a/64']);
      assert.deepEqual(published.get('endpoints/node-a/dev/tool/eth0')?.ips, ['fd00:79::d/64']);

      bridgeSwitch(0);
      await services.at(-1)?.close();
      await startService();
      assert.deepEqual(bridgeWarnings(), [6], 'one warning, for IPv6 only');
      assert.equal(await probeWeb(db, 6, 8080), true, 'bridged IPv6 no longer meets the rules: what the warning is about');
      assert.equal(await probeWeb(db, 4, 8080), false, 'IPv4 is still enforced');
    } finally {
      bridgeSwitch(1);
      for (const svc of services) await svc.close();
      await kv.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('conntrack bypass over both families: IPv6 pod-to-pod untracked while no policy applies, an IPv6 DNAT to a pod still answered, tracked again under a policy', async () => {
    await enforcer.remove();
    const networks = [parseCidr('10.79.0.0/16'), parseCidr('fd00:79::/48')];
    const bypass = new PolicyEnforcer({ host: 'node-a', nft: netnsNft(host), conntrackBypass: networks });
    const [web, db, client] = [pod('web'), pod('db'), pod('client')];
    // What kube-proxy does for an IPv6 ClusterIP: DNAT in prerouting to a pod on this bridge.
    // The reply goes straight back across the bridge, pod to pod, where notrack would lose its un-DNAT.
    const VIP = '2001:2:0:99::1';
    await nftApply([
      'add table ip6 wp6-svc',
      'add chain ip6 wp6-svc pre { type nat hook prerouting priority dstnat; policy accept; }',
      `add rule ip6 wp6-svc pre ip6 daddr ${VIP} tcp dport 80 dnat to [${ipOf(db, 6)}]:8080`,
      ...observerScript('wp6-observe', -10, 'meta nfproto ipv6 meta l4proto tcp'),
    ].join('\n') + '\n', { netns: host });
    const counted = () => observedCounts(host, 'wp6-observe');

    await bypass.remove();
    assert.deepEqual(bypassChains(host), bypassShape(networks, true).chains);
    let was = counted();
    assert.deepEqual((await probeFrom(client.netns, [{ ip: ipOf(web, 6), proto: 'tcp', port: 8080 }, { ip: ipOf(db, 6), proto: 'tcp', port: 9090 }], PROBE_TIMEOUT_MS)).map((r) => r.ok), [true, true]);
    let now = counted();
    assert.ok(now.untracked - was.untracked >= 8, `IPv6 pod-to-pod TCP went untracked: ${JSON.stringify({ was, now })}`);
    assert.equal(now.tracked, was.tracked, 'no IPv6 pod-to-pod TCP packet was tracked');
    assert.deepEqual((await probeFrom(client.netns, [{ ip: VIP, proto: 'tcp', port: 80 }], PROBE_TIMEOUT_MS)).map((r) => r.ok), [true], 'the DNATed connection is answered from the address it was made to');

    const r = await bypass.update(world([policy('prod', 'from-client', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } }, namespaceSelector: {} }], ports: [{ port: 8080 }] }] })]), guard);
    assert.equal(r.type, 'replaced');
    assert.deepEqual(bypassChains(host), bypassShape(networks, false).chains, 'notrack gone, the learning stays');
    was = counted();
    assert.deepEqual((await probeFrom(client.netns, [
      { ip: ipOf(web, 6), proto: 'tcp', port: 8080 }, { ip: ipOf(web, 6), proto: 'tcp', port: 9090 }, { ip: VIP, proto: 'tcp', port: 80 },
    ], PROBE_TIMEOUT_MS)).map((r) => r.ok), [true, false, true]);
    now = counted();
    assert.equal(now.untracked, was.untracked, 'nothing untracked while a policy applies');
    assert.ok(now.tracked > was.tracked);
    await bypass.remove();
  });
});

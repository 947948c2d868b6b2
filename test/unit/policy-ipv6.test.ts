// NetworkPolicy over IPv6 and dual stack: the evaluator's family semantics (an ipBlock of one
// family never matches the other, pod peers cover every address of their pods), the compiler's
// per-family sets, maps and rules for IPv6-only and dual-stack endpoints, the forward chain's
// neighbour discovery and link-local rules, and verdict counters of IPv6 elements.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { type Endpoint, type NetworkPolicy, type PolicyWorld, type Protocol, parsePolicy } from '../../src/policy/model.js';
import { allowed } from '../../src/policy/evaluate.js';
import { type CompiledPolicy, LINK_LOCAL_DROP, ND_ACCEPT, compilePolicies, diffElements } from '../../src/policy/compile.js';
import { VerdictCounters, readSources } from '../../src/policy/counters.js';

const ep = (namespace: string, pod: string, ips: string[], labels: Record<string, string>, host = 'h1', namedPorts?: Endpoint['namedPorts']): Endpoint =>
  ({ namespace, pod, labels, ips: ips.map(parseIP), host, ifname: 'eth0', ...(namedPorts ? { namedPorts } : {}) });

/** Dual-stack, local. */
const web = ep('prod', 'web', ['10.0.0.1', 'fd00::1'], { app: 'web' }, 'h1', { http: { port: 8080, protocol: 'TCP' } });
/** Dual-stack, remote. */
const db = ep('prod', 'db', ['10.0.0.2', 'fd00::2'], { app: 'db' }, 'h2');
/** IPv6-only, remote. */
const tool = ep('dev', 'tool', ['fd00::1:5'], { app: 'tool' }, 'h2', { http: { port: 9090, protocol: 'TCP' } });
/** IPv4-only, remote. */
const legacy = ep('dev', 'legacy', ['10.0.1.6'], { app: 'legacy' }, 'h2');
const ENDPOINTS = [web, db, tool, legacy];

const pol = (ns: string, name: string, spec: Record<string, unknown>): NetworkPolicy => parsePolicy({ metadata: { name, namespace: ns }, spec });
const world = (policies: NetworkPolicy[], endpoints = ENDPOINTS): PolicyWorld =>
  ({ endpoints, namespaces: [{ name: 'prod', labels: { env: 'prod' } }, { name: 'dev', labels: { env: 'dev' } }], policies });
const conn = (src: string, dst: string, port = 80, protocol: Protocol | 'ICMP' = 'TCP') => ({ src: parseIP(src), dst: parseIP(dst), protocol, port });

const chainOf = (c: CompiledPolicy, prefix: string) => {
  const ch = [...c.chains.values()].find((x) => x.name.startsWith(prefix));
  assert.ok(ch, `no chain ${prefix}…`);
  return ch;
};
const forwardOf = (c: CompiledPolicy) => c.chains.get('forward')?.rules ?? [];

describe('policy evaluator over IPv6 and dual stack', () => {
  it('an ipBlock of one family never matches an address of the other; ::/0 and 0.0.0.0/0 are each one family', () => {
    const w = world([
      pol('prod', 'v4-only', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0' } }] }] }),
      pol('prod', 'v6-only', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ ipBlock: { cidr: '::/0' } }] }] }),
    ]);
    assert.equal(allowed(conn('198.18.0.9', '10.0.0.1'), w), true);
    assert.equal(allowed(conn('2001:2::9', 'fd00::1'), w), false, 'web allows only IPv4 blocks: IPv6 to it is denied');
    assert.equal(allowed(conn('fd00::1:5', 'fd00::1'), w), false);
    assert.equal(allowed(conn('2001:2::9', 'fd00::2'), w), true);
    assert.equal(allowed(conn('198.18.0.9', '10.0.0.2'), w), false, 'db allows only IPv6 blocks: IPv4 to it is denied');
  });

  it('IPv6 ipBlock except, ingress and egress', () => {
    const w = world([
      pol('prod', 'in', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '2001:2::/48', except: ['2001:2:0:1::/64'] } }] }] }),
      pol('prod', 'out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: 'fd00::/112', except: ['fd00::2/128'] } }] }] }),
    ]);
    assert.equal(allowed(conn('2001:2::9', 'fd00::1'), w), true);
    assert.equal(allowed(conn('2001:2:0:1::9', 'fd00::1'), w), false);
    assert.equal(allowed(conn('2001:3::9', 'fd00::1'), w), false);
    assert.equal(allowed(conn('fd00::1', 'fd00::1:5'), w), false, 'fd00::1:5 is not in fd00::/112');
    assert.equal(allowed(conn('fd00::1', 'fd00::2'), w), false, 'the except');
    assert.equal(allowed(conn('fd00::1', 'fd00::9'), w), true);
    assert.equal(allowed(conn('10.0.0.1', '10.0.0.2'), w), false, 'no IPv4 block: IPv4 egress is denied');
  });

  it('pod peers cover every address of their pods, of either family', () => {
    const w = world([pol('prod', 'from-dev', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }] }] })]);
    assert.equal(allowed(conn('fd00::1:5', 'fd00::1'), w), true, 'IPv6-only pod');
    assert.equal(allowed(conn('10.0.1.6', '10.0.0.1'), w), true, 'IPv4-only pod');
    assert.equal(allowed(conn('fd00::2', 'fd00::1'), w), false, 'db is in prod');
    assert.equal(allowed(conn('2001:2::9', 'fd00::1'), w), false, 'not a pod');
  });

  it('ICMPv6 echo passes only rules without ports', () => {
    const withPorts = world([pol('prod', 'p', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] })]);
    const noPorts = world([pol('prod', 'p', { podSelector: {}, ingress: [{ from: [{ podSelector: {}, namespaceSelector: {} }] }] })]);
    assert.equal(allowed(conn('fd00::1:5', 'fd00::1', 0, 'ICMP'), withPorts), false);
    assert.equal(allowed(conn('fd00::1:5', 'fd00::1', 0, 'ICMP'), noPorts), true);
  });
});

describe('policy compiler over IPv6 and dual stack', () => {
  it('a dual-stack endpoint reaches one chain from both families\' maps and sits in both deny sets', () => {
    const c = compilePolicies(world([pol('prod', 'deny', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })]), 'h1');
    const ing = chainOf(c, 'ing-').name;
    const egr = chainOf(c, 'egr-').name;
    assert.deepEqual(c.sets.get('ingress-4')?.elements, [`10.0.0.1 : jump ${ing}`]);
    assert.deepEqual(c.sets.get('ingress-6')?.elements, [`fd00::1 : jump ${ing}`]);
    assert.deepEqual(c.sets.get('egress-6')?.elements, [`fd00::1 : jump ${egr}`]);
    assert.deepEqual(c.sets.get('ingress-deny-6')?.elements, ['fd00::1']);
    assert.deepEqual(c.sets.get('egress-deny-6')?.elements, ['fd00::1']);
    assert.equal(c.sets.get('ingress-6')?.type, 'ipv6_addr : verdict');
    assert.deepEqual(chainOf(c, 'ing-').rules.filter((r) => r.includes('drop')), [
      'ip daddr @ingress-deny-4 counter drop comment "ingress not allowed by prod/deny"',
      'ip6 daddr @ingress-deny-6 counter drop comment "ingress not allowed by prod/deny"',
      'counter drop comment "ingress not allowed by prod/deny"',
    ]);
    const fwd = forwardOf(c);
    for (const r of ['ip saddr vmap @egress-4', 'ip6 saddr vmap @egress-6', 'ip daddr vmap @ingress-4', 'ip6 daddr vmap @ingress-6']) assert.ok(fwd.includes(r), r);
  });

  it('an IPv6-only local endpoint is in the IPv6 map only', () => {
    const local = ep('dev', 'tool', ['fd00::1:5'], { app: 'tool' });
    const c = compilePolicies(world([pol('dev', 'deny', { podSelector: {} })], [local]), 'h1');
    assert.deepEqual(c.sets.get('ingress-4')?.elements, []);
    assert.equal(c.sets.get('ingress-6')?.elements.length, 1);
    assert.deepEqual([...c.layout.isolated.get('ingress') ?? []], ['dev/tool']);
    assert.equal(c.layout.addresses.get('fd00::1:5'), 'dev/tool');
  });

  it('a pod peer is one set per family holding each member\'s addresses of that family, and one rule per family', () => {
    const c = compilePolicies(world([pol('prod', 'from-all', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: {} }] }] })]), 'h1');
    const sets = [...c.sets.values()].filter((s) => s.name.startsWith('pods-'));
    assert.deepEqual(sets.map((s) => [s.name.slice(-2), s.type, s.elements]), [
      ['-4', 'ipv4_addr', ['10.0.0.1', '10.0.0.2', '10.0.1.6']],
      ['-6', 'ipv6_addr', ['fd00::1', 'fd00::1:5', 'fd00::2']],
    ]);
    const base = sets[0]!.name.slice(0, -2);
    assert.deepEqual(chainOf(c, 'ing-').rules.filter((r) => r.includes('accept')), [
      `ip saddr @${base}-4 counter accept comment "prod/from-all ingress[0]"`,
      `ip6 saddr @${base}-6 counter accept comment "prod/from-all ingress[0]"`,
    ]);
  });

  it('an ipBlock rule is written for its own family only, except included; the other family is left to the default deny', () => {
    const c = compilePolicies(world([pol('prod', 'web', { podSelector: { matchLabels: { app: 'web' } }, ingress: [
      { from: [{ ipBlock: { cidr: '2001:2::/48', except: ['2001:2:0:1::/64', '2001:2:0:2::5/128'] } }], ports: [{ port: 8080 }] },
      { from: [{ ipBlock: { cidr: '198.18.0.0/15' } }] },
    ] })]), 'h1');
    assert.deepEqual(chainOf(c, 'ing-').rules.filter((r) => r.includes('accept')), [
      'ip6 saddr 2001:2::/48 ip6 saddr != { 2001:2:0:1::/64, 2001:2:0:2::5/128 } meta l4proto tcp th dport 8080 counter accept comment "prod/web ingress[0]"',
      'ip saddr 198.18.0.0/15 counter accept comment "prod/web ingress[1]"',
    ]);
  });

  it('named ports: ingress resolved on the endpoint for both families, egress through one set per family', () => {
    const c = compilePolicies(world([
      pol('prod', 'in', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 'http' }] }] }),
      pol('prod', 'out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ port: 'http' }] }] }),
    ]), 'h1');
    assert.deepEqual(chainOf(c, 'ing-').rules.filter((r) => r.includes('accept')), ['meta l4proto tcp th dport 8080 counter accept comment "prod/in ingress[0]"']);
    assert.deepEqual(c.sets.get('np-http-6')?.elements, ['fd00::1 . tcp . 8080', 'fd00::1:5 . tcp . 9090']);
    assert.deepEqual(c.sets.get('np-http-4')?.elements, ['10.0.0.1 . tcp . 8080']);
    assert.equal(c.sets.get('np-http-6')?.type, 'ipv6_addr . inet_proto . inet_service');
    assert.ok(chainOf(c, 'egr-').rules.some((r) => r.includes('meta l4proto tcp ip6 daddr . meta l4proto . th dport @np-http-6 counter return')));
  });

  it('one deny log rule per chain serves both families', () => {
    const c = compilePolicies(world([pol('prod', 'deny', { podSelector: {} })]), 'h1');
    assert.deepEqual(chainOf(c, 'ing-').rules.filter((r) => r.includes(' log ')), ['limit name "deny-log" log prefix "weft-deny:ingress:prod/deny" group 7']);
  });

  it('forward: neighbour discovery passes before the guard and the maps; link-local between pods is dropped where a local pod is isolated', () => {
    const guard = { subnets: [parseCidr('10.0.0.0/24'), parseCidr('fd00::/64')], extraKnown: [] };
    const fwd = forwardOf(compilePolicies(world([pol('prod', 'deny', { podSelector: {} })]), 'h1', guard));
    assert.deepEqual(fwd.slice(0, 5), ['ct state established,related accept', 'ct state invalid drop', ND_ACCEPT, ...LINK_LOCAL_DROP]);
    assert.match(ND_ACCEPT, /nd-neighbor-solicit, nd-neighbor-advert.* ip6 hoplimit 255 accept/);
    const firstGuard = fwd.findIndex((r) => r.includes('unknown local pod'));
    const firstMap = fwd.findIndex((r) => r.includes('vmap'));
    assert.ok(fwd.indexOf(ND_ACCEPT) < firstGuard && firstGuard < firstMap, 'a new pod resolves its neighbours before weftd knows it');
    // Nothing isolated on h2 (only web is, on h1): no link-local rule there, ND still passes.
    const h2 = forwardOf(compilePolicies(world([pol('prod', 'deny', { podSelector: { matchLabels: { app: 'web' } } })]), 'h2'));
    assert.ok(h2.includes(ND_ACCEPT));
    assert.ok(!h2.some((r) => r.includes('fe80::')));
  });

  it('an IPv4-only world gets no IPv6 rules', () => {
    const v4 = [ep('prod', 'web', ['10.0.0.1'], { app: 'web' }), ep('prod', 'db', ['10.0.0.2'], { app: 'db' }, 'h2')];
    const c = compilePolicies(world([pol('prod', 'deny', { podSelector: {} })], v4), 'h1');
    assert.deepEqual(forwardOf(c), ['ct state established,related accept', 'ct state invalid drop', 'ip saddr vmap @egress-4', 'ip daddr vmap @ingress-4']);
    assert.ok(![...c.sets.keys()].some((n) => n.endsWith('-6')));
  });

  it('a node with an IPv6 subnet guards it before its first IPv6 pod is known', () => {
    const v4 = [ep('prod', 'web', ['10.0.0.1'], { app: 'web' })];
    const guard = { subnets: [parseCidr('10.0.0.0/24'), parseCidr('fd00::/64')], extraKnown: [] };
    const c = compilePolicies(world([pol('prod', 'deny', { podSelector: {} })], v4), 'h1', guard);
    assert.deepEqual(c.sets.get('local-6')?.elements, []);
    assert.ok(forwardOf(c).includes('ip6 saddr fd00::/64 ip6 saddr != @local-6 drop comment "unknown local pod"'));
    assert.ok(forwardOf(c).includes('ip6 daddr fd00::/64 ip6 daddr != @local-6 drop comment "unknown local pod"'));
    // Its first IPv6 pod is an element update, not a rebuild.
    const later = compilePolicies(world([pol('prod', 'deny', { podSelector: {} })], [ep('prod', 'web', ['10.0.0.1', 'fd00::1'], { app: 'web' })]), 'h1', guard);
    assert.equal(later.structure, c.structure);
    assert.match(diffElements(c, later).script, /add element inet weft-policy ingress-6 \{ fd00::1 : jump ing-/);
  });

  it('verdict counters: IPv6 elements as nft lists them count for their pod, added to its IPv4 ones', () => {
    const c = compilePolicies(world([pol('prod', 'deny', { podSelector: {} })]), 'h1');
    const ing = chainOf(c, 'ing-').name;
    const elem = (val: string, packets: number) => ({ elem: { val, counter: { packets, bytes: packets * 100 } } });
    const listing = [
      { map: { name: 'ingress-4', elem: [[elem('10.0.0.1', 3), { jump: { target: ing } }]] } },
      { map: { name: 'ingress-6', elem: [[elem('fd00::1', 5), { jump: { target: ing } }]] } },
      { set: { name: 'ingress-deny-4', elem: [elem('10.0.0.1', 1)] } },
      { set: { name: 'ingress-deny-6', elem: [elem('fd00::1', 4)] } },
    ];
    const counters = new VerdictCounters();
    counters.observe(readSources(listing, c.layout));
    const web = counters.totals(c.layout).endpoints.filter((e) => e.pod === 'web' && e.direction === 'ingress').map((e) => [e.verdict, e.packets]);
    assert.deepEqual(web, [['allowed', 3], ['denied', 5]], 'seen 3 + 5, denied 1 + 4');
  });
});

// The conntrack bypass's nft text (src/policy/bypass.ts): the notrack and NAT learning rules,
// in-place rewrites versus recreation, the shape repair() compares, and the seed read from
// /proc/net/nf_conntrack. The kernel's side is in test/netns/policy-bypass*.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import {
  BYPASS_SET_SIZE, bypassDifference, bypassShape, parseConntrackNat, planBypass, renderBypass, renderBypassRemove,
} from '../../src/policy/bypass.js';

const v4 = [parseCidr('10.244.0.0/16')];
const dual = [parseCidr('10.244.0.0/16'), parseCidr('fd44::/48')];
const T = 'inet weft-notrack';

const rules = (script: string, chain: string) => script.split('\n').filter((l) => l.startsWith(`add rule ${T} ${chain} `)).map((l) => l.slice(`add rule ${T} ${chain} `.length));

describe('renderBypass', () => {
  it('notrack for pod-to-pod packets not addressed to the host, learnt NATed connections excepted', () => {
    const s = renderBypass(v4, { notrack: true });
    assert.deepEqual(rules(s, 'prerouting'), [
      'ip saddr { 10.244.0.0/16 } ip daddr { 10.244.0.0/16 } fib daddr type != local jump notrack-ip comment "weft: pod to pod, no network policy on this host"',
    ]);
    assert.deepEqual(rules(s, 'notrack-ip'), [
      'ip saddr . meta l4proto . th sport . ip daddr . th dport @nat-tuples-ip return comment "weft: a NATed connection stays tracked, conntrack un-NATs its replies"',
      'notrack',
    ]);
    assert.match(s, new RegExp(`add set ${T} nat-tuples-ip \\{ type ipv4_addr \\. inet_proto \\. inet_service \\. ipv4_addr \\. inet_service; size ${BYPASS_SET_SIZE}; flags dynamic,timeout; timeout 6d; \\}`));
    assert.match(s, new RegExp(`add chain ${T} prerouting \\{ type filter hook prerouting priority raw; policy accept; \\}`));
    assert.match(s, new RegExp(`add chain ${T} learn-requests \\{ type filter hook postrouting priority srcnat \\+ 10; policy accept; \\}`));
    assert.match(s, new RegExp(`add chain ${T} learn-replies \\{ type filter hook prerouting priority mangle; policy accept; \\}`));
  });

  it('learns NATed pod-to-pod connections: requests after NAT, replies before un-NAT, each adding its tuple and the mirror, for as long as conntrack keeps them', () => {
    const s = renderBypass(v4, { notrack: true });
    const gate = 'ct status snat,dnat ip saddr { 10.244.0.0/16 } ip daddr { 10.244.0.0/16 } meta l4proto { tcp, udp, sctp } jump learn-ip';
    assert.deepEqual(rules(s, 'learn-requests'), [`ct direction original ${gate} comment "weft: learn a NATed pod-to-pod connection from its request"`]);
    assert.deepEqual(rules(s, 'learn-replies'), [`ct direction reply ${gate} comment "weft: learn a NATed pod-to-pod connection from its reply"`]);
    const own = 'ip saddr . meta l4proto . th sport . ip daddr . th dport';
    const mirror = 'ip daddr . meta l4proto . th dport . ip saddr . th sport';
    const both = (t: string) => `update @nat-tuples-ip { ${own} timeout ${t} } update @nat-tuples-ip { ${mirror} timeout ${t} } return`;
    assert.deepEqual(rules(s, 'learn-ip'), [
      `ct expiration < 1m ${both('1m')}`,
      `ct expiration < 10m ${both('10m')}`,
      both('6d'),
      'counter comment "weft: a NATed connection could not be learnt (set full), its replies lose their un-NAT"',
    ]);
    // What the notrack chain looks up is a packet's own tuple, as learnt.
    assert.ok(rules(s, 'notrack-ip')[0]!.startsWith(`${own} @nat-tuples-ip return`));
  });

  it('rewrites in place (sets and their elements kept, chains flushed); recreates only when asked', () => {
    const s = renderBypass(v4, { notrack: true });
    assert.ok(s.startsWith(`add table ${T}\nadd set `), s.slice(0, 80));
    assert.doesNotMatch(s, /delete table|flush set|delete set/);
    for (const c of ['learn-requests', 'learn-replies', 'prerouting', 'learn-ip', 'notrack-ip']) assert.ok(s.includes(`flush chain ${T} ${c}\n`), c);
    assert.ok(renderBypass(v4, { notrack: true, recreate: true }).startsWith(`add table ${T}\ndelete table ${T}\nadd table ${T}\n`));
  });

  it('with a policy table: the learning half only, the prerouting chain deleted in the same script', () => {
    const s = renderBypass(v4, { notrack: false });
    assert.deepEqual(rules(s, 'prerouting'), []);
    assert.ok(s.includes(`flush chain ${T} prerouting\ndelete chain ${T} prerouting\n`));
    assert.equal(rules(s, 'learn-ip').length, 4);
    assert.equal(rules(s, 'learn-requests').length, 1);
    assert.equal(rules(s, 'learn-replies').length, 1);
    assert.equal(rules(s, 'notrack-ip').length, 2, 'unreferenced while no prerouting jumps to it');
  });

  it('an IPv6 network gets its own set and chains', () => {
    const s = renderBypass(dual, { notrack: true });
    assert.match(s, /add set inet weft-notrack nat-tuples-ip6 \{ type ipv6_addr \. inet_proto \. inet_service \. ipv6_addr \. inet_service;/);
    assert.deepEqual(rules(s, 'prerouting').map((r) => r.split(' jump ')[0]), [
      'ip saddr { 10.244.0.0/16 } ip daddr { 10.244.0.0/16 } fib daddr type != local',
      'ip6 saddr { fd44::/48 } ip6 daddr { fd44::/48 } fib daddr type != local',
    ]);
    assert.equal(rules(s, 'notrack-ip6')[0], 'ip6 saddr . meta l4proto . th sport . ip6 daddr . th dport @nat-tuples-ip6 return comment "weft: a NATed connection stays tracked, conntrack un-NATs its replies"');
    assert.equal(rules(s, 'learn-ip6').length, 4);
    assert.match(rules(s, 'learn-requests')[1]!, /^ct direction original ct status snat,dnat ip6 saddr \{ fd44::\/48 \}/);
  });

  it('seed elements: the reply tuple and its mirror, with the lifetime the learn rules would give them', () => {
    const seed = parseConntrackNat([
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=10.96.0.10 sport=40000 dport=80 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2',
      'ipv4     2 udp      17 28 src=10.244.0.2 dst=10.96.0.10 sport=5000 dport=53 src=10.244.1.3 dst=10.244.0.2 sport=5353 dport=5000 mark=0 zone=0 use=2',
      'ipv4     2 tcp      6 117 TIME_WAIT src=10.244.0.2 dst=10.96.0.10 sport=40001 dport=80 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=40001 [ASSURED] mark=0 zone=0 use=2',
    ].join('\n'), v4);
    const s = renderBypass(v4, { notrack: true, seed });
    assert.ok(s.endsWith(`add element ${T} nat-tuples-ip { ${[
      '10.244.1.2 . tcp . 8080 . 10.244.0.2 . 40000 timeout 6d', '10.244.0.2 . tcp . 40000 . 10.244.1.2 . 8080 timeout 6d',
      '10.244.1.3 . udp . 5353 . 10.244.0.2 . 5000 timeout 1m', '10.244.0.2 . udp . 5000 . 10.244.1.3 . 5353 timeout 1m',
      '10.244.1.2 . tcp . 8080 . 10.244.0.2 . 40001 timeout 10m', '10.244.0.2 . tcp . 40001 . 10.244.1.2 . 8080 timeout 10m',
    ].join(', ')} }\n`), s.slice(-500));
  });

  it('removal deletes the table whether or not it exists', () => {
    assert.equal(renderBypassRemove(), `add table ${T}\ndelete table ${T}\n`);
  });
});

describe('bypass shape, repair and plan', () => {
  const shape = (chains: Record<string, number>, sets: string[]) => ({ chains, sets: Object.fromEntries(sets.map((n) => [n, 0])) });
  const chains = { 'learn-requests': 1, 'learn-replies': 1, prerouting: 1, 'learn-ip': 4, 'notrack-ip': 2 };
  const full = () => shape(chains, ['nat-tuples-ip']);

  it('the shape: rules per chain, prerouting only with notrack', () => {
    assert.deepEqual(bypassShape(v4, true), { chains, sets: ['nat-tuples-ip'] });
    assert.deepEqual(bypassShape(dual, false).chains, { 'learn-requests': 2, 'learn-replies': 2, 'learn-ip': 4, 'notrack-ip': 2, 'learn-ip6': 4, 'notrack-ip6': 2 });
  });

  it('differences repair() acts on (set elements are the kernel\'s and never compared)', () => {
    assert.equal(bypassDifference(full(), v4, true), undefined);
    assert.equal(bypassDifference({ ...full(), sets: { 'nat-tuples-ip': 12345 } }, v4, true), undefined);
    assert.equal(bypassDifference(undefined, v4, true), 'weft-notrack is missing');
    assert.equal(bypassDifference(full(), v4, false), 'weft-notrack notrack (chain prerouting) exists next to the policy table');
    const { prerouting: _p, ...learning } = chains;
    assert.equal(bypassDifference(shape(learning, ['nat-tuples-ip']), v4, true), 'weft-notrack chain prerouting is missing');
    assert.equal(bypassDifference(shape(learning, ['nat-tuples-ip']), v4, false), undefined);
    assert.equal(bypassDifference(shape({ ...chains, 'learn-ip': 0 }, ['nat-tuples-ip']), v4, true), 'weft-notrack chain learn-ip has 0 rules, expected 4');
    assert.equal(bypassDifference(shape(chains, []), v4, true), 'weft-notrack set nat-tuples-ip is missing');
    assert.equal(bypassDifference({ ...full(), chains: { ...full().chains, other: 0 } }, v4, true), 'weft-notrack has an unexpected chain other');
  });

  it('plan: rewrite in place, seed new sets, recreate tables this version does not know', () => {
    assert.deepEqual(planBypass(undefined, v4), { recreate: false, fresh: true });
    assert.deepEqual(planBypass(full(), v4), { recreate: false, fresh: false });
    // The table of a weftd before the learning: one prerouting chain, no sets.
    assert.deepEqual(planBypass(shape({ prerouting: 1 }, []), v4), { recreate: false, fresh: true });
    assert.deepEqual(planBypass(shape({ ...chains, stale: 0 }, ['nat-tuples-ip']), v4), { recreate: true, fresh: true });
    assert.deepEqual(planBypass(shape(chains, ['nat-tuples-ip', 'old-set']), v4), { recreate: true, fresh: true });
    // An IPv6 network dropped from the config: its chains are unknown now.
    assert.deepEqual(planBypass(shape(bypassShape(dual, true).chains, ['nat-tuples-ip', 'nat-tuples-ip6']), v4), { recreate: true, fresh: true });
  });
});

describe('parseConntrackNat', () => {
  it('keeps NATed connections between cluster addresses, with the reply tuple and remaining lifetime', () => {
    const text = [
      // ClusterIP → pod on another host; the request's destination was rewritten.
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=10.96.0.10 sport=40000 dport=80 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2',
      // Unreplied UDP to a ClusterIP (the flag sits between the tuples).
      'ipv4     2 udp      17 29 src=10.244.0.2 dst=10.96.0.10 sport=5000 dport=53 [UNREPLIED] src=10.244.1.3 dst=10.244.0.2 sport=53 dport=5000 mark=0 zone=0 use=2',
      // hostPort: the host's address DNATed to a pod.
      'ipv4     2 tcp      6 60 SYN_RECV src=10.244.0.5 dst=198.18.0.1 sport=41000 dport=8081 src=10.244.0.7 dst=10.244.0.5 sport=8080 dport=41000 mark=0 zone=0 use=2',
      // Port-only DNAT on a pod address.
      'ipv4     2 tcp      6 300 ESTABLISHED src=10.244.0.5 dst=10.244.0.7 sport=42000 dport=80 src=10.244.0.7 dst=10.244.0.5 sport=8080 dport=42000 [ASSURED] mark=0 zone=0 use=2',
      // A source port conntrack remapped (a clash with the DNATed connection above's reply tuple).
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=10.244.1.2 sport=40000 dport=8080 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=1024 [ASSURED] mark=0 zone=0 use=2',
      'ipv6     10 tcp      6 431000 ESTABLISHED src=fd44:0000:0000:0000:0000:0000:0000:0002 dst=fd96:0000:0000:0000:0000:0000:0000:000a sport=40000 dport=80 src=fd44:0000:0000:0001:0000:0000:0000:0002 dst=fd44:0000:0000:0000:0000:0000:0000:0002 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2',
    ].join('\n');
    assert.deepEqual(parseConntrackNat(text, dual).map((s) => ({ ...s, src: s.src.family === 4 ? s.src.value.toString(16) : 'v6', dst: s.dst.family === 4 ? s.dst.value.toString(16) : 'v6' })), [
      { proto: 'tcp', src: 'af40102', sport: 8080, dst: 'af40002', dport: 40000, expiresSeconds: 431999 },
      { proto: 'udp', src: 'af40103', sport: 53, dst: 'af40002', dport: 5000, expiresSeconds: 29 },
      { proto: 'tcp', src: 'af40007', sport: 8080, dst: 'af40005', dport: 41000, expiresSeconds: 60 },
      { proto: 'tcp', src: 'af40007', sport: 8080, dst: 'af40005', dport: 42000, expiresSeconds: 300 },
      { proto: 'tcp', src: 'af40102', sport: 8080, dst: 'af40002', dport: 1024, expiresSeconds: 431999 },
      { proto: 'tcp', src: 'v6', sport: 8080, dst: 'v6', dport: 40000, expiresSeconds: 431000 },
    ]);
    const [v6] = parseConntrackNat(text, dual).slice(5);
    assert.deepEqual([v6!.src, v6!.dst], [parseIP('fd44:0:0:1::2'), parseIP('fd44::2')]);
  });

  it('skips what needs no exemption and what it cannot read', () => {
    const text = [
      // Plain pod to pod (untracked under the bypass anyway, tracked with a policy): not DNATed.
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=10.244.1.2 sport=40000 dport=8080 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2',
      // Masqueraded egress: the reply is not pod to pod.
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.2 dst=1.1.1.1 sport=40000 dport=443 src=1.1.1.1 dst=198.18.0.1 sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2',
      // DNATed from outside the cluster network (a NodePort client): its reply is not pod to pod.
      'ipv4     2 tcp      6 431999 ESTABLISHED src=198.18.0.9 dst=198.18.0.1 sport=40000 dport=30080 src=10.244.0.7 dst=198.18.0.9 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2',
      // DNATed and masqueraded (hairpin): the reply goes to the host, which is never notracked.
      'ipv4     2 tcp      6 431999 ESTABLISHED src=10.244.0.7 dst=10.96.0.12 sport=40000 dport=80 src=10.244.0.7 dst=198.18.0.1 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2',
      'ipv4     2 icmp     1 29 src=10.244.0.2 dst=10.96.0.10 type=8 code=0 id=7 src=10.244.1.2 dst=10.244.0.2 type=0 code=0 id=7 mark=0 zone=0 use=2',
      'ipv4     2 tcp      6 soon ESTABLISHED src=10.244.0.2 dst=10.96.0.10 sport=1 dport=80 src=10.244.1.2 dst=10.244.0.2 sport=8080 dport=1',
      'ipv4     2 tcp      6 100 ESTABLISHED src=10.244.0.2 dst=10.96.0.10 sport=1 dport=80',
      'garbage',
      '',
    ].join('\n');
    assert.deepEqual(parseConntrackNat(text, v4), []);
  });
});

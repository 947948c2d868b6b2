// The RIB and the import policy with IPv6 routes beside IPv4 ones: separate keys and best paths,
// graceful-restart staleness per family, next-hop-self per family, reflection, the router id
// helper for IPv6-only nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PathAttributes } from '../../src/bgp/codec.js';
import { AddressSet, checkImport } from '../../src/bgp/policy.js';
import { type PeerInfo, Rib } from '../../src/bgp/rib.js';
import { routerIdFromIPv6 } from '../../src/bgp/router-id.js';
import { socketAddress } from '../../src/bgp/session.js';
import { formatIP, parseCidr, parseIP, parseIPv4 } from '../../src/net/ip.js';

const LOCAL_AS = 64512;
const rib = (): Rib => new Rib({ asn: LOCAL_AS, routerId: parseIPv4('10.0.0.1') });
function peer(addr: string, asn = LOCAL_AS, rrClient = false, bgpId = '10.9.9.9'): PeerInfo {
  return { id: formatIP(parseIP(addr)), address: parseIP(addr), asn, bgpId: parseIPv4(bgpId), rrClient };
}
const attrs = (nextHop: string, over: Partial<PathAttributes> = {}): PathAttributes => ({ origin: 0, asPath: [], nextHop: parseIP(nextHop), ...over });

test('IPv4 and IPv6 routes from one peer live side by side, each with its own best path', () => {
  const r = rib();
  const a = peer('2001:2::a', LOCAL_AS, false, '10.0.0.2');
  const b = peer('198.18.0.2', LOCAL_AS, false, '10.0.0.3');
  r.applyUpdate(a, [], attrs('198.18.0.9'), [parseCidr('10.244.1.0/24')]);
  r.applyUpdate(a, [], attrs('2001:2::9'), [parseCidr('fd00:10:244:1::/64')]);
  r.applyUpdate(b, [], attrs('2001:2::b', { localPref: 200 }), [parseCidr('fd00:10:244:1::/64')]);
  assert.equal(r.size, 2);
  const v6 = r.bestFor('fd00:10:244:1::/64');
  assert.equal(v6?.source.kind === 'peer' && v6.source.peer.id, '198.18.0.2', 'higher LOCAL_PREF wins among IPv6 candidates');
  assert.equal(v6?.attributes.nextHop && formatIP(v6.attributes.nextHop), '2001:2::b');
  const nh = (key: string): string | undefined => {
    const hop = r.bestFor(key)?.attributes.nextHop;
    return hop && formatIP(hop);
  };
  assert.equal(nh('10.244.1.0/24'), '198.18.0.9');
  // Withdrawing B's IPv6 route falls back to A's and leaves the IPv4 route alone.
  r.applyUpdate(b, [parseCidr('fd00:10:244:1::/64')], undefined, []);
  assert.equal(nh('fd00:10:244:1::/64'), '2001:2::9');
  assert.equal(nh('10.244.1.0/24'), '198.18.0.9');
  assert.deepEqual([...r.bestRoutes()].map((x) => x.key).sort(), ['10.244.1.0/24', 'fd00:10:244:1::/64']);
});

test('graceful restart per family: stale marking, End-of-RIB sweeps and drops touch one family only', () => {
  const r = rib();
  const a = peer('198.18.0.2');
  r.applyUpdate(a, [], attrs('198.18.0.2'), [parseCidr('10.1.0.0/24'), parseCidr('10.2.0.0/24')]);
  r.applyUpdate(a, [], attrs('2001:2::2'), [parseCidr('fd00:1::/64'), parseCidr('fd00:2::/64')]);
  assert.equal(r.markStale(a.id, 'ipv6'), 2);
  assert.equal(r.staleCount(a.id), 2);
  assert.equal(r.markStale(a.id, 'ipv4'), 2);
  // The peer came back and re-sent fd00:1::/64 and 10.1.0.0/24; IPv4's End-of-RIB arrives first.
  r.applyUpdate(a, [], attrs('2001:2::2'), [parseCidr('fd00:1::/64')]);
  r.applyUpdate(a, [], attrs('198.18.0.2'), [parseCidr('10.1.0.0/24')]);
  assert.deepEqual(r.sweepStale(a.id, 'ipv4').map((c) => c.key), ['10.2.0.0/24']);
  assert.equal(r.staleCount(a.id), 1, 'fd00:2::/64 still waits for IPv6\'s End-of-RIB');
  assert.deepEqual(r.sweepStale(a.id, 'ipv6').map((c) => c.key), ['fd00:2::/64']);
  assert.deepEqual(r.dropPeer(a.id, 'ipv6').map((c) => c.key), ['fd00:1::/64']);
  assert.equal(r.receivedCount(a.id), 1);
  assert.deepEqual(r.dropPeer(a.id).map((c) => c.key), ['10.1.0.0/24']);
  assert.equal(r.receivedCount(a.id), 0);
});

test('export: eBGP needs our own next hop in the route\'s family; reflection keeps the IPv6 next hop', () => {
  const r = rib();
  r.addLocal(parseCidr('fd00:10:244:7::/64'), attrs('2001:2::7', { localPref: 100 }));
  const local = r.bestFor('fd00:10:244:7::/64');
  assert.ok(local);
  const ebgp = peer('198.18.1.2', 65001);
  assert.equal(r.exportFor(local, ebgp, undefined), undefined, 'an IPv6 route over an IPv4 session without an IPv6 address');
  const out = r.exportFor(local, ebgp, parseIP('2001:2::1'));
  assert.equal(out?.nextHop && formatIP(out.nextHop), '2001:2::1');
  assert.deepEqual(out?.asPath, [{ type: 'sequence', asns: [LOCAL_AS] }]);
  const ibgp = peer('198.18.0.3');
  const toIbgp = r.exportFor(local, ibgp, undefined);
  assert.equal(toIbgp?.nextHop && formatIP(toIbgp.nextHop), '2001:2::7', 'iBGP keeps the next hop');
  // RFC 4456 over IPv6: a client's route reaches the other client unchanged but for ORIGINATOR_ID and CLUSTER_LIST.
  const c1 = peer('2001:2::c1', LOCAL_AS, true, '10.0.0.11');
  const c2 = peer('2001:2::c2', LOCAL_AS, true, '10.0.0.12');
  r.applyUpdate(c1, [], attrs('2001:2::c1'), [parseCidr('fd00:c1::/64')]);
  const fromC1 = r.bestFor('fd00:c1::/64');
  assert.ok(fromC1);
  const refl = r.exportFor(fromC1, c2, parseIP('2001:2::1'));
  assert.equal(refl?.nextHop && formatIP(refl.nextHop), '2001:2::c1');
  assert.equal(refl?.originatorId && formatIP(refl.originatorId), '10.0.0.11');
  assert.deepEqual(refl?.clusterList?.map(formatIP), ['10.0.0.1']);
});

test('import policy with IPv6: next hop inside the prefix, a peer address inside it, connected subnets', () => {
  const peers = new AddressSet([parseIP('198.18.0.2'), parseIP('2001:2::2'), parseIP('2001:2:0:1::9')]);
  const check = (p: string, nh: string): string | undefined => checkImport({ protect: [parseCidr('fd00:99::/64')] }, peers, parseCidr(p), attrs(nh))?.reason;
  assert.equal(check('2001:2::/64', '2001:3::1'), 'contains-peer-address');
  assert.equal(check('2001:2:0:1::/64', '2001:3::1'), 'contains-peer-address');
  assert.equal(check('2001:3::/64', '2001:3::1'), 'contains-next-hop');
  assert.equal(check('fd00:99::/48', '2001:3::1'), 'overlaps-connected-subnet');
  assert.equal(check('fd00:10::/64', '2001:3::1'), undefined);
  // An IPv4 peer address is never inside an IPv6 prefix, however the bits line up.
  assert.equal(check('::c612:2/128', '2001:3::1'), undefined);
  assert.equal(new AddressSet([parseIP('2001:2::2')]).firstInside(parseCidr('198.18.0.0/16')), undefined);
});

test('routerIdFromIPv6: stable, distinct inside a /96 and for one host number across prefixes, never 0.0.0.0', () => {
  assert.equal(routerIdFromIPv6('2001:2::1'), routerIdFromIPv6(parseIP('2001:2::1')));
  // Every host of one /96 subnet: guaranteed distinct (the low 32 bits go through unchanged but for one XOR).
  const inSubnet = Array.from({ length: 2000 }, (_, i) => routerIdFromIPv6(`2001:2::${(i + 1).toString(16)}`));
  assert.equal(new Set(inSubnet).size, inSubnet.length);
  // Rack-style plans: the same host number in many prefixes, which the low 32 bits alone would map to one id.
  const racks = Array.from({ length: 2000 }, (_, i) => routerIdFromIPv6(`2001:2:${(i >> 8).toString(16)}:${(i & 255).toString(16)}::1`));
  assert.equal(new Set(racks).size, racks.length);
  assert.ok([...inSubnet, ...racks].every((id) => /^\d+\.\d+\.\d+\.\d+$/.test(id) && id !== '0.0.0.0'));
  assert.notEqual(routerIdFromIPv6('::'), '0.0.0.0');
  assert.throws(() => routerIdFromIPv6('198.18.0.1'), /needs an IPv6 address/);
});

test('socket addresses: IPv4-mapped ones are IPv4, zones are dropped', () => {
  assert.equal(formatIP(socketAddress('::ffff:198.18.0.2')), '198.18.0.2');
  assert.equal(socketAddress('::ffff:198.18.0.2').family, 4);
  assert.equal(formatIP(socketAddress('fe80::1%eth0')), 'fe80::1');
  assert.equal(formatIP(socketAddress('2001:2:0:0::1')), '2001:2::1');
});

// The import policy (src/bgp/policy.ts) and how the RIB applies it: which learned prefixes may
// become routes, what a refusal does to an earlier accepted route, re-running the policy when
// it changes — and that a refused route is never passed on to another peer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PathAttributes } from '../../src/bgp/codec.js';
import { AddressSet, type ImportPolicy, type ImportRejection, checkImport, describeRejection } from '../../src/bgp/policy.js';
import { type PeerInfo, type RefusedRoute, Rib } from '../../src/bgp/rib.js';
import { bgpConfig } from '../../src/backends/bgp/bgp.js';
import { parseNetworkConfig } from '../../src/store/config.js';
import { type Cidr, formatCidr, formatIP, parseCidr, parseIPv4 } from '../../src/net/ip.js';

const LOCAL_AS = 64512;
const CLUSTER = parseCidr('10.244.0.0/16');
const UNDERLAY = parseCidr('198.18.0.0/24');
const LOOPBACK = parseCidr('127.0.0.0/8');
const BIRD = '198.18.0.254';

function peer(addr: string, asn = LOCAL_AS, rrClient = false): PeerInfo {
  return { id: addr, address: parseIPv4(addr), asn, bgpId: parseIPv4(addr), rrClient };
}
function attrs(nextHop: string, over: Partial<PathAttributes> = {}): PathAttributes {
  return { origin: 0, asPath: [{ type: 'sequence', asns: [65000] }], nextHop: parseIPv4(nextHop), ...over };
}
const peers = (...a: string[]): AddressSet => new AddressSet(a.map(parseIPv4));

test('policy: what a host with the cluster Network, its underlay and two peers accepts', () => {
  const policy: ImportPolicy = { allow: [CLUSTER], protect: [UNDERLAY, LOOPBACK] };
  const known = peers('198.18.0.2', BIRD);
  const verdict = (prefix: string, nh = BIRD): string => checkImport(policy, known, parseCidr(prefix), attrs(nh))?.reason ?? 'accept';
  assert.equal(verdict('10.244.3.0/24', '198.18.0.3'), 'accept');
  assert.equal(verdict('10.244.0.0/16'), 'accept', 'the Network itself is inside the Network');
  assert.equal(verdict('198.18.0.0/24'), 'overlaps-connected-subnet', 'equal to the underlay');
  assert.equal(verdict('0.0.0.0/0'), 'overlaps-connected-subnet', 'covers the underlay');
  assert.equal(verdict('198.18.0.0/16'), 'overlaps-connected-subnet', 'covers the underlay');
  assert.equal(verdict('198.18.0.2/32'), 'overlaps-connected-subnet', 'inside the underlay (a peer)');
  assert.equal(verdict('127.0.0.1/32'), 'overlaps-connected-subnet');
  assert.equal(verdict('10.99.1.0/24'), 'outside-import-ranges');
  const opened: ImportPolicy = { allow: [CLUSTER, parseCidr('10.99.0.0/16')], protect: [UNDERLAY] };
  assert.equal(checkImport(opened, known, parseCidr('10.99.1.0/24'), attrs(BIRD)), undefined);
  assert.equal(checkImport(opened, known, parseCidr('10.98.0.0/15'), attrs(BIRD))?.reason, 'outside-import-ranges', 'covering an allowed range is not inside it');
});

test('policy: a prefix holding its own next hop or a peer\'s address is refused even with everything allowed', () => {
  const anything: ImportPolicy = { allow: [parseCidr('0.0.0.0/0')] };
  const known = peers('198.18.1.1', BIRD);
  const r1 = checkImport(anything, known, parseCidr('198.19.0.0/16'), attrs('198.19.0.7'));
  assert.deepEqual(r1 && [r1.reason, describeRejection(r1)], ['contains-next-hop', 'contains its own next hop 198.19.0.7']);
  const r2 = checkImport(anything, known, parseCidr('198.18.1.0/24'), attrs(BIRD));
  assert.deepEqual(r2 && [r2.reason, describeRejection(r2)], ['contains-peer-address', 'contains the BGP peer address 198.18.1.1']);
  assert.equal(checkImport(anything, known, parseCidr('198.18.2.0/24'), attrs(BIRD)), undefined);
  assert.equal(checkImport(anything, known, parseCidr('0.0.0.0/0'), attrs('192.0.2.1'))?.reason, 'contains-next-hop');
});

test('AddressSet finds a member inside a prefix at either edge, and forgets deleted ones', () => {
  const s = peers('10.0.0.0', '10.0.0.255', '10.0.1.0', '9.255.255.255');
  const first = (c: string): string | undefined => { const ip = s.firstInside(parseCidr(c)); return ip && formatIP(ip); };
  assert.equal(first('10.0.0.0/24'), '10.0.0.0');
  assert.equal(first('10.0.0.128/25'), '10.0.0.255');
  assert.equal(first('10.0.2.0/24'), undefined);
  assert.equal(first('0.0.0.0/0'), '9.255.255.255');
  s.delete(parseIPv4('10.0.0.0'));
  s.delete(parseIPv4('10.0.0.255'));
  assert.equal(first('10.0.0.0/24'), undefined);
  assert.equal(first('10.0.0.0/23'), '10.0.1.0');
});

/** A RIB with the policy a host would have, the policy replaceable as the backend does it. */
function ribWith(initial: ImportPolicy, peerAddrs: string[]): { rib: Rib; setPolicy(p: ImportPolicy): void } {
  let policy = initial;
  const known = peers(...peerAddrs);
  const rib = new Rib({ asn: LOCAL_AS, routerId: parseIPv4('198.18.0.1'), importCheck: (prefix, a) => checkImport(policy, known, prefix, a) });
  return { rib, setPolicy: (p) => { policy = p; } };
}
const keys = (cs: { key: string }[]): string[] => cs.map((c) => c.key);

test('RIB: refused prefixes never reach the Loc-RIB, stay counted in the Adj-RIB-In, and are reported once', () => {
  const { rib } = ribWith({ allow: [CLUSTER], protect: [UNDERLAY] }, [BIRD, '198.18.0.2']);
  const bird = peer(BIRD, 65000);
  const refused: RefusedRoute[] = [];
  const hijack: Cidr[] = ['198.18.0.0/24', '0.0.0.0/0', '198.18.0.2/32', '10.99.1.0/24'].map(parseCidr);
  const changes = rib.applyUpdate(bird, [], attrs(BIRD), [...hijack, parseCidr('10.244.7.0/24')], refused);
  assert.deepEqual(keys(changes), ['10.244.7.0/24']);
  assert.deepEqual([...rib.bestRoutes()].map((r) => r.key), ['10.244.7.0/24']);
  assert.deepEqual(refused.map((r) => [formatCidr(r.prefix), r.rejection.reason]), [
    ['198.18.0.0/24', 'overlaps-connected-subnet'], ['0.0.0.0/0', 'overlaps-connected-subnet'],
    ['198.18.0.2/32', 'overlaps-connected-subnet'], ['10.99.1.0/24', 'outside-import-ranges'],
  ]);
  assert.equal(rib.receivedCount(bird.id), 5);
  assert.equal(rib.rejectedCount(bird.id), 4);
  // The same announcement again (a route refresh, say) reports nothing new.
  const again: RefusedRoute[] = [];
  assert.deepEqual(rib.applyUpdate(bird, [], attrs(BIRD, { med: 5 }), hijack, again), []);
  assert.deepEqual(again, []);
  // A withdrawal of a refused prefix changes nothing in the Loc-RIB either.
  assert.deepEqual(rib.applyUpdate(bird, hijack, undefined, []), []);
  assert.equal(rib.rejectedCount(bird.id), 0);
});

test('RIB: a route refused on re-announcement is treated as withdrawn; not exported to any peer', () => {
  const { rib } = ribWith({ allow: [CLUSTER], protect: [UNDERLAY] }, [BIRD, '198.18.0.2']);
  const bird = peer(BIRD, 65000);
  const ibgp = peer('198.18.0.2');
  const p = parseCidr('10.244.9.0/24');
  assert.deepEqual(keys(rib.applyUpdate(bird, [], attrs(BIRD), [p])), ['10.244.9.0/24']);
  const best = rib.bestFor('10.244.9.0/24');
  assert.ok(best && rib.exportFor(best, ibgp, parseIPv4('198.18.0.1')), 'an accepted eBGP route goes to the iBGP peer');
  // Same prefix, now with a next hop inside it: refused, so the earlier route goes.
  const refused: RefusedRoute[] = [];
  const c = rib.applyUpdate(bird, [], attrs('10.244.9.1'), [p], refused);
  assert.deepEqual(c.map((x) => x.type), ['best-removed']);
  assert.equal(rib.bestFor('10.244.9.0/24'), undefined, 'nothing left to export');
  assert.deepEqual(refused.map((r) => r.rejection.reason), ['contains-next-hop']);
});

test('RIB: re-running a changed policy takes allowed routes in and refused ones out', () => {
  const { rib, setPolicy } = ribWith({ allow: [CLUSTER], protect: [UNDERLAY] }, [BIRD]);
  const bird = peer(BIRD, 65000);
  rib.applyUpdate(bird, [], attrs(BIRD), [parseCidr('10.99.1.0/24'), parseCidr('10.244.5.0/24')]);
  assert.deepEqual([...rib.bestRoutes()].map((r) => r.key), ['10.244.5.0/24']);
  setPolicy({ allow: [CLUSTER, parseCidr('10.99.0.0/16')], protect: [UNDERLAY] });
  assert.deepEqual(rib.reimport().map((c) => [c.type, c.key]), [['best-changed', '10.99.1.0/24']]);
  // The host gains an address in 10.244.5.0/24: the learned route for it must go.
  setPolicy({ allow: [CLUSTER, parseCidr('10.99.0.0/16')], protect: [UNDERLAY, parseCidr('10.244.5.0/24')] });
  const refused: RefusedRoute[] = [];
  assert.deepEqual(rib.reimport(undefined, refused).map((c) => [c.type, c.key]), [['best-removed', '10.244.5.0/24']]);
  assert.deepEqual(refused.map((r) => formatCidr(r.prefix)), ['10.244.5.0/24']);
  assert.deepEqual(rib.reimport(), [], 'nothing changes when run again');
});

test('RIB: a refused route kept over a graceful restart is swept like the others, and a peer drop is clean', () => {
  const { rib } = ribWith({ allow: [CLUSTER], protect: [UNDERLAY] }, [BIRD]);
  const bird = peer(BIRD, 65000);
  rib.applyUpdate(bird, [], attrs(BIRD), [parseCidr('0.0.0.0/0'), parseCidr('10.244.5.0/24')]);
  assert.equal(rib.markStale(bird.id), 2);
  assert.deepEqual(rib.sweepStale(bird.id).map((c) => c.key), ['10.244.5.0/24']);
  assert.equal(rib.receivedCount(bird.id), 0);
  rib.applyUpdate(bird, [], attrs(BIRD), [parseCidr('0.0.0.0/0')]);
  assert.deepEqual(rib.dropPeer(bird.id), []);
});

test('RIB: ORIGINATOR_ID and CLUSTER_LIST from an eBGP peer are discarded (RFC 7606 §7.9, §7.10), not used for loop detection', () => {
  const rib = new Rib({ asn: LOCAL_AS, routerId: parseIPv4('198.18.0.1') });
  const bird = peer(BIRD, 65000);
  // An external peer sets our own router id as ORIGINATOR_ID: meaningless from outside the AS.
  const c = rib.applyUpdate(bird, [], attrs(BIRD, { originatorId: parseIPv4('198.18.0.1'), clusterList: [parseIPv4('198.18.0.1')], localPref: 500 }), [parseCidr('10.244.5.0/24')]);
  assert.deepEqual(keys(c), ['10.244.5.0/24']);
  const r = rib.bestFor('10.244.5.0/24');
  assert.equal(r?.attributes.originatorId, undefined);
  assert.equal(r?.attributes.clusterList, undefined);
  assert.equal(r?.attributes.localPref, undefined);
  // From an iBGP peer they are kept, and our own id still means a loop.
  const ibgp = peer('198.18.0.2');
  assert.deepEqual(rib.applyUpdate(ibgp, [], attrs('198.18.0.2', { originatorId: parseIPv4('198.18.0.1') }), [parseCidr('10.244.6.0/24')]), []);
});

test('config: ImportPrefixes is a list of IPv4 CIDRs, default empty; bad entries and unknown keys are named', () => {
  assert.deepEqual(bgpConfig.parse({}).ImportPrefixes, []);
  assert.deepEqual(bgpConfig.parse({ ImportPrefixes: ['0.0.0.0/0', '10.99.0.0/16'] }).ImportPrefixes, ['0.0.0.0/0', '10.99.0.0/16']);
  const cfg = (extra: Record<string, unknown>): string => {
    try {
      parseNetworkConfig(JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'bgp', ...extra } }));
      return 'accepted';
    } catch (err) {
      return err instanceof Error ? err.message : String(err);
    }
  };
  assert.equal(cfg({ ImportPrefixes: ['10.99.0.0/16'] }), 'accepted');
  assert.match(cfg({ ImportPrefixes: ['10.99.0.0/33'] }), /Backend\.ImportPrefixes\.0: expected an IPv4 CIDR/);
  assert.match(cfg({ ImportPrefixes: ['fd00::/8'] }), /Backend\.ImportPrefixes\.0: expected an IPv4 CIDR/);
  assert.match(cfg({ ImportPrefixes: '10.99.0.0/16' }), /Backend\.ImportPrefixes: /);
  assert.match(cfg({ ImportPrefix: ['10.99.0.0/16'] }), /Backend\.ImportPrefix: unknown key/);
});

test('describeRejection names what was wrong for every reason', () => {
  const all: ImportRejection[] = [
    { reason: 'outside-import-ranges' },
    { reason: 'overlaps-connected-subnet', subnet: UNDERLAY },
    { reason: 'contains-next-hop', nextHop: parseIPv4('10.0.0.1') },
    { reason: 'contains-peer-address', peer: parseIPv4(BIRD) },
  ];
  assert.deepEqual(all.map(describeRejection), [
    'not inside the cluster network or any allowed import prefix',
    'overlaps the connected subnet 198.18.0.0/24',
    'contains its own next hop 10.0.0.1',
    'contains the BGP peer address 198.18.0.254',
  ]);
});

// Decision process, route reflection and graceful-restart staleness in the RIB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PathAttributes } from '../../src/bgp/codec.js';
import { type BestChange, type PeerInfo, Rib, asPathLength, prependAs } from '../../src/bgp/rib.js';
import { formatCidr, formatIP, parseCidr, parseIPv4 } from '../../src/net/ip.js';

const LOCAL_AS = 64512;
const rib = (): Rib => new Rib({ asn: LOCAL_AS, routerId: parseIPv4('10.0.0.1') });

function peer(addr: string, asn = LOCAL_AS, rrClient = false, bgpId = addr): PeerInfo {
  return { id: addr, address: parseIPv4(addr), asn, bgpId: parseIPv4(bgpId), rrClient };
}
function attrs(over: Partial<PathAttributes> = {}): PathAttributes {
  return { origin: 0, asPath: [], nextHop: parseIPv4('198.18.0.9'), ...over };
}
const P = parseCidr('10.244.5.0/24');
const bestPeer = (r: Rib): string | undefined => {
  const b = r.bestFor('10.244.5.0/24');
  return b?.source.kind === 'peer' ? b.source.peer.id : b?.source.kind;
};

test('best path: LOCAL_PREF, then AS_PATH length, ORIGIN, MED, eBGP over iBGP, router id', () => {
  const cases: [string, PeerInfo, PathAttributes, PeerInfo, PathAttributes][] = [
    ['higher LOCAL_PREF', peer('198.18.0.2'), attrs({ localPref: 200, asPath: [{ type: 'sequence', asns: [1, 2, 3] }] }), peer('198.18.0.3'), attrs({ localPref: 100 })],
    ['shorter AS_PATH', peer('198.18.0.3', 65002), attrs({ asPath: [{ type: 'sequence', asns: [65002] }] }), peer('198.18.0.2', 65001), attrs({ asPath: [{ type: 'sequence', asns: [65001, 7] }] })],
    ['lower ORIGIN', peer('198.18.0.3'), attrs({ origin: 0 }), peer('198.18.0.2'), attrs({ origin: 2 })],
    ['lower MED, same neighbour AS', peer('198.18.0.3', 65001), attrs({ asPath: [{ type: 'sequence', asns: [65001] }], med: 5 }), peer('198.18.0.2', 65001), attrs({ asPath: [{ type: 'sequence', asns: [65001] }], med: 50 })],
    ['eBGP over iBGP', peer('198.18.0.3', 65001), attrs({ asPath: [{ type: 'sequence', asns: [65001] }] }), peer('198.18.0.2'), attrs({ asPath: [{ type: 'sequence', asns: [65001] }] })],
    ['lower router id', peer('198.18.0.3', LOCAL_AS, false, '1.1.1.1'), attrs(), peer('198.18.0.2', LOCAL_AS, false, '2.2.2.2'), attrs()],
  ];
  for (const [why, winner, wa, loser, la] of cases) {
    for (const order of [0, 1]) {
      const r = rib();
      if (order === 0) { r.applyUpdate(winner, [], wa, [P]); r.applyUpdate(loser, [], la, [P]); }
      else { r.applyUpdate(loser, [], la, [P]); r.applyUpdate(winner, [], wa, [P]); }
      assert.equal(bestPeer(r), winner.id, why);
    }
  }
});

test('MED is not compared between different neighbour ASes', () => {
  const r = rib();
  // Equal up to MED; different neighbour AS → MED skipped → falls to router id (lower wins).
  r.applyUpdate(peer('198.18.0.2', 65001, false, '9.9.9.9'), [], attrs({ asPath: [{ type: 'sequence', asns: [65001] }], med: 1 }), [P]);
  r.applyUpdate(peer('198.18.0.3', 65002, false, '1.1.1.1'), [], attrs({ asPath: [{ type: 'sequence', asns: [65002] }], med: 100 }), [P]);
  assert.equal(bestPeer(r), '198.18.0.3');
});

test('AS_SET counts once; prepend makes a sequence', () => {
  assert.equal(asPathLength([{ type: 'sequence', asns: [1, 2] }, { type: 'set', asns: [3, 4, 5] }]), 3);
  assert.deepEqual(prependAs(9, [{ type: 'sequence', asns: [1] }]), [{ type: 'sequence', asns: [9, 1] }]);
  assert.deepEqual(prependAs(9, [{ type: 'set', asns: [1] }]), [{ type: 'sequence', asns: [9] }, { type: 'set', asns: [1] }]);
});

test('withdrawal falls back to the next best, then removes the prefix', () => {
  const r = rib();
  const a = peer('198.18.0.2');
  const b = peer('198.18.0.3');
  r.applyUpdate(a, [], attrs({ localPref: 300 }), [P]);
  r.applyUpdate(b, [], attrs(), [P]);
  const c1 = r.applyUpdate(a, [P], undefined, []);
  assert.equal(c1.length, 1);
  assert.equal(c1[0]?.type, 'best-changed');
  assert.equal(bestPeer(r), b.id);
  const c2 = r.applyUpdate(b, [P], undefined, []);
  assert.deepEqual(c2.map((c) => c.type), ['best-removed']);
  assert.equal(r.size, 0);
  // Withdrawing what was never announced changes nothing.
  assert.deepEqual(r.applyUpdate(b, [P], undefined, []), []);
});

test('loop detection: own AS in the path, our ORIGINATOR_ID, our cluster id', () => {
  const r = rib();
  assert.deepEqual(r.applyUpdate(peer('198.18.0.2', 65001), [], attrs({ asPath: [{ type: 'sequence', asns: [65001, LOCAL_AS] }] }), [P]), []);
  assert.deepEqual(r.applyUpdate(peer('198.18.0.3'), [], attrs({ originatorId: parseIPv4('10.0.0.1') }), [P]), []);
  assert.deepEqual(r.applyUpdate(peer('198.18.0.4'), [], attrs({ clusterList: [parseIPv4('10.0.0.1')] }), [P]), []);
  assert.equal(r.size, 0);
});

test('export: iBGP split horizon without reflection', () => {
  const r = rib();
  const a = peer('198.18.0.2');
  const b = peer('198.18.0.3');
  const e = peer('198.18.1.1', 65001);
  r.applyUpdate(a, [], attrs(), [P]);
  const best = r.bestFor('10.244.5.0/24');
  assert.ok(best);
  const self = parseIPv4('198.18.0.1');
  assert.equal(r.exportFor(best, a, self), undefined, 'never back to the source');
  assert.equal(r.exportFor(best, b, self), undefined, 'iBGP route not to another iBGP peer');
  const toE = r.exportFor(best, e, self);
  assert.ok(toE);
  assert.deepEqual(toE.asPath, [{ type: 'sequence', asns: [LOCAL_AS] }]);
  assert.equal(toE.nextHop && formatIP(toE.nextHop), '198.18.0.1', 'next hop self to eBGP');
  assert.equal(toE.localPref, undefined, 'no LOCAL_PREF to eBGP');
  // An eBGP route goes to iBGP peers with LOCAL_PREF and its next hop unchanged.
  const r2 = rib();
  r2.applyUpdate(e, [], attrs({ asPath: [{ type: 'sequence', asns: [65001] }], med: 7 }), [P]);
  const eb = r2.bestFor('10.244.5.0/24');
  assert.ok(eb);
  const toA = r2.exportFor(eb, a, self);
  assert.equal(toA?.localPref, 100);
  assert.equal(toA?.nextHop && formatIP(toA.nextHop), '198.18.0.9');
  assert.equal(r2.exportFor(eb, peer('198.18.1.2', 65002), self)?.med, undefined, 'a learned MED stops at the AS border');
});

test('route reflection (RFC 4456): client routes to all, non-client routes to clients, with ORIGINATOR_ID and CLUSTER_LIST', () => {
  const r = rib();
  const client1 = peer('198.18.0.2', LOCAL_AS, true);
  const client2 = peer('198.18.0.3', LOCAL_AS, true);
  const nonClient1 = peer('198.18.0.4');
  const nonClient2 = peer('198.18.0.5');
  const self = parseIPv4('198.18.0.1');
  r.applyUpdate(client1, [], attrs(), [P]);
  const fromClient = r.bestFor('10.244.5.0/24');
  assert.ok(fromClient);
  const refl = r.exportFor(fromClient, client2, self);
  assert.ok(refl);
  assert.equal(refl.originatorId && formatIP(refl.originatorId), '198.18.0.2');
  assert.deepEqual(refl.clusterList?.map(formatIP), ['10.0.0.1']);
  assert.ok(r.exportFor(fromClient, nonClient1, self), 'client route reaches non-clients');
  assert.equal(r.exportFor(fromClient, client1, self), undefined);

  const r2 = rib();
  r2.applyUpdate(nonClient1, [], attrs({ originatorId: parseIPv4('7.7.7.7'), clusterList: [parseIPv4('10.9.9.9')] }), [P]);
  const fromNon = r2.bestFor('10.244.5.0/24');
  assert.ok(fromNon);
  assert.equal(r2.exportFor(fromNon, nonClient2, self), undefined, 'non-client route not to non-clients');
  const toClient = r2.exportFor(fromNon, client1, self);
  assert.equal(toClient?.originatorId && formatIP(toClient.originatorId), '7.7.7.7', 'existing ORIGINATOR_ID kept');
  assert.deepEqual(toClient?.clusterList?.map(formatIP), ['10.0.0.1', '10.9.9.9'], 'our cluster id prepended');
});

test('graceful restart: stale routes stay best until swept; refreshed ones survive the sweep', () => {
  const r = rib();
  const a = peer('198.18.0.2');
  const p2 = parseCidr('10.244.6.0/24');
  r.applyUpdate(a, [], attrs(), [P, p2]);
  assert.equal(r.markStale(a.id), 2);
  assert.equal(r.size, 2);
  assert.equal(r.bestFor('10.244.5.0/24')?.stale, true);
  // After re-establishment the peer re-announces only P.
  const changes = r.applyUpdate(a, [], attrs(), [P]);
  assert.equal(r.staleCount(a.id), 1);
  assert.ok(changes.every((c) => c.type === 'best-changed'));
  const swept: BestChange[] = r.sweepStale(a.id);
  assert.deepEqual(swept.map((c) => [c.type, formatCidr(c.prefix)]), [['best-removed', '10.244.6.0/24']]);
  assert.equal(r.bestFor('10.244.5.0/24')?.stale, false);
  assert.deepEqual(r.dropPeer(a.id).map((c) => c.type), ['best-removed']);
});

test('local routes win over learned ones and hand the prefix back when withdrawn', () => {
  const r = rib();
  r.applyUpdate(peer('198.18.0.2'), [], attrs({ localPref: 1000 }), [P]);
  const c = r.addLocal(P, attrs({ nextHop: undefined }));
  assert.equal(c?.type, 'best-changed');
  assert.equal(bestPeer(r), 'local');
  r.removeLocal(P);
  assert.equal(bestPeer(r), '198.18.0.2');
});

// Speed is bench/bgp.ts's business; here only that the whole table goes through correctly.
test('10,000 prefixes: insert, reselect and drop', () => {
  const r = rib();
  const prefixes = Array.from({ length: 10000 }, (_, i) => parseCidr(`10.${(i >> 8) & 255}.${i & 255}.0/24`));
  const a = attrs();
  r.applyUpdate(peer('198.18.0.2'), [], a, prefixes);
  r.applyUpdate(peer('198.18.0.3'), [], attrs({ localPref: 200 }), prefixes);
  assert.equal(r.size, 10000);
  assert.equal(r.dropPeer('198.18.0.3').length, 10000);
  assert.equal(r.dropPeer('198.18.0.2').length, 10000);
  assert.equal(r.size, 0);
});

// MP-BGP between in-process Speakers over loopback TCP (127.0.0.x and ::1, no namespace): IPv6
// and IPv4 prefixes on one session, families negotiated from both OPENs, IPv6 next hops,
// reflection, graceful restart per family, and a peer played by hand for what BIRD would send.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { type Capability, MessageFramer, decodeMessage, encodeEndOfRib, encodeKeepalive, encodeOpen, encodeUpdate } from '../../src/bgp/codec.js';
import { Speaker, type SpeakerConfigInput, type SpeakerEvent } from '../../src/bgp/speaker.js';
import { createLogger } from '../../src/log.js';
import { formatCidr, formatIP, parseCidr, parseIP, parseIPv4 } from '../../src/net/ip.js';

const quiet = createLogger({}, { level: 'error' });
const A = '127.0.0.1';
const B = '127.0.0.2';
const C = '127.0.0.3';

async function waitFor(what: string, cond: () => boolean, ms = 10000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const routes = (s: Speaker): string[] => s.learnedRoutes().map((r) => `${r.prefix} via ${r.nextHop}`).sort();

/** B listens and waits for A; both offer what `extra*` says (by default both families). */
async function pair(extraA: Partial<SpeakerConfigInput> = {}, extraB: Partial<SpeakerConfigInput> = {}, asnA = 64512, asnB = 64512) {
  const b = new Speaker({ asn: asnB, routerId: '10.0.0.2', listen: { address: B, port: 0 }, peers: [{ address: A, asn: asnA, passive: true }], holdTime: 9, ...extraB }, { logger: quiet });
  const bEvents: SpeakerEvent[] = [];
  b.on((e) => bEvents.push(e));
  await b.start();
  const a = new Speaker({ asn: asnA, routerId: '10.0.0.1', listen: false, peers: [{ address: B, asn: asnB, port: b.port ?? 0, localAddress: A }], holdTime: 9, connectRetrySeconds: 1, ...extraA }, { logger: quiet });
  return { a, b, bEvents };
}

test('one IPv4 session carries IPv6 and IPv4 prefixes, with IPv6 next hops, both ways, and withdrawals', async () => {
  const { a, b, bEvents } = await pair({ nextHopV6: '2001:2::1' });
  // B has no IPv6 address to offer on an IPv4 session: an IPv6 prefix needs an explicit next hop.
  assert.throws(() => b.announce('fd00:b::/64'), /cannot announce fd00:b::\/64: no IPv6 next hop.*nextHopV6/);
  b.announce('fd00:b::/64', '2001:2::2');
  a.announce('10.1.0.0/24');
  a.announce('fd00:1::/64');
  a.announce('fd00:2::/64', '2001:2::99');
  const installed: SpeakerEvent[] = [];
  b.on((e) => { if (e.type === 'route-installed' || e.type === 'route-removed') installed.push(e); });
  try {
    await a.start();
    await waitFor('three routes at B', () => b.learnedRoutes().length === 3);
    assert.deepEqual(routes(b), ['10.1.0.0/24 via 127.0.0.1', 'fd00:1::/64 via 2001:2::1', 'fd00:2::/64 via 2001:2::99']);
    await waitFor('B\'s route at A', () => a.learnedRoutes().length === 1);
    assert.deepEqual(routes(a), ['fd00:b::/64 via 2001:2::2']);
    assert.deepEqual(b.status()[0]?.families, ['ipv4', 'ipv6']);
    assert.equal(b.status()[0]?.prefixesReceived, 3);
    assert.equal(a.status()[0]?.prefixesSent, 3);
    // An IPv6 route comes as an IPv4 one does: an IPv6 prefix and an IPv6 next hop.
    const ev = installed.find((e) => e.type === 'route-installed' && formatCidr(e.prefix) === 'fd00:1::/64');
    assert.ok(ev?.type === 'route-installed');
    assert.equal(ev.nextHop.family, 6);
    assert.equal(formatIP(ev.nextHop), '2001:2::1');
    assert.equal(ev.peer, A);
    // End-of-RIB for each family; the second completes the table.
    await waitFor('both End-of-RIBs', () => bEvents.filter((e) => e.type === 'end-of-rib').length === 2);
    assert.deepEqual(bEvents.flatMap((e) => (e.type === 'end-of-rib' ? [[e.family, e.complete]] : [])), [['ipv4', false], ['ipv6', true]]);
    a.withdraw('fd00:1::/64');
    await waitFor('IPv6 withdrawal at B', () => b.learnedRoutes().length === 2);
    assert.ok(installed.some((e) => e.type === 'route-removed' && formatCidr(e.prefix) === 'fd00:1::/64'));
    assert.deepEqual(routes(b), ['10.1.0.0/24 via 127.0.0.1', 'fd00:2::/64 via 2001:2::99']);
    // ROUTE-REFRESH per family: asking for IPv6 again brings back IPv6 only.
    const before = b.status()[0]?.updatesReceived ?? 0;
    assert.ok(b.requestRefresh(A, 'ipv6'));
    await waitFor('refresh answered', () => (b.status()[0]?.updatesReceived ?? 0) > before);
    assert.deepEqual(routes(b), ['10.1.0.0/24 via 127.0.0.1', 'fd00:2::/64 via 2001:2::99']);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('eBGP: IPv6 routes go out with our own IPv6 next hop and our AS prepended', async () => {
  const { a, b, bEvents } = await pair({ nextHopV6: '2001:2::1' }, {}, 65001, 64512);
  a.announce('fd00:2::/64', '2001:2::99');
  try {
    await a.start();
    await waitFor('route at B', () => b.learnedRoutes().length === 1);
    assert.deepEqual(routes(b), ['fd00:2::/64 via 2001:2::1'], 'next-hop-self, as for IPv4');
    const ev = bEvents.find((e) => e.type === 'route-installed');
    assert.ok(ev?.type === 'route-installed');
    assert.deepEqual(ev.route.attributes.asPath, [{ type: 'sequence', asns: [65001] }]);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('families are used only where both OPENs offer them: nothing of the other family crosses', async () => {
  for (const [offerB, expected] of [
    [['ipv4'], ['10.1.0.0/24 via 127.0.0.1']],
    // No IPv4 implied: B sent multiprotocol capabilities, just not IPv4's.
    [['ipv6'], ['fd00:1::/64 via 2001:2::1']],
  ] as const) {
    const { a, b, bEvents } = await pair({ nextHopV6: '2001:2::1' }, { families: [...offerB] });
    a.announce('10.1.0.0/24');
    a.announce('fd00:1::/64');
    b.announce('10.2.0.0/24', '198.18.0.2');
    b.announce('fd00:2::/64', '2001:2::2');
    try {
      await a.start();
      await waitFor('End-of-RIB at B', () => bEvents.some((e) => e.type === 'end-of-rib'));
      await waitFor('B\'s End-of-RIB at A', () => (a.status()[0]?.updatesReceived ?? 0) >= 2);
      assert.deepEqual(routes(b), expected, `B offers ${offerB.join()}`);
      assert.deepEqual(a.status()[0]?.families, offerB);
      assert.equal(a.status()[0]?.prefixesSent, 1);
      assert.deepEqual(routes(a), offerB[0] === 'ipv4' ? ['10.2.0.0/24 via 198.18.0.2'] : ['fd00:2::/64 via 2001:2::2']);
      assert.deepEqual(bEvents.flatMap((e) => (e.type === 'end-of-rib' ? [e.family] : [])), offerB);
    } finally {
      await a.stop();
      await b.stop();
    }
  }
});

test('TCP over IPv6: the session runs on ::1; IPv4 routes cross it only with a next hop of their own', async () => {
  const b = new Speaker({ asn: 64512, routerId: '10.0.0.2', listen: { address: '::1', port: 0 }, peers: [{ address: '::1', asn: 64512, passive: true }], holdTime: 9 }, { logger: quiet });
  await b.start();
  // ::1 is no next hop to give a peer: this peer gets 2001:2::1 for A's own IPv6 routes.
  const a = new Speaker({
    asn: 64512, routerId: '10.0.0.1', listen: false, holdTime: 9, connectRetrySeconds: 1,
    peers: [{ address: '0:0:0:0:0:0:0:1', asn: 64512, port: b.port ?? 0, localAddress: '::1', nextHopV6: '2001:2::1' }],
  }, { logger: quiet });
  a.announce('fd00:3::/64');
  a.announce('10.3.0.0/24', '198.18.0.1');
  a.announce('10.4.0.0/24');
  try {
    await a.start();
    await waitFor('routes at B', () => b.learnedRoutes().length === 2);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(routes(b), ['10.3.0.0/24 via 198.18.0.1', 'fd00:3::/64 via 2001:2::1']);
    assert.deepEqual(b.status().map((s) => [s.peer, s.state, s.families]), [['::1', 'Established', ['ipv4', 'ipv6']]]);
    assert.equal(a.status()[0]?.peer, '::1');
    assert.equal(a.status()[0]?.prefixesSent, 2, '10.4.0.0/24 has no IPv4 next hop on an IPv6 session');
    assert.ok(a.removePeer('::1'));
    await waitFor('routes gone at B', () => b.learnedRoutes().length === 0);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('route reflection of IPv6 routes between two clients over IPv4 sessions', async () => {
  const rr = new Speaker({ asn: 64512, routerId: '10.0.0.3', listen: { address: C, port: 0 }, holdTime: 9,
    peers: [{ address: A, asn: 64512, passive: true, rrClient: true }, { address: B, asn: 64512, passive: true, rrClient: true }] }, { logger: quiet });
  await rr.start();
  const client = (me: string, id: string, v6: string): Speaker => new Speaker({ asn: 64512, routerId: id, listen: false, holdTime: 9, connectRetrySeconds: 1, nextHopV6: v6,
    peers: [{ address: C, asn: 64512, port: rr.port ?? 0, localAddress: me }] }, { logger: quiet });
  const c1 = client(A, '10.0.0.1', '2001:2::1');
  const c2 = client(B, '10.0.0.2', '2001:2::2');
  const atC2: SpeakerEvent[] = [];
  c2.on((e) => atC2.push(e));
  c1.announce('fd00:c1::/64');
  c1.announce('10.240.1.0/24');
  c2.announce('fd00:c2::/64');
  try {
    await Promise.all([c1.start(), c2.start()]);
    await waitFor('reflected routes', () => c1.learnedRoutes().length === 1 && c2.learnedRoutes().length === 2);
    assert.deepEqual(routes(c2), ['10.240.1.0/24 via 127.0.0.1', 'fd00:c1::/64 via 2001:2::1']);
    assert.deepEqual(routes(c1), ['fd00:c2::/64 via 2001:2::2']);
    const got = atC2.find((e) => e.type === 'route-installed' && e.prefix.ip.family === 6);
    assert.ok(got?.type === 'route-installed');
    assert.equal(got.route.attributes.originatorId && formatIP(got.route.attributes.originatorId), '10.0.0.1');
    assert.deepEqual(got.route.attributes.clusterList?.map(formatIP), ['10.0.0.3']);
    assert.equal(rr.status().reduce((n, s) => n + s.prefixesSent, 0), 3);
  } finally {
    await c1.stop();
    await c2.stop();
    await rr.stop();
  }
});

test('config and announce refuse what cannot work, naming it', () => {
  const base = { asn: 64512, listen: false as const };
  assert.throws(() => new Speaker({ ...base, routerId: '2001:2::1' }, { logger: quiet }), /routerId: must be a dotted-quad IPv4 address.*routerIdFromIPv6/);
  assert.throws(() => new Speaker({ ...base, routerId: '10.0.0.1', peers: [{ address: '2001:2::2', asn: 1, localAddress: '198.18.0.1' }] }, { logger: quiet }), /peers\.0\.localAddress: must be of the same address family/);
  assert.throws(() => new Speaker({ ...base, routerId: '10.0.0.1', nextHopV6: 'fe80::1' }, { logger: quiet }), /nextHopV6: must be a global IPv6 unicast address/);
  assert.throws(() => new Speaker({ ...base, routerId: '10.0.0.1', families: [] }, { logger: quiet }), /families/);
  const s = new Speaker({ ...base, routerId: '10.0.0.1' }, { logger: quiet });
  assert.throws(() => s.announce('fd00:1::/64', '198.18.0.1'), /next hop 198\.18\.0\.1 must be an IPv6 address/);
  assert.throws(() => s.announce('10.1.0.0/24', '2001:2::1'), /next hop 2001:2::1 must be an IPv4 address/);
  assert.throws(() => s.announce('fd00:1::/64', 'fe80::1'), /is link-local/);
  assert.throws(() => s.announce('fd00:1::/64'), /no IPv6 next hop/);
  // A peer reached over IPv6 has an IPv6 address of its own to offer.
  s.addPeer({ address: '2001:2::2', asn: 64512 });
  s.announce('fd00:1::/64');
  s.announce(parseCidr('fd00:2::/64'), parseIP('2001:2::1'));
});

// ---------------------------------------------------------------- a peer played by hand

/** Connects to B as A and opens with `caps`, replying to B's OPEN; returns what B sends, decoded. */
async function rawPeer(port: number, caps: Capability[]) {
  const sock = net.connect({ host: B, port, localAddress: A });
  const framer = new MessageFramer();
  const got: { type: string; nlri6: string[]; endOfRib?: string | undefined }[] = [];
  sock.on('data', (c: Buffer) => {
    for (const m of framer.push(c)) {
      const d = decodeMessage(m, { fourOctetAs: true });
      if (d.ok) got.push({ type: d.value.type, nlri6: d.value.type === 'update' ? d.value.ipv6?.nlri.map(formatCidr) ?? [] : [], endOfRib: d.value.type === 'update' ? d.value.endOfRib : undefined });
    }
  });
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(encodeOpen({ asn: 64512, holdTime: 30, bgpId: parseIPv4('10.0.0.1'), capabilities: [{ kind: 'four-octet-asn', asn: 64512 }, ...caps] }));
  sock.write(encodeKeepalive());
  return { sock, got };
}

const ctx = { fourOctetAs: true };
const base = { origin: 0 as const, asPath: [], localPref: 100 };
const v4Update = (...ps: string[]): Buffer => encodeUpdate({ withdrawn: [], nlri: ps.map(parseCidr), attributes: { ...base, nextHop: parseIPv4('198.18.0.1') } }, ctx);
// BIRD sends the link-local next hop too on a shared link: 32 bytes.
const v6Update = (...ps: string[]): Buffer => encodeUpdate({
  withdrawn: [], nlri: [], attributes: base, ipv6: { nextHop: parseIP('2001:2::1'), linkLocalNextHop: parseIP('fe80::1'), nlri: ps.map(parseCidr) },
}, ctx);
const mp = (afi: number): Capability => ({ kind: 'multiprotocol', afi, safi: 1 });
const gr = (restarting: boolean, afis: number[]): Capability => ({ kind: 'graceful-restart', restarting, restartTime: 30, families: afis.map((afi) => ({ afi, safi: 1, forwardingPreserved: true })) });

test('a plain BGP-4 peer (no multiprotocol capability) gets IPv4 only, and its IPv6 is ignored', async () => {
  const b = new Speaker({ asn: 64512, routerId: '10.0.0.2', listen: { address: B, port: 0 }, peers: [{ address: A, asn: 64512, passive: true }], holdTime: 9, nextHopV6: '2001:2::2' }, { logger: quiet });
  b.announce('10.2.0.0/24');
  b.announce('fd00:2::/64');
  await b.start();
  const p = await rawPeer(b.port ?? 0, []);
  try {
    await waitFor('End-of-RIB from B', () => p.got.some((m) => m.endOfRib));
    assert.deepEqual(b.status()[0]?.families, ['ipv4']);
    assert.deepEqual(p.got.flatMap((m) => (m.endOfRib ? [m.endOfRib] : [])), ['ipv4']);
    assert.ok(p.got.every((m) => m.nlri6.length === 0), 'no IPv6 from B');
    p.sock.write(v6Update('fd00:9::/64'));
    p.sock.write(v4Update('10.9.0.0/24'));
    await waitFor('the IPv4 route', () => b.learnedRoutes().length === 1);
    assert.deepEqual(routes(b), ['10.9.0.0/24 via 198.18.0.1']);
    assert.equal(b.status()[0]?.state, 'Established', 'ignored, not a reason to reset');
  } finally {
    p.sock.destroy();
    await b.stop();
  }
});

test('graceful restart per family: each End-of-RIB sweeps its own family; a family the restart capability leaves out goes at once', async () => {
  const b = new Speaker({ asn: 64512, routerId: '10.0.0.2', listen: { address: B, port: 0 }, peers: [{ address: A, asn: 64512, passive: true }], holdTime: 9, gracefulRestart: { restartTime: 30 } }, { logger: quiet });
  const events: SpeakerEvent[] = [];
  b.on((e) => events.push(e));
  await b.start();
  const socks: net.Socket[] = [];
  const stale = (): string[] => b.learnedRoutes().filter((r) => r.stale).map((r) => r.prefix).sort();
  try {
    const p1 = await rawPeer(b.port ?? 0, [mp(1), mp(2), gr(false, [1, 2])]);
    socks.push(p1.sock);
    await waitFor('established', () => b.status()[0]?.state === 'Established');
    p1.sock.write(v4Update('10.1.0.0/24', '10.2.0.0/24'));
    p1.sock.write(v6Update('fd00:1::/64', 'fd00:2::/64'));
    await waitFor('four routes', () => b.learnedRoutes().length === 4);
    assert.ok(b.learnedRoutes().some((r) => r.nextHop === '2001:2::1'), 'the global next hop of the 32 bytes');
    // The peer restarts: a new connection while the old one still looks up.
    const p2 = await rawPeer(b.port ?? 0, [mp(1), mp(2), gr(true, [1, 2])]);
    socks.push(p2.sock);
    await waitFor('re-established', () => events.filter((e) => e.type === 'session-established').length === 2);
    assert.deepEqual(stale(), ['10.1.0.0/24', '10.2.0.0/24', 'fd00:1::/64', 'fd00:2::/64']);
    p2.sock.write(v4Update('10.1.0.0/24'));
    p2.sock.write(v6Update('fd00:1::/64'));
    p2.sock.write(encodeEndOfRib('ipv4'));
    await waitFor('IPv4 swept', () => b.learnedRoutes().length === 3);
    assert.deepEqual(stale(), ['fd00:2::/64'], 'IPv6 still waits for its own End-of-RIB');
    p2.sock.write(encodeEndOfRib('ipv6'));
    await waitFor('IPv6 swept', () => b.learnedRoutes().length === 2);
    assert.deepEqual(b.learnedRoutes().map((r) => [r.prefix, r.stale]).sort(), [['10.1.0.0/24', false], ['fd00:1::/64', false]]);
    assert.deepEqual(events.flatMap((e) => (e.type === 'end-of-rib' ? [[e.family, e.complete]] : [])), [['ipv4', false], ['ipv6', true]]);

    // This time the restart capability lists IPv4 only: IPv6 routes cannot be kept.
    const p3 = await rawPeer(b.port ?? 0, [mp(1), mp(2), gr(true, [1])]);
    socks.push(p3.sock);
    await waitFor('re-established again', () => events.filter((e) => e.type === 'session-established').length === 3);
    await waitFor('IPv6 dropped', () => b.learnedRoutes().length === 1);
    assert.deepEqual(stale(), ['10.1.0.0/24']);
  } finally {
    for (const s of socks) s.destroy();
    await b.stop();
  }
});

// Two in-process Speakers over loopback TCP (127.0.0.1 ↔ 127.0.0.2, no namespace needed):
// 10,000 prefixes, collision resolution, graceful restart, and NOTIFICATIONs for a peer that
// sends garbage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { type Capability, MessageFramer, decodeMessage, encodeEndOfRib, encodeKeepalive, encodeOpen, encodeUpdate } from '../../src/bgp/codec.js';
import { Speaker, type SpeakerConfigInput, type SpeakerEvent } from '../../src/bgp/speaker.js';
import { FakeClock } from '../../src/clock.js';
import { createLogger } from '../../src/log.js';
import { formatCidr, formatIP, parseCidr, parseIPv4 } from '../../src/net/ip.js';

const quiet = createLogger({}, { level: 'error' });
const A = '127.0.0.1';
const B = '127.0.0.2';

async function waitFor(what: string, cond: () => boolean, ms = 10000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function prefixes(n: number, second = 0): string[] {
  return Array.from({ length: n }, (_, i) => `10.${100 + second + (i >> 8)}.${i & 255}.0/24`);
}

/** B listens on an ephemeral port and waits; A connects to it from 127.0.0.1. B's protocol timers run on `clockB` when given. */
async function pair(extraA: Partial<SpeakerConfigInput> = {}, extraB: Partial<SpeakerConfigInput> = {}, asnA = 64512, asnB = 64512, clockB?: FakeClock) {
  const b = new Speaker({ asn: asnB, routerId: '10.0.0.2', listen: { address: B, port: 0 }, peers: [{ address: A, asn: asnA, passive: true }], holdTime: 9, ...extraB }, { logger: quiet, ...(clockB && { clock: clockB }) });
  const bEvents: SpeakerEvent[] = [];
  b.on((e) => bEvents.push(e));
  await b.start();
  const port = b.port;
  assert.ok(port);
  const mkA = (extra: Partial<SpeakerConfigInput> = extraA): Speaker => new Speaker({
    asn: asnA, routerId: '10.0.0.1', listen: false, peers: [{ address: B, asn: asnB, port, localAddress: A }], holdTime: 9, connectRetrySeconds: 1, ...extra,
  }, { logger: quiet });
  return { b, bEvents, port, mkA };
}

test('10,000 prefixes from one speaker to another, then half withdrawn', async () => {
  const { b, bEvents, mkA } = await pair();
  const a = mkA();
  const installed = new Map<string, string>();
  b.on((e) => {
    if (e.type === 'route-installed') installed.set(formatCidr(e.prefix), e.nextHop ? `${e.nextHop.value}` : '');
    if (e.type === 'route-removed') installed.delete(formatCidr(e.prefix));
  });
  const list = prefixes(10000);
  for (const p of list) a.announce(p);
  try {
    const t0 = performance.now();
    await a.start();
    // A generous deadline: how fast is bench/bgp.ts's question, not this test's.
    await waitFor('10,000 routes at B', () => installed.size === 10000 && bEvents.some((e) => e.type === 'end-of-rib'), 60_000);
    process.stderr.write(`# 10,000 prefixes session start → installed: ${(performance.now() - t0).toFixed(0)} ms\n`);
    const [sa] = a.status();
    const [sb] = b.status();
    assert.equal(sa?.state, 'Established');
    assert.equal(sa?.prefixesSent, 10000);
    assert.equal(sb?.prefixesReceived, 10000);
    assert.equal(sb?.gracefulRestart, false);
    // Next hop is A's session address (no explicit next hop given).
    assert.equal(installed.get('10.100.0.0/24'), `${parseIPv4(A).value}`);
    for (const p of list.slice(0, 5000)) a.withdraw(p);
    await waitFor('withdrawals at B', () => installed.size === 5000);
    assert.ok(!installed.has(list[0] as string));
    assert.ok(installed.has(list[9999] as string));
    assert.equal(a.status()[0]?.prefixesSent, 5000);
    // Batching: 10,000 /24s need about ten full UPDATEs, not thousands.
    const sent = a.status()[0]?.updatesSent ?? 0;
    assert.ok(sent <= 30, `${sent} UPDATEs`);
    // ROUTE-REFRESH (RFC 2918): B asks, A sends its table again — without an End-of-RIB.
    const eorsBefore = bEvents.filter((e) => e.type === 'end-of-rib').length;
    assert.ok(b.requestRefresh(A));
    await waitFor('refreshed table at B', () => (b.status()[0]?.updatesReceived ?? 0) >= sent + 5);
    assert.equal(installed.size, 5000);
    assert.equal(bEvents.filter((e) => e.type === 'end-of-rib').length, eorsBefore);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('administrative stop without graceful restart withdraws everything at the peer', async () => {
  const { b, bEvents, mkA } = await pair();
  const a = mkA();
  a.announce('10.200.1.0/24', '198.18.0.1');
  a.announce('10.200.2.0/24', '198.18.0.1');
  try {
    await a.start();
    await waitFor('routes at B', () => b.learnedRoutes().length === 2);
    assert.equal(b.learnedRoutes()[0]?.nextHop, '198.18.0.1');
    await a.stop();
    await waitFor('session down at B', () => bEvents.some((e) => e.type === 'session-down'));
    await waitFor('routes gone at B', () => b.learnedRoutes().length === 0);
    const down = bEvents.find((e) => e.type === 'session-down');
    assert.ok(down?.type === 'session-down' && down.reason.kind === 'notification-received' && down.reason.code === 6 && !down.graceful);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('graceful restart: a crashed speaker keeps its routes at the peer until its End-of-RIB', async () => {
  const gr = { gracefulRestart: { restartTime: 30 } };
  const { b, bEvents, mkA } = await pair(gr, gr);
  const a1 = mkA();
  for (const p of prefixes(100)) a1.announce(p);
  const a2 = mkA({ gracefulRestart: { restartTime: 30, restarting: true } });
  try {
    await a1.start();
    await waitFor('routes at B', () => b.learnedRoutes().length === 100);
    assert.equal(b.status()[0]?.gracefulRestart, true);
    const removedBefore = bEvents.filter((e) => e.type === 'route-removed').length;
    await a1.abort();
    await waitFor('graceful down at B', () => bEvents.some((e) => e.type === 'session-down' && e.graceful));
    assert.equal(b.learnedRoutes().length, 100, 'routes kept');
    assert.ok(b.learnedRoutes().every((r) => r.stale));
    assert.equal(b.status()[0]?.staleRoutes, 100);
    // The restarted speaker announces only the first 60.
    for (const p of prefixes(60)) a2.announce(p);
    await a2.start();
    await waitFor('End-of-RIB sweep at B', () => bEvents.some((e) => e.type === 'stale-swept'));
    assert.equal(b.learnedRoutes().length, 60);
    assert.ok(b.learnedRoutes().every((r) => !r.stale));
    assert.equal(bEvents.filter((e) => e.type === 'route-removed').length - removedBefore, 40, 'only the routes not re-announced were removed');
  } finally {
    await a1.stop();
    await a2.stop();
    await b.stop();
  }
});

test('graceful restart: routes are swept when the peer does not come back within its restart time', async () => {
  const clock = new FakeClock();
  const { b, bEvents, mkA } = await pair({ gracefulRestart: { restartTime: 1 } }, { gracefulRestart: { restartTime: 1 } }, 64512, 64512, clock);
  const a = mkA();
  a.announce('10.201.0.0/24');
  try {
    await a.start();
    await waitFor('route at B', () => b.learnedRoutes().length === 1);
    await a.abort();
    await waitFor('graceful down', () => bEvents.some((e) => e.type === 'session-down' && e.graceful));
    clock.advance(999);
    assert.equal(b.learnedRoutes().length, 1, 'kept for the restart time');
    clock.advance(1);
    assert.equal(b.learnedRoutes().length, 0, 'swept when it ran out');
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('collision: both sides connect at once and exactly one connection survives', async () => {
  // Same port number on two loopback addresses, so each side can dial the other before either listens.
  const port = 20000 + Math.floor(Math.random() * 20000);
  const mk = (me: string, id: string, other: string): Speaker => new Speaker({
    asn: 64512, routerId: id, listen: { address: me, port }, peers: [{ address: other, asn: 64512, port, localAddress: me }], holdTime: 9, connectRetrySeconds: 1,
  }, { logger: quiet });
  const a = mk(A, '10.0.0.1', B);
  const b = mk(B, '10.0.0.2', A);
  const downs: SpeakerEvent[] = [];
  a.on((e) => { if (e.type === 'session-down') downs.push(e); });
  b.on((e) => { if (e.type === 'session-down') downs.push(e); });
  a.announce('10.210.0.0/24');
  b.announce('10.211.0.0/24');
  try {
    await Promise.all([a.start(), b.start()]);
    await waitFor('both established', () => a.status()[0]?.state === 'Established' && b.status()[0]?.state === 'Established');
    await waitFor('routes both ways', () => a.learnedRoutes().length === 1 && b.learnedRoutes().length === 1);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(a.status()[0]?.state, 'Established');
    assert.equal(b.status()[0]?.state, 'Established');
    assert.equal(downs.length, 0, 'no established session was torn down');
  } finally {
    await a.stop();
    await b.stop();
  }
});

/** Collects decoded messages from a raw socket so a test can play the peer by hand. */
function rawReader(sock: net.Socket): { type: string; code?: number; subcode?: number }[] {
  const framer = new MessageFramer();
  const got: { type: string; code?: number; subcode?: number }[] = [];
  sock.on('data', (c: Buffer) => {
    for (const m of framer.push(c)) {
      const d = decodeMessage(m);
      if (d.ok) got.push(d.value.type === 'notification' ? { type: 'notification', code: d.value.code, subcode: d.value.subcode } : { type: d.value.type });
    }
  });
  sock.on('error', () => {});
  return got;
}

for (const [remoteId, survivor] of [['10.0.0.9', 'inbound'], ['10.0.0.1', 'outbound']] as const) {
  test(`collision by hand: remote id ${remoteId} vs local 10.0.0.2 keeps the ${survivor} connection (RFC 4271 §6.8)`, async () => {
    // The "peer" is this test: it listens where B will connect, and connects to B itself.
    const server = net.createServer();
    const accepted: net.Socket[] = [];
    server.on('connection', (s) => accepted.push(s));
    await new Promise<void>((r) => server.listen({ host: A, port: 0 }, () => r()));
    const peerPort = (server.address() as net.AddressInfo).port;
    const b = new Speaker({ asn: 64512, routerId: '10.0.0.2', listen: { address: B, port: 0 }, peers: [{ address: A, asn: 64512, port: peerPort }], holdTime: 9 }, { logger: quiet });
    let toB: net.Socket | undefined;
    try {
      await b.start();
      await waitFor('B connects out', () => accepted.length === 1);
      const outbound = accepted[0] as net.Socket;
      const onOutbound = rawReader(outbound);
      toB = net.connect({ host: B, port: b.port ?? 0, localAddress: A });
      const onInbound = rawReader(toB);
      await new Promise<void>((r) => toB?.once('connect', () => r()));
      await waitFor('B sends OPEN on both', () => onOutbound.some((m) => m.type === 'open') && onInbound.some((m) => m.type === 'open'));
      const open = encodeOpen({ asn: 64512, holdTime: 9, bgpId: parseIPv4(remoteId), capabilities: [{ kind: 'four-octet-asn', asn: 64512 }] });
      toB.write(open);
      outbound.write(open);
      const [keep, dump, keepSock] = survivor === 'inbound' ? [onInbound, onOutbound, toB] : [onOutbound, onInbound, outbound];
      await waitFor('Cease/7 on the losing connection', () => dump.some((m) => m.type === 'notification'));
      assert.deepEqual(dump.find((m) => m.type === 'notification'), { type: 'notification', code: 6, subcode: 7 });
      assert.ok(keep.some((m) => m.type === 'keepalive'));
      assert.ok(!keep.some((m) => m.type === 'notification'));
      keepSock.write(encodeKeepalive());
      await waitFor('B established on the survivor', () => b.status()[0]?.state === 'Established');
    } finally {
      toB?.destroy();
      for (const s of accepted) s.destroy();
      await b.stop();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
}

test('eBGP: AS_PATH carries the sender AS, a wrong peer AS is refused with 2/2', async () => {
  const { b, mkA } = await pair({}, {}, 65001, 64512);
  const a = mkA();
  a.announce('10.220.0.0/24', '127.0.0.1');
  const paths: unknown[] = [];
  b.on((e) => { if (e.type === 'route-installed') paths.push(e.route.attributes.asPath); });
  try {
    await a.start();
    await waitFor('route at B', () => b.learnedRoutes().length === 1);
    assert.deepEqual(paths, [[{ type: 'sequence', asns: [65001] }]]);
    assert.equal(b.learnedRoutes()[0]?.nextHop, '127.0.0.1', 'eBGP next hop is the session address');
  } finally {
    await a.stop();
    await b.stop();
  }
  // A claims AS 65009 but B expects 64512.
  const p = await pair({}, {}, 64512, 64512);
  const bad = new Speaker({ asn: 65009, routerId: '10.0.0.1', listen: false, peers: [{ address: B, asn: 64512, port: p.port, localAddress: A }], holdTime: 9, connectRetrySeconds: 60 }, { logger: quiet });
  const downs: SpeakerEvent[] = [];
  bad.on((e) => { if (e.type === 'session-state') downs.push(e); });
  try {
    await bad.start();
    await waitFor('B refuses', () => bad.status()[0]?.lastDown?.kind === 'notification-received');
    const last = bad.status()[0]?.lastDown;
    assert.ok(last?.kind === 'notification-received' && last.code === 2 && last.subcode === 2);
  } finally {
    await bad.stop();
    await p.b.stop();
  }
});

// ---------------------------------------------------------------- a peer played by hand

const C = '127.0.0.3';

async function rawPeer(port: number, caps: Capability[]): Promise<{ sock: net.Socket; got: { type: string; code?: number; subcode?: number }[]; closed: () => boolean }> {
  const sock = net.connect({ host: B, port, localAddress: A });
  const got = rawReader(sock);
  let isClosed = false;
  sock.on('close', () => { isClosed = true; });
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(encodeOpen({ asn: 64512, holdTime: 30, bgpId: parseIPv4('10.0.0.1'), capabilities: [{ kind: 'four-octet-asn', asn: 64512 }, ...caps] }));
  sock.write(encodeKeepalive());
  return { sock, got, closed: () => isClosed };
}

const ctx4 = { fourOctetAs: true };
const routesUpdate = (...ps: string[]): Buffer => encodeUpdate({
  withdrawn: [], nlri: ps.map(parseCidr), attributes: { origin: 0, asPath: [], nextHop: parseIPv4('127.0.0.1'), localPref: 100 },
}, ctx4);
const grCap = (restarting: boolean): Capability => ({ kind: 'graceful-restart', restarting, restartTime: 30, families: [{ afi: 1, safi: 1, forwardingPreserved: true }] });

test('a malformed attribute withdraws its UPDATE\'s routes and keeps the session (RFC 7606); a bad NLRI still resets it', async () => {
  const lines: string[] = [];
  const logger = createLogger({}, { level: 'warn', write: (l) => { lines.push(l); } });
  const b = new Speaker({ asn: 64512, routerId: '10.0.0.2', listen: { address: B, port: 0 }, peers: [{ address: A, asn: 64512, passive: true }], holdTime: 9 }, { logger });
  await b.start();
  const sock = net.connect({ host: B, port: b.port ?? 0, localAddress: A });
  const got = rawReader(sock);
  const raw = (bodyHex: string): Buffer => {
    const body = Buffer.from(bodyHex.replace(/\s/g, ''), 'hex');
    const hdr = Buffer.alloc(19, 0xff);
    hdr.writeUInt16BE(19 + body.length, 16);
    hdr[18] = 2;
    return Buffer.concat([hdr, body]);
  };
  try {
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(encodeOpen({ asn: 64512, holdTime: 9, bgpId: parseIPv4('10.0.0.1'), capabilities: [{ kind: 'four-octet-asn', asn: 64512 }] }));
    sock.write(encodeKeepalive());
    await waitFor('B established', () => b.status()[0]?.state === 'Established');
    sock.write(routesUpdate('10.244.1.0/24', '10.244.2.0/24'));
    await waitFor('two routes', () => b.learnedRoutes().length === 2);
    // ORIGIN 3 for 10.244.1.0/24, twice: the route goes, the session stays, one log line.
    const badOrigin = raw('0000 0014 40010103 40020602010000fc00 4003047f000001 180af401');
    sock.write(badOrigin);
    sock.write(badOrigin);
    sock.write(routesUpdate('10.244.3.0/24'));
    await waitFor('route withdrawn, next UPDATE still taken', () => b.learnedRoutes().map((r) => r.prefix).join() === '10.244.2.0/24,10.244.3.0/24');
    assert.equal(b.status()[0]?.state, 'Established');
    assert.ok(!got.some((g) => g.type === 'notification'), JSON.stringify(got));
    const warned = lines.filter((l) => l.includes('RFC 7606'));
    assert.equal(warned.length, 1, warned.join(''));
    assert.match(warned[0] ?? '', /treat-as-withdraw.*invalid ORIGIN 3/);
    // A prefix length of 33 leaves the NLRI unreadable: that is still 3/10 and a reset.
    sock.write(raw('0000 0014 40010100 40020602010000fc00 4003047f000001 21 0af40100ff'));
    await waitFor('NOTIFICATION', () => got.some((g) => g.type === 'notification'));
    assert.deepEqual(got.find((g) => g.type === 'notification'), { type: 'notification', code: 3, subcode: 10 });
    await waitFor('B back to waiting', () => b.status()[0]?.state !== 'Established');
    assert.equal(b.learnedRoutes().length, 0);
  } finally {
    sock.destroy();
    await b.stop();
  }
});

test('an OPEN whose 4-octet AS capability disagrees with its AS field is refused with Bad Peer AS (2/2)', async () => {
  const { b, port } = await pair();
  const sock = net.connect({ host: B, port, localAddress: A });
  const got = rawReader(sock);
  try {
    await new Promise<void>((r) => sock.once('connect', () => r()));
    // The field says 65001, the capability says 64512 (the configured AS): which is it?
    const open = encodeOpen({ asn: 65001, holdTime: 9, bgpId: parseIPv4('10.0.0.1'), capabilities: [{ kind: 'four-octet-asn', asn: 64512 }] });
    sock.write(open);
    sock.write(encodeKeepalive());
    await waitFor('NOTIFICATION', () => got.some((g) => g.type === 'notification'));
    assert.deepEqual(got.find((g) => g.type === 'notification'), { type: 'notification', code: 2, subcode: 2 });
    assert.notEqual(b.status()[0]?.state, 'Established');
    const last = b.status()[0]?.lastDown;
    assert.ok(last?.kind === 'notification-sent' && last.code === 2 && last.subcode === 2, JSON.stringify(last));
  } finally {
    sock.destroy();
    await b.stop();
  }
});

test('import policy: what an external peer may not announce is neither used nor passed on over iBGP', async () => {
  // A (AS 65000) --eBGP--> B (AS 64512, the host) --iBGP--> C (AS 64512, another host).
  const lines: string[] = [];
  const logger = createLogger({}, { level: 'warn', write: (l) => { lines.push(l); } });
  const b = new Speaker({
    asn: 64512, routerId: '10.0.0.2', listen: { address: B, port: 0 }, holdTime: 9,
    peers: [{ address: A, asn: 65000, passive: true }, { address: C, asn: 64512, passive: true }],
  }, { logger, importPolicy: { allow: [parseCidr('10.244.0.0/16'), parseCidr('127.0.0.0/8')] } });
  const rejected: SpeakerEvent[] = [];
  b.on((e) => { if (e.type === 'route-rejected') rejected.push(e); });
  await b.start();
  const a = new Speaker({ asn: 65000, routerId: '10.0.0.1', listen: false, holdTime: 9, connectRetrySeconds: 1, peers: [{ address: B, asn: 64512, port: b.port ?? 0, localAddress: A }] }, { logger: quiet });
  const c = new Speaker({ asn: 64512, routerId: '10.0.0.3', listen: false, holdTime: 9, connectRetrySeconds: 1, peers: [{ address: B, asn: 64512, port: b.port ?? 0, localAddress: C }] }, { logger: quiet });
  // 127.0.0.3/32 is C's address (the iBGP session itself); 127.0.0.0/8 and the default route
  // hold A's next hop; 10.99.1.0/24 lies outside the allowed ranges.
  for (const p of ['10.244.7.0/24', '127.0.0.3/32', '127.0.0.0/8', '0.0.0.0/0', '10.99.1.0/24']) a.announce(p, A);
  try {
    await Promise.all([a.start(), c.start()]);
    await waitFor('B has all five from A', () => b.status().find((s) => s.peer === A)?.prefixesReceived === 5);
    await waitFor('C has what B accepted', () => c.learnedRoutes().length === 1);
    assert.deepEqual(b.learnedRoutes().map((r) => r.prefix), ['10.244.7.0/24']);
    assert.equal(b.status().find((s) => s.peer === A)?.prefixesRejected, 4);
    assert.deepEqual(rejected.map((e) => e.type === 'route-rejected' && [formatCidr(e.prefix), e.rejection.reason]).sort(), [
      ['0.0.0.0/0', 'contains-next-hop'], ['10.99.1.0/24', 'outside-import-ranges'],
      ['127.0.0.0/8', 'contains-next-hop'], ['127.0.0.3/32', 'contains-peer-address'],
    ]);
    assert.deepEqual(c.learnedRoutes().map((r) => r.prefix), ['10.244.7.0/24']);
    assert.equal(c.status()[0]?.prefixesReceived, 1, 'B passed on nothing it refused');
    assert.equal(b.status().find((s) => s.peer === C)?.state, 'Established', 'the iBGP session is untouched');
    // Asking A for its table again refuses the same routes without logging them again.
    const logged = lines.filter((l) => l.includes('refused by the import policy')).length;
    assert.equal(logged, 4);
    assert.ok(b.requestRefresh(A));
    await waitFor('A answered the refresh', () => (b.status().find((s) => s.peer === A)?.updatesReceived ?? 0) > 2);
    assert.equal(lines.filter((l) => l.includes('refused by the import policy')).length, logged);
    // Opening the policy takes 10.99.1.0/24 in and passes it on.
    b.setImportPolicy({ allow: [parseCidr('10.244.0.0/16'), parseCidr('127.0.0.0/8'), parseCidr('10.99.0.0/16')] });
    await waitFor('C learns 10.99.1.0/24', () => c.learnedRoutes().length === 2);
    assert.deepEqual(c.learnedRoutes().map((r) => r.prefix).sort(), ['10.244.7.0/24', '10.99.1.0/24']);
    assert.equal(b.status().find((s) => s.peer === A)?.prefixesRejected, 3);
  } finally {
    await a.stop();
    await c.stop();
    await b.stop();
  }
});

test('graceful restart detected by a new connection while the old one still looks Established (RFC 4724 §4.2)', async () => {
  const { b, bEvents, port } = await pair({}, { gracefulRestart: { restartTime: 30 } });
  const socks: net.Socket[] = [];
  try {
    const p1 = await rawPeer(port, [grCap(false)]);
    socks.push(p1.sock);
    await waitFor('established', () => b.status()[0]?.state === 'Established');
    p1.sock.write(routesUpdate('10.230.1.0/24', '10.230.2.0/24'));
    await waitFor('two routes', () => b.learnedRoutes().length === 2);
    // The peer "restarted": a fresh connection, R bit set, the old TCP connection never closed.
    const p2 = await rawPeer(port, [grCap(true)]);
    socks.push(p2.sock);
    await waitFor('graceful down of the old session', () => bEvents.some((e) => e.type === 'session-down' && e.graceful));
    await waitFor('old connection closed by B', () => p1.closed());
    await waitFor('re-established on the new one', () => bEvents.filter((e) => e.type === 'session-established').length === 2);
    assert.equal(b.learnedRoutes().length, 2);
    assert.ok(b.learnedRoutes().every((r) => r.stale));
    p2.sock.write(routesUpdate('10.230.1.0/24'));
    p2.sock.write(encodeEndOfRib());
    await waitFor('sweep after End-of-RIB', () => b.learnedRoutes().length === 1);
    assert.deepEqual(b.learnedRoutes().map((r) => [r.prefix, r.stale]), [['10.230.1.0/24', false]]);
    assert.ok(!p2.got.some((m) => m.type === 'notification'));
  } finally {
    for (const s of socks) s.destroy();
    await b.stop();
  }
});

test('without graceful restart a second connection loses to the Established one with Cease/7', async () => {
  const { b, port } = await pair();
  const socks: net.Socket[] = [];
  try {
    const p1 = await rawPeer(port, []);
    socks.push(p1.sock);
    await waitFor('established', () => b.status()[0]?.state === 'Established');
    p1.sock.write(routesUpdate('10.231.1.0/24'));
    await waitFor('route', () => b.learnedRoutes().length === 1);
    const p2 = await rawPeer(port, []);
    socks.push(p2.sock);
    await waitFor('Cease/7 on the newcomer', () => p2.got.some((m) => m.type === 'notification'));
    assert.deepEqual(p2.got.find((m) => m.type === 'notification'), { type: 'notification', code: 6, subcode: 7 });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.status()[0]?.state, 'Established');
    assert.ok(!p1.closed());
    assert.equal(b.learnedRoutes().length, 1);
  } finally {
    for (const s of socks) s.destroy();
    await b.stop();
  }
});

test('route reflector: a client route reaches the other client with ORIGINATOR_ID and CLUSTER_LIST', async () => {
  const rr = new Speaker({ asn: 64512, routerId: '10.0.0.3', listen: { address: C, port: 0 }, holdTime: 9,
    peers: [{ address: A, asn: 64512, passive: true, rrClient: true }, { address: B, asn: 64512, passive: true, rrClient: true }] }, { logger: quiet });
  await rr.start();
  const client = (me: string, id: string): Speaker => new Speaker({ asn: 64512, routerId: id, listen: false, holdTime: 9, connectRetrySeconds: 1,
    peers: [{ address: C, asn: 64512, port: rr.port ?? 0, localAddress: me }] }, { logger: quiet });
  const c1 = client(A, '10.0.0.1');
  const c2 = client(B, '10.0.0.2');
  const atC2: SpeakerEvent[] = [];
  c2.on((e) => atC2.push(e));
  c1.announce('10.240.1.0/24', '127.0.0.1');
  c2.announce('10.240.2.0/24', '127.0.0.2');
  try {
    await Promise.all([c1.start(), c2.start()]);
    await waitFor('reflected routes', () => c1.learnedRoutes().length === 1 && c2.learnedRoutes().length === 1);
    const got = atC2.find((e) => e.type === 'route-installed');
    assert.ok(got?.type === 'route-installed');
    assert.equal(formatCidr(got.prefix), '10.240.1.0/24');
    assert.equal(formatIP(got.nextHop), '127.0.0.1', 'next hop unchanged by reflection');
    assert.equal(got.route.attributes.originatorId && formatIP(got.route.attributes.originatorId), '10.0.0.1');
    assert.deepEqual(got.route.attributes.clusterList?.map(formatIP), ['10.0.0.3']);
    assert.deepEqual(got.route.attributes.asPath, []);
    assert.equal(rr.status().reduce((n, s) => n + s.prefixesSent, 0), 2);
  } finally {
    await c1.stop();
    await c2.stop();
    await rr.stop();
  }
});

test('peers added and removed at run time', async () => {
  const { b, mkA } = await pair();
  const a = mkA();
  a.announce('10.250.0.0/24');
  const c = new Speaker({ asn: 64512, routerId: '10.0.0.3', listen: false, holdTime: 9, connectRetrySeconds: 1, peers: [] }, { logger: quiet });
  c.announce('10.251.0.0/24');
  try {
    await a.start();
    await c.start();
    await waitFor('A route at B', () => b.learnedRoutes().length === 1);
    b.addPeer({ address: C, asn: 64512, passive: true });
    c.addPeer({ address: B, asn: 64512, port: b.port ?? 0, localAddress: C });
    await waitFor('C route at B', () => b.learnedRoutes().length === 2);
    assert.equal(b.status().length, 2);
    assert.throws(() => b.addPeer({ address: C, asn: 64512 }), /configured twice/);
    assert.throws(() => b.addPeer({ address: 'nope', asn: 64512 }), /invalid BGP peer at address/);
    assert.ok(b.removePeer(C));
    assert.deepEqual(b.learnedRoutes().map((r) => r.prefix), ['10.250.0.0/24']);
    await waitFor('C sees the session go', () => c.status()[0]?.state !== 'Established');
    assert.equal(b.status().length, 1);
    assert.equal(b.removePeer(C), false);
  } finally {
    await a.stop();
    await c.stop();
    await b.stop();
  }
});

test('a peer that goes silent is dropped with 4/0 when the negotiated hold time runs out', async () => {
  const clock = new FakeClock();
  const { b, bEvents, port } = await pair({}, { holdTime: 3 }, 64512, 64512, clock);
  const p = await rawPeer(port, []);
  try {
    await waitFor('established', () => b.status()[0]?.state === 'Established');
    // The raw peer never sends another KEEPALIVE; B's clock moves a second at a time.
    for (let s = 0; s < 2; s++) clock.advance(1000);
    assert.equal(b.status()[0]?.state, 'Established', 'still within the hold time');
    clock.advance(1000);
    await waitFor('hold timer NOTIFICATION', () => p.got.some((m) => m.type === 'notification'));
    assert.deepEqual(p.got.find((m) => m.type === 'notification'), { type: 'notification', code: 4, subcode: 0 });
    // B kept us alive meanwhile: one KEEPALIVE a second (hold 3 → keepalive 1).
    assert.ok(p.got.filter((m) => m.type === 'keepalive').length >= 3);
    const down = bEvents.find((e) => e.type === 'session-down');
    assert.ok(down?.type === 'session-down' && down.reason.kind === 'notification-sent' && down.reason.code === 4);
  } finally {
    p.sock.destroy();
    await b.stop();
  }
});

test('a live speaker survives a stream of mutated UPDATEs and still takes a clean session afterwards', async () => {
  const { b, port } = await pair();
  let seed = 12345;
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const base = routesUpdate('10.232.1.0/24', '10.232.2.0/24');
  let notifications = 0;
  try {
    for (let i = 0; i < 40; i++) {
      const p = await rawPeer(port, []);
      await waitFor('established', () => p.got.some((m) => m.type === 'keepalive'));
      const m = Buffer.from(base);
      for (let k = 0; k < 1 + rand(3); k++) m[19 + rand(m.length - 19)] = rand(256);
      p.sock.write(m);
      await new Promise((r) => setTimeout(r, 20));
      if (p.got.some((g) => g.type === 'notification')) notifications++;
      p.sock.destroy();
      await waitFor('B idle again', () => b.status()[0]?.state !== 'Established');
    }
    assert.ok(notifications > 0, 'some mutations were answered with a NOTIFICATION');
    const clean = await rawPeer(port, []);
    await waitFor('clean session', () => b.status()[0]?.state === 'Established');
    clean.sock.write(routesUpdate('10.233.1.0/24'));
    await waitFor('route from the clean session', () => b.learnedRoutes().some((r) => r.prefix === '10.233.1.0/24'));
    clean.sock.destroy();
  } finally {
    await b.stop();
  }
});

// Codec tests against byte captures written out by hand from the RFC layouts (RFC 4271 §4,
// RFC 5492 capabilities, RFC 6793, RFC 4724, RFC 2918), plus every NOTIFICATION a malformed
// message must produce.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type BgpMessage, type UpdateMessage, MessageFramer, decodeMessage, encodeEndOfRib, encodeKeepalive, encodeNotification,
  encodeOpen, encodeRouteRefresh, encodeUpdate, isEndOfRib, mergeAs4Path, packAnnouncements, packWithdrawals,
} from '../../src/bgp/codec.js';
import { BgpError } from '../../src/bgp/errors.js';
import { formatCidr, formatIP, parseCidr, parseIPv4 } from '../../src/net/ip.js';
import { MARKER, hex, msg, update } from './bgp-wire.js';

function decodeOk(buf: Buffer, fourOctetAs = false): BgpMessage {
  const d = decodeMessage(buf, { fourOctetAs });
  if (!d.ok) assert.fail(`unexpected decode error: ${d.error.message}`);
  return d.value;
}
function decodeErr(buf: Buffer, fourOctetAs = false): BgpError {
  const d = decodeMessage(buf, { fourOctetAs });
  if (d.ok) assert.fail(`expected a decode error, got ${d.value.type}`);
  assert.ok(d.error instanceof BgpError);
  return d.error;
}
function expectNotification(err: BgpError, code: number, subcode: number, dataHex?: string): void {
  assert.equal(err.notification.code, code, err.message);
  assert.equal(err.notification.subcode, subcode, err.message);
  if (dataHex !== undefined) assert.equal(err.notification.data.toString('hex'), dataHex);
}

// ---------------------------------------------------------------- captures

const KEEPALIVE = hex(`${MARKER} 0013 04`);

// OPEN, AS 65001, hold 90, id 10.0.0.1, capabilities: MP IPv4/unicast, route refresh,
// 4-octet AS 65001, graceful restart (R bit, 120 s, IPv4/unicast with forwarding preserved).
const OPEN = hex(`${MARKER} 0035 01
  04 fde9 005a 0a000001 18
  02 16
    01 04 0001 00 01
    02 00
    41 04 0000fde9
    40 06 8078 0001 01 80`);

// OPEN from AS 4200000000: the 2-octet field holds AS_TRANS (23456 = 0x5ba0).
const OPEN_AS4 = hex(`${MARKER} 0025 01 04 5ba0 00b4 c0a80001 08 02 06 41 04 fa56ea00`);

// UPDATE (4-octet AS_PATH) with every attribute weft understands and three prefixes.
const UPDATE_FULL = hex(`${MARKER} 005e 02
  0000
  003b
    40 01 01 00
    40 02 0a 02 02 0000fde9 0000fdea
    40 03 04 c6120001
    80 04 04 00000064
    40 05 04 000000c8
    c0 08 04 fde90064
    80 09 04 0a000002
    80 0a 04 0a000003
  18 0af401  10 0af5  20 0a000001`);

const UPDATE_WITHDRAW = hex(`${MARKER} 001b 02 0004 18 0af401 0000`);
const END_OF_RIB = hex(`${MARKER} 0017 02 0000 0000`);
const NOTIFICATION_CEASE = hex(`${MARKER} 0015 03 06 02`);
const NOTIFICATION_WITH_DATA = hex(`${MARKER} 0017 03 01 02 1001`);
const ROUTE_REFRESH = hex(`${MARKER} 0017 05 0001 00 01`);

test('KEEPALIVE: encodes to and decodes from the 19-byte capture', () => {
  assert.deepEqual(encodeKeepalive(), KEEPALIVE);
  assert.deepEqual(decodeOk(KEEPALIVE), { type: 'keepalive' });
});

test('OPEN: capture round-trips with every capability', () => {
  const built = encodeOpen({
    asn: 65001, holdTime: 90, bgpId: parseIPv4('10.0.0.1'),
    capabilities: [
      { kind: 'multiprotocol', afi: 1, safi: 1 },
      { kind: 'route-refresh' },
      { kind: 'four-octet-asn', asn: 65001 },
      { kind: 'graceful-restart', restarting: true, restartTime: 120, families: [{ afi: 1, safi: 1, forwardingPreserved: true }] },
    ],
  });
  assert.equal(built.toString('hex'), OPEN.toString('hex'));
  const m = decodeOk(OPEN);
  assert.equal(m.type, 'open');
  if (m.type !== 'open') return;
  assert.equal(m.asn, 65001);
  assert.equal(m.holdTime, 90);
  assert.equal(formatIP(m.bgpId), '10.0.0.1');
  assert.deepEqual(m.capabilities, [
    { kind: 'multiprotocol', afi: 1, safi: 1 },
    { kind: 'route-refresh' },
    { kind: 'four-octet-asn', asn: 65001 },
    { kind: 'graceful-restart', restarting: true, restartTime: 120, families: [{ afi: 1, safi: 1, forwardingPreserved: true }] },
  ]);
});

test('OPEN: a 4-octet ASN travels as AS_TRANS plus the capability (RFC 6793)', () => {
  const built = encodeOpen({ asn: 4200000000, holdTime: 180, bgpId: parseIPv4('192.168.0.1'), capabilities: [{ kind: 'four-octet-asn', asn: 4200000000 }] });
  assert.equal(built.toString('hex'), OPEN_AS4.toString('hex'));
  const m = decodeOk(OPEN_AS4);
  assert.ok(m.type === 'open' && m.asn === 4200000000);
});

test('OPEN: capabilities spread over several optional parameters and unknown ones are kept', () => {
  const m = decodeOk(msg(1, '04 fde9 005a 0a000001 0a 02 02 0200 02 04 4602 abcd'));
  assert.ok(m.type === 'open');
  if (m.type !== 'open') return;
  assert.deepEqual(m.capabilities[0], { kind: 'route-refresh' });
  assert.equal(m.capabilities[1]?.kind, 'unknown');
});

test('UPDATE: full capture decodes to every attribute and re-encodes byte for byte', () => {
  const m = decodeOk(UPDATE_FULL, true) as UpdateMessage;
  assert.equal(m.type, 'update');
  const a = m.attributes;
  assert.ok(a);
  assert.equal(a.origin, 0);
  assert.deepEqual(a.asPath, [{ type: 'sequence', asns: [65001, 65002] }]);
  assert.equal(a.nextHop && formatIP(a.nextHop), '198.18.0.1');
  assert.equal(a.med, 100);
  assert.equal(a.localPref, 200);
  assert.deepEqual(a.communities, [(65001 << 16 | 100) >>> 0]);
  assert.equal(a.originatorId && formatIP(a.originatorId), '10.0.0.2');
  assert.deepEqual(a.clusterList?.map(formatIP), ['10.0.0.3']);
  assert.deepEqual(m.nlri.map(formatCidr), ['10.244.1.0/24', '10.245.0.0/16', '10.0.0.1/32']);
  assert.equal(encodeUpdate(m, { fourOctetAs: true }).toString('hex'), UPDATE_FULL.toString('hex'));
});

test('UPDATE: 2-octet AS_PATH and AS_SET, as a peer without RFC 6793 sends them', () => {
  const buf = update('', '40 01 01 02  40 02 0a 02 01 fde9 01 02 fdea fdeb  40 03 04 c6120002', '18 0af402');
  const m = decodeOk(buf, false) as UpdateMessage;
  assert.deepEqual(m.attributes?.asPath, [{ type: 'sequence', asns: [65001] }, { type: 'set', asns: [65002, 65003] }]);
  assert.equal(m.attributes?.origin, 2);
  assert.equal(encodeUpdate(m, { fourOctetAs: false }).toString('hex'), buf.toString('hex'));
});

test('UPDATE: AS4_PATH carries 4-octet ASNs past a 2-octet session (RFC 6793)', () => {
  const attrs = { origin: 0 as const, asPath: [{ type: 'sequence' as const, asns: [4200000000, 65001] }], nextHop: parseIPv4('198.18.0.1') };
  const buf = encodeUpdate({ withdrawn: [], attributes: attrs, nlri: [parseCidr('10.1.0.0/16')] }, { fourOctetAs: false });
  // AS_PATH with AS_TRANS (5ba0) then AS4_PATH (optional transitive, type 17) with the real ASNs.
  assert.ok(buf.includes(hex('40 02 06 02 02 5ba0 fde9')));
  assert.ok(buf.includes(hex('c0 11 0a 02 02 fa56ea00 0000fde9')));
  const m = decodeOk(buf, false) as UpdateMessage;
  assert.deepEqual(m.attributes?.asPath, attrs.asPath);
  assert.equal(m.attributes?.unknown, undefined, 'AS4_PATH is consumed, not passed on');
  // A 2-octet speaker prepended itself after the path left 4-octet country.
  assert.deepEqual(
    mergeAs4Path([{ type: 'sequence', asns: [100, 23456, 65001] }], [{ type: 'sequence', asns: [4200000000, 65001] }]),
    [{ type: 'sequence', asns: [100] }, { type: 'sequence', asns: [4200000000, 65001] }],
  );
  // Between 4-octet speakers AS4_PATH is discarded.
  const m4 = decodeOk(update('', '40 01 01 00  40 02 06 02 01 0000fde9  40 03 04 c6120001  c0 11 06 02 01 00000001', '18 0af401'), true) as UpdateMessage;
  assert.deepEqual(m4.attributes?.asPath, [{ type: 'sequence', asns: [65001] }]);
});

// What BIRD 2.0.12 actually sent (captured by test/netns/bgp-bird.test.ts): AS 65000, hold 9,
// id 198.18.77.1, capabilities MP IPv4/unicast, route refresh, graceful restart 60 s without
// forwarding state, 4-octet AS, enhanced route refresh (70) and long-lived GR (71).
const BIRD_OPEN = hex(`${MARKER} 0039 01 04 fde8 0009 c6124d01 1c 02 1a 01040001 0001 0200 4006 003c 0001 0100 4104 0000fde8 4600 4700`);

test('OPEN captured from BIRD 2 decodes, unknown capabilities kept', () => {
  const m = decodeOk(BIRD_OPEN);
  assert.ok(m.type === 'open');
  if (m.type !== 'open') return;
  assert.equal(m.asn, 65000);
  assert.equal(m.holdTime, 9);
  assert.equal(formatIP(m.bgpId), '198.18.77.1');
  assert.deepEqual(m.capabilities.slice(0, 4), [
    { kind: 'multiprotocol', afi: 1, safi: 1 },
    { kind: 'route-refresh' },
    { kind: 'graceful-restart', restarting: false, restartTime: 60, families: [{ afi: 1, safi: 1, forwardingPreserved: false }] },
    { kind: 'four-octet-asn', asn: 65000 },
  ]);
  assert.deepEqual(m.capabilities.slice(4).map((c) => c.kind === 'unknown' && c.code), [70, 71]);
  assert.equal(encodeOpen(m).toString('hex'), BIRD_OPEN.toString('hex'), 're-encodes byte for byte');
});

test('UPDATE: withdrawal and End-of-RIB captures', () => {
  const w = decodeOk(UPDATE_WITHDRAW) as UpdateMessage;
  assert.deepEqual(w.withdrawn.map(formatCidr), ['10.244.1.0/24']);
  assert.equal(w.attributes, undefined);
  assert.equal(encodeUpdate({ withdrawn: [parseCidr('10.244.1.0/24')], attributes: undefined, nlri: [] }).toString('hex'), UPDATE_WITHDRAW.toString('hex'));
  assert.equal(encodeEndOfRib().toString('hex'), END_OF_RIB.toString('hex'));
  const eor = decodeOk(END_OF_RIB) as UpdateMessage;
  assert.ok(isEndOfRib(eor));
  assert.ok(!isEndOfRib(w));
});

test('UPDATE: MP_REACH/MP_UNREACH for IPv4 unicast (RFC 4760) feed NLRI and withdrawals', () => {
  const buf = update('', '40 01 01 00  40 02 00  90 0e 00 0d 0001 01 04 c6120009 00 18 0af409  80 0f 07 0001 01 18 0af408', '');
  const m = decodeOk(buf) as UpdateMessage;
  assert.deepEqual(m.nlri.map(formatCidr), ['10.244.9.0/24']);
  assert.deepEqual(m.withdrawn.map(formatCidr), ['10.244.8.0/24']);
  assert.equal(m.attributes?.nextHop && formatIP(m.attributes.nextHop), '198.18.0.9');
});

test('UPDATE: unknown optional transitive attributes survive with the Partial bit; non-transitive ones are dropped', () => {
  const m = decodeOk(update('', '40 01 01 00  40 02 00  40 03 04 c6120001  c0 63 02 abcd  80 64 01 ff', '18 0af401')) as UpdateMessage;
  assert.deepEqual(m.attributes?.unknown?.map((u) => [u.code, u.value.toString('hex')]), [[0x63, 'abcd']]);
  const re = encodeUpdate(m);
  assert.ok(re.includes(hex('e0 63 02 abcd')), 'flags carry Partial (0x20) when passed on');
});

test('UPDATE: long attributes use the extended-length flag', () => {
  const communities = Array.from({ length: 100 }, (_, i) => 65000 * 65536 + i);
  const buf = encodeUpdate({ withdrawn: [], nlri: [parseCidr('10.1.0.0/16')], attributes: { origin: 0, asPath: [], nextHop: parseIPv4('198.18.0.1'), communities } });
  assert.ok(buf.includes(hex('d0 08 0190')), 'COMMUNITIES with 400 bytes has flags 0xd0 and a 2-byte length');
  assert.deepEqual((decodeOk(buf) as UpdateMessage).attributes?.communities, communities);
});

test('NOTIFICATION and ROUTE-REFRESH captures', () => {
  assert.equal(encodeNotification(6, 2).toString('hex'), NOTIFICATION_CEASE.toString('hex'));
  assert.deepEqual(decodeOk(NOTIFICATION_CEASE), { type: 'notification', code: 6, subcode: 2, data: Buffer.alloc(0) });
  assert.equal(encodeNotification(1, 2, hex('1001')).toString('hex'), NOTIFICATION_WITH_DATA.toString('hex'));
  assert.deepEqual(decodeOk(NOTIFICATION_WITH_DATA), { type: 'notification', code: 1, subcode: 2, data: hex('1001') });
  assert.equal(encodeRouteRefresh().toString('hex'), ROUTE_REFRESH.toString('hex'));
  assert.deepEqual(decodeOk(ROUTE_REFRESH), { type: 'route-refresh', afi: 1, safi: 1 });
});

test('framer: a stream cut at every possible point yields the same messages', () => {
  const stream = Buffer.concat([OPEN, KEEPALIVE, UPDATE_FULL, UPDATE_WITHDRAW, END_OF_RIB, ROUTE_REFRESH, NOTIFICATION_CEASE]);
  for (let cut = 1; cut < stream.length; cut++) {
    const f = new MessageFramer();
    const got = [...f.push(stream.subarray(0, cut)), ...f.push(stream.subarray(cut))];
    assert.equal(got.length, 7);
    assert.equal(f.buffered, 0);
    assert.deepEqual(Buffer.concat(got), stream);
  }
  // Byte by byte.
  const f = new MessageFramer();
  let n = 0;
  for (const b of stream) n += f.push(Buffer.from([b])).length;
  assert.equal(n, 7);
});

test('framer: bad marker and bad length poison the stream with 1/1 and 1/2', () => {
  const f = new MessageFramer();
  const bad = Buffer.from(KEEPALIVE);
  bad[3] = 0xfe;
  assert.throws(() => f.push(bad), (e: unknown) => e instanceof BgpError && e.notification.code === 1 && e.notification.subcode === 1);
  assert.throws(() => f.push(KEEPALIVE), BgpError);
  const g = new MessageFramer();
  assert.throws(() => g.push(hex(`${MARKER} 1001 04`)), (e: unknown) => e instanceof BgpError && e.notification.subcode === 2 && e.notification.data.toString('hex') === '1001');
  const h = new MessageFramer();
  assert.throws(() => h.push(hex(`${MARKER} 0012 04`)), (e: unknown) => e instanceof BgpError && e.notification.subcode === 2);
});

// ---------------------------------------------------------------- NOTIFICATIONs for malformed messages

test('header errors: 1/1 marker, 1/2 length, 1/3 type', () => {
  const badMarker = Buffer.from(KEEPALIVE);
  badMarker[0] = 0;
  expectNotification(decodeErr(badMarker), 1, 1, '');
  expectNotification(decodeErr(hex(`${MARKER} 0014 04 00`)), 1, 2, '0014'); // KEEPALIVE must be 19
  expectNotification(decodeErr(hex(`${MARKER} 0016 05 000100`)), 1, 2, '0016'); // ROUTE-REFRESH must be 23
  expectNotification(decodeErr(hex(`${MARKER} 0014 01 04`)), 1, 2, '0014'); // OPEN below 29
  expectNotification(decodeErr(hex(`${MARKER} 0015 02 0000`)), 1, 2, '0015'); // UPDATE below 23
  expectNotification(decodeErr(hex(`${MARKER} 0013 09`)), 1, 3, '09');
  expectNotification(decodeErr(hex(`${MARKER} 0020 04`)), 1, 2, '0020'); // length field disagrees with the buffer
});

test('OPEN errors: 2/1 version, 2/2 AS 0, 2/3 identifier, 2/4 parameter, 2/6 hold time, 2/0 malformed', () => {
  expectNotification(decodeErr(msg(1, '03 fde9 005a 0a000001 00')), 2, 1, '0004');
  expectNotification(decodeErr(msg(1, '04 0000 005a 0a000001 00')), 2, 2);
  expectNotification(decodeErr(msg(1, '04 fde9 005a 00000000 00')), 2, 3, '00000000');
  expectNotification(decodeErr(msg(1, '04 fde9 005a 0a000001 03 01 01 00')), 2, 4, '01');
  expectNotification(decodeErr(msg(1, '04 fde9 0002 0a000001 00')), 2, 6, '0002');
  expectNotification(decodeErr(msg(1, '04 fde9 0001 0a000001 00')), 2, 6, '0001');
  expectNotification(decodeErr(msg(1, '04 fde9 005a 0a000001 05 02 03 01 04 00')), 2, 0); // capability overruns
  expectNotification(decodeErr(msg(1, '04 fde9 005a 0a000001 09 02 06 41 04 0000')), 2, 0); // parameter overruns
  // Hold time 0 is legal (no keepalives).
  assert.equal((decodeOk(msg(1, '04 fde9 0000 0a000001 00')) as { holdTime: number }).holdTime, 0);
});

const ORIGIN = '40 01 01 00';
const ASPATH = '40 02 06 02 01 0000fde9';
const NEXTHOP = '40 03 04 c6120001';
const BASE = `${ORIGIN} ${ASPATH} ${NEXTHOP}`;
const NLRI = '18 0af401';

// Only what RFC 7606 still answers with a session reset; the malformed attributes it handles
// with treat-as-withdraw or attribute-discard are in bgp-rfc7606.test.ts.
test('UPDATE errors that still reset the session: 3/1 lengths and repeated MP attributes, 3/2, 3/9 MP_REACH, 3/10 NLRI', () => {
  expectNotification(decodeErr(hex(`${MARKER} 001b 02 0010 18 0af401 0000`)), 3, 1); // withdrawn length overruns
  expectNotification(decodeErr(hex(`${MARKER} 0017 02 0000 0009`)), 3, 1); // attribute length overruns
  const mpUnreach = '80 0f 07 0001 01 18 0af408';
  expectNotification(decodeErr(update('', `${mpUnreach} ${mpUnreach}`, ''), true), 3, 1); // MP_UNREACH_NLRI twice
  expectNotification(decodeErr(update('', `${BASE} 40 63 01 00`, NLRI), true), 3, 2, '40630100');
  expectNotification(decodeErr(update('', `${BASE} 90 0e 00 04 0001 01 04`, NLRI), true), 3, 9); // MP_REACH_NLRI cut short
  expectNotification(decodeErr(update('', BASE, '21 0a000001ff'), true), 3, 10);
  expectNotification(decodeErr(update('', BASE, '18 0af4'), true), 3, 10);
  expectNotification(decodeErr(update('18 0a', '', ''), true), 3, 10); // withdrawn prefix cut short
  // Without NLRI nothing is mandatory.
  assert.ok(decodeOk(update('18 0af401', '', ''), true));
});

// ---------------------------------------------------------------- packing

test('packing: 10,000 prefixes fit in full UPDATEs under 4096 bytes and decode back', () => {
  const prefixes = Array.from({ length: 10000 }, (_, i) => parseCidr(`10.${(i >> 8) & 255}.${i & 255}.0/24`));
  const attrs = { origin: 0 as const, asPath: [{ type: 'sequence' as const, asns: [65001] }], nextHop: parseIPv4('198.18.0.1') };
  const msgs = packAnnouncements(attrs, prefixes, { fourOctetAs: true });
  assert.ok(msgs.every((m) => m.length <= 4096));
  // 4 bytes per /24 and ~4050 bytes of room: about a thousand per message.
  assert.ok(msgs.length <= 11, `${msgs.length} messages`);
  const back = msgs.flatMap((m) => (decodeOk(m, true) as UpdateMessage).nlri.map(formatCidr));
  assert.deepEqual(back, prefixes.map(formatCidr));
  const wd = packWithdrawals(prefixes);
  assert.ok(wd.every((m) => m.length <= 4096));
  assert.equal(wd.flatMap((m) => (decodeOk(m) as UpdateMessage).withdrawn).length, 10000);
});

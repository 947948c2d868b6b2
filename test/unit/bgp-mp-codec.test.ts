// IPv6 unicast in BGP (RFC 4760 multiprotocol attributes, RFC 2545 next hops) against byte
// layouts written out by hand: capabilities, MP_REACH_NLRI with 16- and 32-byte next hops,
// MP_UNREACH_NLRI, the IPv6 End-of-RIB, packing, and what each malformed MP attribute costs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type BgpMessage, type UpdateMessage, announcements, decodeMessage, encodeEndOfRib, encodeOpen, encodeUpdate, isEndOfRib,
  nextHopProblem, packAnnouncements, packWithdrawals,
} from '../../src/bgp/codec.js';
import { BgpError } from '../../src/bgp/errors.js';
import { formatCidr, formatIP, parseCidr, parseIP, parseIPv4 } from '../../src/net/ip.js';
import { MARKER, hex, update } from './bgp-wire.js';

function decodeOk(buf: Buffer): BgpMessage {
  const d = decodeMessage(buf, { fourOctetAs: true });
  if (!d.ok) assert.fail(`unexpected decode error: ${d.error.message}`);
  return d.value;
}
const decodeUpdate = (buf: Buffer): UpdateMessage => decodeOk(buf) as UpdateMessage;
function resetWith(buf: Buffer, code: number, subcode: number): BgpError {
  const d = decodeMessage(buf, { fourOctetAs: true });
  if (d.ok) assert.fail(`expected a session reset, got a decoded ${d.value.type}`);
  assert.ok(d.error instanceof BgpError);
  assert.deepEqual([d.error.notification.code, d.error.notification.subcode], [code, subcode], d.error.message);
  return d.error;
}

const ORIGIN = '40 01 01 00';
const ASPATH = '40 02 06 02 01 0000fde9';
// 2001:2:0:1::2, the global next hop, and fe80::1 for RFC 2545's second one.
const NH = '2001 0002 0000 0001 0000 0000 0000 0002';
const LL = 'fe80 0000 0000 0000 0000 0000 0000 0001';
// fd00:10:244:1::/64, fd00:10:245::/48, fd00::1/128, ::/0
const NLRI6 = '40 fd00 0010 0244 0001  30 fd00 0010 0245  80 fd00 0000 0000 0000 0000 0000 0000 0001  00';
const NLRI6_TEXT = ['fd00:10:244:1::/64', 'fd00:10:245::/48', 'fd00::1/128', '::/0'];
const mpReach = (nhLenHex: string, nhHex: string, nlriHex = NLRI6, flags = '80'): string => {
  const body = hex(`0002 01 ${nhLenHex} ${nhHex} 00 ${nlriHex}`);
  return `${flags} 0e ${body.length.toString(16).padStart(2, '0')} ${body.toString('hex')}`;
};
const mpUnreach = (nlriHex: string, afi = '0002'): string => {
  const body = hex(`${afi} 01 ${nlriHex}`);
  return `80 0f ${body.length.toString(16).padStart(2, '0')} ${body.toString('hex')}`;
};

test('OPEN: IPv4 and IPv6 unicast capabilities, and graceful restart listing both families', () => {
  const caps = [
    { kind: 'multiprotocol' as const, afi: 1, safi: 1 },
    { kind: 'multiprotocol' as const, afi: 2, safi: 1 },
    { kind: 'graceful-restart' as const, restarting: false, restartTime: 120, families: [{ afi: 1, safi: 1, forwardingPreserved: true }, { afi: 2, safi: 1, forwardingPreserved: true }] },
  ];
  const wire = hex(`${MARKER} 0037 01 04 fde9 005a 0a000001 1a 02 18  01 04 0001 00 01  01 04 0002 00 01  40 0a 0078 0001 01 80 0002 01 80`);
  assert.equal(encodeOpen({ asn: 65001, holdTime: 90, bgpId: parseIPv4('10.0.0.1'), capabilities: caps }).toString('hex'), wire.toString('hex'));
  const m = decodeOk(wire);
  assert.ok(m.type === 'open');
  assert.deepEqual(m.capabilities, caps);
});

test('MP_REACH_NLRI: IPv6 prefixes with a 16-byte next hop decode and re-encode byte for byte', () => {
  const wire = update('', `${mpReach('10', NH)} ${ORIGIN} ${ASPATH}`, '');
  const m = decodeUpdate(wire);
  assert.deepEqual(m.nlri, [], 'no IPv4 NLRI');
  assert.equal(m.attributes?.nextHop, undefined, 'NEXT_HOP is IPv4\'s; there is none here');
  assert.deepEqual(m.attributes?.asPath, [{ type: 'sequence', asns: [65001] }]);
  assert.equal(m.ipv6 && formatIP(m.ipv6.nextHop), '2001:2:0:1::2');
  assert.equal(m.ipv6?.linkLocalNextHop, undefined);
  assert.deepEqual(m.ipv6?.nlri.map(formatCidr), NLRI6_TEXT);
  assert.equal(m.errors, undefined);
  assert.equal(encodeUpdate(m, { fourOctetAs: true }).toString('hex'), wire.toString('hex'));
  // What the RIB gets: the shared attributes with MP_REACH_NLRI's next hop.
  const [a] = announcements(m);
  assert.equal(a?.family, 'ipv6');
  assert.equal(a?.attributes.nextHop && formatIP(a.attributes.nextHop), '2001:2:0:1::2');
});

test('MP_REACH_NLRI: a 32-byte next hop (global + link-local, RFC 2545 §3) is accepted; the global one is the route\'s', () => {
  const wire = update('', `${mpReach('20', `${NH} ${LL}`)} ${ORIGIN} ${ASPATH}`, '');
  const m = decodeUpdate(wire);
  assert.equal(m.ipv6 && formatIP(m.ipv6.nextHop), '2001:2:0:1::2');
  assert.equal(m.ipv6?.linkLocalNextHop && formatIP(m.ipv6.linkLocalNextHop), 'fe80::1');
  assert.deepEqual(m.ipv6?.nlri.map(formatCidr), NLRI6_TEXT);
  assert.equal(encodeUpdate(m, { fourOctetAs: true }).toString('hex'), wire.toString('hex'));
  const nh = announcements(m)[0]?.attributes.nextHop;
  assert.equal(nh && formatIP(nh), '2001:2:0:1::2');
  // A second address that is not link-local is no link-local next hop.
  const odd = decodeUpdate(update('', `${mpReach('20', `${NH} ${NH}`)} ${ORIGIN} ${ASPATH}`, ''));
  assert.equal(odd.ipv6?.linkLocalNextHop, undefined);
  assert.equal(odd.errors, undefined);
});

test('MP_UNREACH_NLRI: IPv6 withdrawals join the IPv4 ones in `withdrawn`', () => {
  const wire = update('18 0af401', mpUnreach('40 fd00 0010 0244 0001  30 fd00 0010 0245'), '');
  const m = decodeUpdate(wire);
  assert.deepEqual(m.withdrawn.map(formatCidr), ['10.244.1.0/24', 'fd00:10:244:1::/64', 'fd00:10:245::/48']);
  assert.equal(m.attributes, undefined);
  assert.ok(!isEndOfRib(m));
  assert.equal(encodeUpdate(m).toString('hex'), wire.toString('hex'));
});

test('End-of-RIB: IPv6\'s is an UPDATE holding only an empty MP_UNREACH_NLRI (RFC 4724 §2)', () => {
  const wire = hex(`${MARKER} 001d 02 0000 0006 80 0f 03 0002 01`);
  assert.equal(encodeEndOfRib('ipv6').toString('hex'), wire.toString('hex'));
  const m = decodeUpdate(wire);
  assert.equal(m.endOfRib, 'ipv6');
  assert.ok(isEndOfRib(m));
  assert.equal(decodeUpdate(encodeEndOfRib()).endOfRib, 'ipv4');
  // Not End-of-RIB: another family's (AFI 25), one that withdraws something, one with company.
  assert.ok(!isEndOfRib(decodeUpdate(update('', mpUnreach('', '0019'), ''))));
  assert.ok(!isEndOfRib(decodeUpdate(update('', mpUnreach('40 fd00 0010 0244 0001'), ''))));
  assert.ok(!isEndOfRib(decodeUpdate(update('', `${mpUnreach('')} 80 63 01 00`, ''))));
  assert.equal(decodeUpdate(update('', mpUnreach('', '0001'), '')).endOfRib, 'ipv4', 'IPv4 in its MP form too');
});

test('one UPDATE with IPv4 NLRI and IPv6 MP_REACH_NLRI: each family keeps its own next hop', () => {
  const wire = update('', `${mpReach('10', NH, '40 fd00 0010 0244 0001')} ${ORIGIN} ${ASPATH} 40 03 04 c6120001`, '18 0af401');
  const m = decodeUpdate(wire);
  assert.deepEqual(announcements(m).map((a) => [a.family, a.attributes.nextHop && formatIP(a.attributes.nextHop), a.nlri.map(formatCidr)]), [
    ['ipv4', '198.18.0.1', ['10.244.1.0/24']],
    ['ipv6', '2001:2:0:1::2', ['fd00:10:244:1::/64']],
  ]);
  assert.equal(encodeUpdate(m, { fourOctetAs: true }).toString('hex'), wire.toString('hex'));
  // RFC 4760 §3: NEXT_HOP beside IPv6-only NLRI is ignored.
  const extra = decodeUpdate(update('', `${mpReach('10', NH)} ${ORIGIN} ${ASPATH} 40 03 04 c6120001`, ''));
  assert.equal(extra.attributes?.nextHop, undefined);
  assert.equal(extra.ipv6?.nlri.length, 4);
});

test('RFC 7606 session resets for MP attributes: next hop length (3/9), unreadable IPv6 NLRI (3/10), repeats (3/1)', () => {
  for (const [nhLen, nh] of [['04', 'c6120001'], ['14', `${NH} 00000000`], ['00', ''], ['18', `${NH} ${NH.slice(0, 19)}`]] as const) {
    resetWith(update('', `${mpReach(nhLen, nh)} ${ORIGIN} ${ASPATH}`, ''), 3, 9);
  }
  resetWith(update('', '80 0e 08 0002 01 20 20010002', ''), 3, 9); // next hop runs past the attribute
  resetWith(update('', `80 0e 03 0002 01`, ''), 3, 9); // shorter than the fixed fields
  resetWith(update('', `80 0f 02 0002`, ''), 3, 9); // MP_UNREACH_NLRI without its SAFI
  resetWith(update('', `${mpReach('10', NH, '81 fd00')} ${ORIGIN} ${ASPATH}`, ''), 3, 10); // prefix length 129
  resetWith(update('', `${mpReach('10', NH, '40 fd00 0010')} ${ORIGIN} ${ASPATH}`, ''), 3, 10); // /64 cut short
  resetWith(update('', mpUnreach('82 fd00'), ''), 3, 10);
  const reach = mpReach('10', NH, '40 fd00 0010 0244 0001');
  resetWith(update('', `${reach} ${reach} ${ORIGIN} ${ASPATH}`, ''), 3, 1);
});

test('RFC 7606 treat-as-withdraw covers IPv6 NLRI: bad next hops, bad flags, other malformed attributes', () => {
  const cases: [string, string, number][] = [
    ['multicast next hop', mpReach('10', 'ff02 0000 0000 0000 0000 0000 0000 0001'), 8],
    ['unspecified next hop', mpReach('10', '0'.repeat(32)), 8],
    ['loopback next hop', mpReach('10', `${'0'.repeat(31)}1`), 8],
    ['link-local only (16 bytes)', mpReach('10', LL), 8],
    ['link-local only (32 bytes, global ::)', mpReach('20', `${'0'.repeat(32)} ${LL}`), 8],
    ['IPv4-mapped next hop', mpReach('10', '0000 0000 0000 0000 0000 ffff c612 0001'), 8],
    ['MP_REACH_NLRI marked transitive', mpReach('10', NH, NLRI6, 'c0'), 4],
  ];
  for (const [what, reach, subcode] of cases) {
    const m = decodeUpdate(update('', `${reach} ${ORIGIN} ${ASPATH}`, ''));
    assert.equal(m.ipv6, undefined, what);
    assert.equal(m.attributes, undefined, what);
    assert.deepEqual(m.withdrawn.map(formatCidr), NLRI6_TEXT, what);
    assert.equal(m.errors?.find((e) => e.action === 'treat-as-withdraw')?.subcode, subcode, what);
  }
  const badOrigin = decodeUpdate(update('', `${mpReach('10', NH)} 40 01 01 03 ${ASPATH}`, ''));
  assert.deepEqual(badOrigin.withdrawn.map(formatCidr), NLRI6_TEXT);
  const noAsPath = decodeUpdate(update('', `${mpReach('10', NH)} ${ORIGIN}`, ''));
  assert.deepEqual(noAsPath.withdrawn.map(formatCidr), NLRI6_TEXT);
  assert.equal(noAsPath.errors?.[0]?.subcode, 3);
  // An IPv6-only UPDATE needs no NEXT_HOP: nothing is missing.
  assert.equal(decodeUpdate(update('', `${mpReach('10', NH)} ${ORIGIN} ${ASPATH}`, '')).errors, undefined);
});

test('next hops a route cannot use, and ones it can', () => {
  for (const bad of ['::', '::1', 'ff02::1', 'fe80::1', '::ffff:198.18.0.1', '0.0.0.0', '224.0.0.1']) assert.ok(nextHopProblem(parseIP(bad)), bad);
  for (const good of ['2001:2::1', 'fd00::1', '198.18.0.1']) assert.equal(nextHopProblem(parseIP(good)), undefined, good);
});

test('packing: 5,000 IPv6 /64s fill UPDATEs under 4096 bytes; mixed withdrawals split by family', () => {
  const prefixes = Array.from({ length: 5000 }, (_, i) => parseCidr(`fd00:10:${(i >> 8).toString(16)}:${(i & 255).toString(16)}::/64`));
  const attrs = { origin: 0 as const, asPath: [{ type: 'sequence' as const, asns: [65001] }], nextHop: parseIP('2001:2::1') };
  const msgs = packAnnouncements(attrs, prefixes, { fourOctetAs: true });
  assert.ok(msgs.every((m) => m.length <= 4096));
  // 9 bytes per /64 and ~4030 bytes of room: about 447 per message.
  assert.ok(msgs.length <= 12, `${msgs.length} messages`);
  const back = msgs.map(decodeUpdate);
  assert.deepEqual(back.flatMap((m) => m.ipv6?.nlri.map(formatCidr) ?? []), prefixes.map(formatCidr));
  assert.ok(back.every((m) => m.ipv6 && formatIP(m.ipv6.nextHop) === '2001:2::1' && m.nlri.length === 0 && m.attributes?.nextHop === undefined));
  assert.throws(() => packAnnouncements(attrs, [parseCidr('10.0.0.0/8')], { fourOctetAs: true }), /IPv4 prefixes cannot share an IPv6 next hop/);
  assert.throws(() => packAnnouncements({ ...attrs, nextHop: parseIPv4('198.18.0.1') }, prefixes.slice(0, 1), { fourOctetAs: true }), /IPv6 prefixes cannot share an IPv4 next hop/);
  const v4 = Array.from({ length: 1500 }, (_, i) => parseCidr(`10.${i >> 8}.${i & 255}.0/24`));
  const wd = packWithdrawals([...v4, ...prefixes]);
  assert.ok(wd.every((m) => m.length <= 4096));
  const gone = wd.map(decodeUpdate).flatMap((m) => m.withdrawn.map(formatCidr));
  assert.deepEqual(gone, [...v4, ...prefixes].map(formatCidr));
});

test('IPv6 prefixes: host bits are not sent, prefix lengths 0 to 128 round-trip', () => {
  const m = decodeUpdate(encodeUpdate({ withdrawn: [parseCidr('fd00::1:2:3/64')], attributes: undefined, nlri: [] }));
  assert.deepEqual(m.withdrawn.map(formatCidr), ['fd00::/64']);
  const all = Array.from({ length: 129 }, (_, len) => parseCidr(`2001:2:ffff:ffff:ffff:ffff:ffff:ffff/${len}`));
  const back = packWithdrawals(all).map(decodeUpdate).flatMap((u) => u.withdrawn);
  assert.deepEqual(back.map((c) => c.prefix), all.map((c) => c.prefix));
  assert.equal(formatCidr(back[48]!), '2001:2:ffff::/48');
  assert.equal(formatCidr(back[0]!), '::/0');
  assert.equal(formatCidr(back[128]!), '2001:2:ffff:ffff:ffff:ffff:ffff:ffff/128');
});

// RFC 7606 (revised UPDATE error handling) and the OPEN's 4-octet AS checks, against byte
// layouts written out by hand. A malformed attribute now costs the routes of its UPDATE
// (treat-as-withdraw) or just the attribute (attribute-discard) instead of the whole session;
// the cases RFC 7606 still answers with a session reset are in bgp-codec.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type UpdateMessage, decodeMessage, encodeOpen, isEndOfRib } from '../../src/bgp/codec.js';
import { BgpError } from '../../src/bgp/errors.js';
import { checkOpen } from '../../src/bgp/fsm.js';
import { formatCidr, formatIP, parseIPv4 } from '../../src/net/ip.js';
import { hex, msg, update } from './bgp-wire.js';

function decodeUpdateOk(buf: Buffer, fourOctetAs = true): UpdateMessage {
  const d = decodeMessage(buf, { fourOctetAs });
  if (!d.ok) assert.fail(`expected the UPDATE to be handled without a session reset, got ${d.error.message}`);
  assert.equal(d.value.type, 'update');
  return d.value as UpdateMessage;
}
function decodeErr(buf: Buffer, fourOctetAs = true): BgpError {
  const d = decodeMessage(buf, { fourOctetAs });
  if (d.ok) assert.fail(`expected a session reset, got a decoded ${d.value.type}`);
  assert.ok(d.error instanceof BgpError);
  return d.error;
}

const ORIGIN = '40 01 01 00';
const ASPATH = '40 02 06 02 01 0000fde9';
const NEXTHOP = '40 03 04 c6120001';
const BASE = `${ORIGIN} ${ASPATH} ${NEXTHOP}`;
const NLRI = '18 0af401'; // 10.244.1.0/24

const treatAsWithdraw: [string, string, number][] = [
  ['ORIGIN marked optional (§3 c)', `c0 01 01 00 ${ASPATH} ${NEXTHOP}`, 4],
  ['ORIGIN with the Partial bit', `60 01 01 00 ${ASPATH} ${NEXTHOP}`, 4],
  ['ORIGIN of length 2 (§7.1)', `40 01 02 0000 ${ASPATH} ${NEXTHOP}`, 5],
  ['ORIGIN value 3 (§7.1)', `40 01 01 03 ${ASPATH} ${NEXTHOP}`, 6],
  ['AS_PATH segment type 5 (§7.2)', `${ORIGIN} 40 02 06 05 01 0000fde9 ${NEXTHOP}`, 11],
  ['AS_PATH segment running past the attribute', `${ORIGIN} 40 02 06 02 02 0000fde9 ${NEXTHOP}`, 11],
  ['AS_PATH empty segment', `${ORIGIN} 40 02 02 02 00 ${NEXTHOP}`, 11],
  ['AS_PATH truncated segment header', `${ORIGIN} 40 02 07 02 01 0000fde9 02 ${NEXTHOP}`, 11],
  ['NEXT_HOP of length 5 (§7.3)', `${ORIGIN} ${ASPATH} 40 03 05 c612000101`, 5],
  ['NEXT_HOP multicast (RFC 4271 §6.3: ignore the route)', `${ORIGIN} ${ASPATH} 40 03 04 e0000001`, 8],
  ['NEXT_HOP 0.0.0.0', `${ORIGIN} ${ASPATH} 40 03 04 00000000`, 8],
  ['MULTI_EXIT_DISC marked transitive', `${BASE} c0 04 04 00000001`, 4],
  ['MULTI_EXIT_DISC of length 3 (§7.4)', `${BASE} 80 04 03 000001`, 5],
  ['LOCAL_PREF of length 2 (§7.5)', `${BASE} 40 05 02 0001`, 5],
  ['COMMUNITIES of length 3 (§7.8)', `${BASE} c0 08 03 000001`, 9],
  ['ORIGINATOR_ID of length 3 (§7.9)', `${BASE} 80 09 03 0a0000`, 5],
  ['CLUSTER_LIST of length 5 (§7.10)', `${BASE} 80 0a 05 0a00000301`, 9],
  ['last attribute overruns the attribute list (§4)', `${BASE} 40 05 09 00`, 5],
  ['truncated attribute header (§4)', `${BASE} 40`, 1],
  ['extended-length header cut short (§4)', `${BASE} 50 05 00`, 1],
  ['ORIGIN missing (§3 d)', `${ASPATH} ${NEXTHOP}`, 3],
  ['AS_PATH missing', `${ORIGIN} ${NEXTHOP}`, 3],
  ['NEXT_HOP missing', `${ORIGIN} ${ASPATH}`, 3],
];

for (const [what, attrs, subcode] of treatAsWithdraw) {
  test(`RFC 7606 treat-as-withdraw: ${what}`, () => {
    // The UPDATE also withdraws a prefix of its own: both end up withdrawn, the session stays.
    const m = decodeUpdateOk(update('18 0af402', attrs, NLRI));
    assert.deepEqual(m.nlri, []);
    assert.equal(m.attributes, undefined);
    assert.deepEqual(m.withdrawn.map(formatCidr), ['10.244.2.0/24', '10.244.1.0/24']);
    const e = m.errors?.find((x) => x.action === 'treat-as-withdraw');
    assert.ok(e, JSON.stringify(m.errors));
    assert.equal(e.subcode, subcode, e.message);
    assert.ok(!isEndOfRib(m));
  });
}

test('RFC 7606 §3 g: a repeated attribute is discarded, the first one counts', () => {
  const m = decodeUpdateOk(update('', `${BASE} 40 01 01 02`, NLRI));
  assert.equal(m.attributes?.origin, 0);
  assert.deepEqual(m.nlri.map(formatCidr), ['10.244.1.0/24']);
  assert.deepEqual(m.errors?.map((e) => [e.action, e.subcode]), [['attribute-discard', 1]]);
  const n = decodeUpdateOk(update('', `${ORIGIN} ${NEXTHOP} ${ASPATH} 40 03 04 c6120002`, NLRI));
  assert.equal(n.attributes?.nextHop && formatIP(n.attributes.nextHop), '198.18.0.1');
});

test('RFC 7606 §7.6/§7.7: a bad ATOMIC_AGGREGATE or AGGREGATOR is dropped, the route kept', () => {
  const a = decodeUpdateOk(update('', `${BASE} 40 06 01 00`, NLRI));
  assert.equal(a.attributes?.atomicAggregate, undefined);
  assert.deepEqual(a.nlri.map(formatCidr), ['10.244.1.0/24']);
  assert.deepEqual(a.errors?.map((e) => [e.action, e.subcode]), [['attribute-discard', 5]]);
  // Between 4-octet speakers AGGREGATOR is 8 bytes.
  const g = decodeUpdateOk(update('', `${BASE} c0 07 06 fde9 0a000001`, NLRI));
  assert.equal(g.attributes?.aggregator, undefined);
  assert.deepEqual(g.nlri.map(formatCidr), ['10.244.1.0/24']);
  assert.deepEqual(g.errors?.map((e) => e.action), ['attribute-discard']);
});

test('RFC 6793 §6: a malformed AS4_PATH from a 2-octet speaker is discarded; AS_PATH stands', () => {
  const m = decodeUpdateOk(update('', `${ORIGIN} 40 02 04 02 01 fde9 ${NEXTHOP} c0 11 03 02 01 00`, NLRI), false);
  assert.deepEqual(m.attributes?.asPath, [{ type: 'sequence', asns: [65001] }]);
  assert.deepEqual(m.errors?.map((e) => [e.action, e.subcode]), [['attribute-discard', 11]]);
});

test('RFC 7606 §3 f: a discard and a treat-as-withdraw together withdraw', () => {
  const m = decodeUpdateOk(update('', `${BASE} 40 06 01 00 c0 08 03 000001`, NLRI));
  assert.deepEqual(m.nlri, []);
  assert.deepEqual(m.withdrawn.map(formatCidr), ['10.244.1.0/24']);
  assert.deepEqual(m.errors?.map((e) => e.action), ['attribute-discard', 'treat-as-withdraw']);
});

test('RFC 7606 §5.2: attribute errors in an UPDATE that announces nothing still reset the session', () => {
  const e = decodeErr(update('18 0af402', `40 01 01 03 ${ASPATH} ${NEXTHOP}`, ''));
  assert.equal(e.notification.code, 3);
  assert.equal(e.notification.subcode, 6);
  assert.equal(e.notification.data.toString('hex'), '40010103');
  // A discard alone does not: nothing is in doubt.
  const d = decodeUpdateOk(update('', '40 06 01 00', ''));
  assert.deepEqual(d.errors?.map((x) => x.action), ['attribute-discard']);
  assert.ok(!isEndOfRib(d), 'an UPDATE emptied by a discard is not End-of-RIB');
  // A clean UPDATE carries no error list at all, and End-of-RIB stays End-of-RIB.
  assert.equal(decodeUpdateOk(update('', BASE, NLRI)).errors, undefined);
  assert.ok(isEndOfRib(decodeUpdateOk(update('', '', ''))));
});

test('RFC 7606 treat-as-withdraw also covers MP_REACH_NLRI prefixes', () => {
  // ORIGIN value 3, NLRI only inside MP_REACH_NLRI (IPv4 unicast, next hop 198.18.0.9).
  const m = decodeUpdateOk(update('', `40 01 01 03 40 02 00 90 0e 00 0d 0001 01 04 c6120009 00 18 0af409`, ''));
  assert.deepEqual(m.withdrawn.map(formatCidr), ['10.244.9.0/24']);
  assert.deepEqual(m.nlri, []);
});

// ---------------------------------------------------------------- OPEN: the 4-octet AS capability

function openErr(bodyHex: string): BgpError {
  return decodeErr(msg(1, bodyHex));
}

test('OPEN: a 4-octet AS capability that disagrees with the 2-octet AS field is Bad Peer AS (2/2)', () => {
  // AS field 65001 (fde9), capability AS 64512 (fc00).
  const e = openErr('04 fde9 005a 0a000001 08 02 06 41 04 0000fc00');
  assert.deepEqual([e.notification.code, e.notification.subcode, e.notification.data.toString('hex')], [2, 2, '0000fc00']);
});

test('OPEN: two 4-octet AS capabilities that disagree, or one carrying AS_TRANS, are 2/2', () => {
  const twice = openErr('04 fde9 005a 0a000001 0e 02 0c 41 04 0000fde9 41 04 0000fdea');
  assert.deepEqual([twice.notification.code, twice.notification.subcode], [2, 2]);
  const trans = openErr('04 5ba0 005a 0a000001 08 02 06 41 04 00005ba0');
  assert.deepEqual([trans.notification.code, trans.notification.subcode], [2, 2]);
});

test('OPEN: AS_TRANS in the field with a small AS in the capability, or the capability twice alike, is accepted', () => {
  const a = decodeMessage(msg(1, '04 5ba0 005a 0a000001 08 02 06 41 04 0000fde9'));
  assert.ok(a.ok && a.value.type === 'open' && a.value.asn === 65001);
  const b = decodeMessage(msg(1, '04 fde9 005a 0a000001 0e 02 0c 41 04 0000fde9 41 04 0000fde9'));
  assert.ok(b.ok && b.value.type === 'open' && b.value.asn === 65001);
  // A capability of the wrong length is malformed (2/0), as FRR and BIRD answer it too.
  const c = openErr('04 fde9 005a 0a000001 06 02 04 41 02 fde9');
  assert.deepEqual([c.notification.code, c.notification.subcode], [2, 0]);
});

test('OPEN: a configured peer AS the 4-octet capability does not match is 2/2 with the 4-octet AS as data', () => {
  const cfg = { localAsn: 64512, peerAsn: 65001, bgpId: parseIPv4('10.0.0.1'), holdTime: 90, passive: false, connectRetrySeconds: 120, openHoldSeconds: 240 };
  const d = decodeMessage(encodeOpen({ asn: 4200000000, holdTime: 90, bgpId: parseIPv4('10.0.0.2'), capabilities: [{ kind: 'four-octet-asn', asn: 4200000000 }] }));
  assert.ok(d.ok && d.value.type === 'open');
  if (!d.ok || d.value.type !== 'open') return;
  const bad = checkOpen(cfg, d.value);
  assert.deepEqual(bad && [bad.code, bad.subcode, bad.data.toString('hex')], [2, 2, 'fa56ea00']);
  assert.match(bad?.message ?? '', /4200000000.*65001/);
});

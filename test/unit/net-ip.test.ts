import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cidrContains, cidrContainsCidr, cidrOverlaps, cidrSize, formatCidr, formatIP, ipAdd, ipFromBytes,
  ipToBytes, isNetworkAddress, lastAddress, networkOf, nthAddress, nthSubnet, parseCidr, parseIP,
  parseSubnetKey, prefixToMask, subnetKey, tryParseCidr, tryParseIP,
} from '../../src/net/ip.js';

test('IPv4 parse/format round trip and rejects', () => {
  for (const s of ['0.0.0.0', '10.244.3.1', '255.255.255.255', '198.18.0.1']) assert.equal(formatIP(parseIP(s)), s);
  for (const s of ['256.1.1.1', '1.2.3', '01.2.3.4', '1.2.3.4.5', '', 'a.b.c.d', '1.2.3.-1', ' 1.2.3.4']) {
    assert.equal(tryParseIP(s), undefined, s);
  }
});

test('IPv6 parse/format follows RFC 5952', () => {
  const cases: Array<[string, string]> = [
    ['::', '::'], ['::1', '::1'], ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:DB8::', '2001:db8::'], ['fe80::1:2', 'fe80::1:2'], ['1:0:0:0:0:0:0:8', '1::8'],
    ['::ffff:10.0.0.1', '::ffff:10.0.0.1'], ['::ffff:a00:1', '::ffff:10.0.0.1'], ['::fffe:a00:1', '::fffe:a00:1'], ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'], ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
  ];
  for (const [input, want] of cases) assert.equal(formatIP(parseIP(input)), want, input);
  for (const s of [':::', '1::2::3', '1:2:3:4:5:6:7:8:9', 'g::1', '12345::', '1:2:3:4:5:6:7::8']) assert.equal(tryParseIP(s), undefined, s);
});

test('bytes round trip', () => {
  assert.deepEqual([...ipToBytes(parseIP('10.1.2.3'))], [10, 1, 2, 3]);
  assert.equal(formatIP(ipFromBytes(ipToBytes(parseIP('2001:db8::42')))), '2001:db8::42');
  assert.throws(() => ipFromBytes(new Uint8Array(5)));
});

test('CIDR math', () => {
  const c = parseCidr('10.244.3.7/24');
  assert.equal(formatCidr(networkOf(c)), '10.244.3.0/24');
  assert.equal(isNetworkAddress(c), false);
  assert.equal(formatIP(lastAddress(c)), '10.244.3.255');
  assert.equal(cidrSize(c), 256n);
  assert.equal(formatIP(nthAddress(c, 1)), '10.244.3.1');
  assert.throws(() => nthAddress(c, 256));
  assert.ok(cidrContains(c, parseIP('10.244.3.200')));
  assert.ok(!cidrContains(c, parseIP('10.244.4.1')));
  assert.ok(!cidrContains(c, parseIP('::1')));
  assert.ok(cidrContainsCidr(parseCidr('10.244.0.0/16'), parseCidr('10.244.3.0/24')));
  assert.ok(!cidrContainsCidr(parseCidr('10.244.3.0/24'), parseCidr('10.244.0.0/16')));
  assert.ok(cidrOverlaps(parseCidr('10.244.3.0/24'), parseCidr('10.244.0.0/16')));
  assert.ok(!cidrOverlaps(parseCidr('10.244.3.0/24'), parseCidr('10.244.4.0/24')));
  assert.equal(formatIP(prefixToMask(4, 24)), '255.255.255.0');
  assert.equal(formatIP(prefixToMask(6, 64)), 'ffff:ffff:ffff:ffff::');
  assert.equal(formatIP(ipAdd(parseIP('10.0.0.255'), 1)), '10.0.1.0');
  assert.throws(() => ipAdd(parseIP('255.255.255.255'), 1));
  for (const s of ['10.0.0.0/33', '10.0.0.0', '10.0.0.0/', '10.0.0.0/08', 'x/8', '::/129']) assert.equal(tryParseCidr(s), undefined, s);
  assert.equal(formatCidr(networkOf(parseCidr('2001:db8::5/64'))), '2001:db8::/64');
});

test('subnets of a network and flannel subnet keys', () => {
  const net = parseCidr('10.244.0.0/16');
  assert.equal(formatCidr(nthSubnet(net, 24, 0)), '10.244.0.0/24');
  assert.equal(formatCidr(nthSubnet(net, 24, 255)), '10.244.255.0/24');
  assert.throws(() => nthSubnet(net, 24, 256));
  assert.throws(() => nthSubnet(net, 8, 0));
  const s = parseCidr('10.244.3.0/24');
  assert.equal(subnetKey(s), '10.244.3.0-24');
  const back = parseSubnetKey('10.244.3.0-24');
  assert.ok(back);
  assert.equal(formatCidr(back), '10.244.3.0/24');
  assert.equal(parseSubnetKey('10.244.3.1-24'), undefined);
  assert.equal(parseSubnetKey('garbage'), undefined);
  assert.equal(formatCidr(parseSubnetKey('fd00:1::-64')!), 'fd00:1::/64');
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CniCode, WeftError } from '../../src/errors.js';
import { parseIpamConfig, describeRangeSet } from '../../src/plugins/ipam/config.js';
import { candidates, pickFree, usableCount } from '../../src/plugins/ipam/allocator.js';
import { formatIP, parseIP, type IP } from '../../src/net/ip.js';

function code7(section: unknown, key: RegExp): void {
  assert.throws(
    () => parseIpamConfig(section),
    (e: unknown) => e instanceof WeftError && e.code === CniCode.InvalidNetworkConfig && key.test(e.message),
  );
}

const all = (gen: Iterable<{ ip: IP }>): string[] => [...gen].map((c) => formatIP(c.ip));

describe('ipam config', () => {
  it('defaults like host-local: start .1, end broadcast-1, gateway .1, dataDir', () => {
    const c = parseIpamConfig({ type: 'weft-ipam', ranges: [[{ subnet: '10.9.0.0/29' }], [{ subnet: 'fd00::/125' }]] });
    assert.equal(c.dataDir, '/var/lib/cni/networks');
    assert.equal(describeRangeSet(c.rangeSets[0] ?? []), '10.9.0.1-10.9.0.6');
    assert.equal(formatIP(c.rangeSets[0]?.[0]?.gateway ?? parseIP('0.0.0.0')), '10.9.0.1');
    // IPv6 has no broadcast: the last address is usable.
    assert.equal(describeRangeSet(c.rangeSets[1] ?? []), 'fd00::1-fd00::7');
  });

  it('prepends the legacy top-level subnet as the first range set', () => {
    const c = parseIpamConfig({
      type: 'host-local',
      subnet: '10.1.0.0/24', rangeStart: '10.1.0.10', rangeEnd: '10.1.0.20', gateway: '10.1.0.254',
      ranges: [[{ subnet: '10.2.0.0/24' }]],
      routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.254' }],
      resolvConf: '/etc/resolv.conf',
    });
    assert.equal(c.rangeSets.length, 2);
    assert.equal(describeRangeSet(c.rangeSets[0] ?? []), '10.1.0.10-10.1.0.20');
    assert.equal(formatIP(c.routes[0]?.gw ?? parseIP('0.0.0.0')), '10.1.0.254');
    assert.equal(c.resolvConf, '/etc/resolv.conf');
  });

  it('rejects bad values with code 7 naming the key', () => {
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/33' }]] }, /ipam\.ranges\.0\.0\.subnet/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.1/24' }]] }, /host bits set.*10\.9\.0\.0\/24/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/31' }]] }, /too small/);
    code7({ type: 'x', ranges: [[{ subnet: 10 }]] }, /ipam\.ranges\.0\.0\.subnet/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/24', rangeStart: '10.8.0.1' }]] }, /rangeStart.*not in network/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/24', rangeStart: '10.9.0.9', rangeEnd: '10.9.0.3' }]] }, /after rangeEnd/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/24', gateway: 'fd00::1' }]] }, /gateway/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/24' }, { subnet: 'fd00::/64' }]] }, /mixed address families/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/24' }], [{ subnet: '10.9.0.0/25' }]] }, /range set 1 overlaps with range set 0/);
    code7({ type: 'x' }, /no IP ranges/);
    code7({ type: 'x', ranges: [[{ subnet: '10.9.0.0/24' }]], routes: [{ dst: 'default' }] }, /routes\.0\.dst/);
    code7(undefined, /missing ipam/);
  });
});

describe('allocator order', () => {
  const cfg = parseIpamConfig({
    type: 'x',
    ranges: [[
      { subnet: '10.0.0.0/29', rangeStart: '10.0.0.0', rangeEnd: '10.0.0.7' },
      { subnet: '10.0.1.0/30', gateway: '10.0.1.2' },
    ]],
  });
  const rs = cfg.rangeSets[0] ?? [];

  it('skips network, broadcast and gateway even when the range includes them', () => {
    assert.deepEqual(all(candidates(rs)), ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6', '10.0.1.1']);
    assert.equal(usableCount(rs), 6n);
  });

  it('round-robins from the last reserved address and wraps across ranges', () => {
    assert.deepEqual(all(candidates(rs, parseIP('10.0.0.5'))), ['10.0.0.6', '10.0.1.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5']);
    assert.deepEqual(all(candidates(rs, parseIP('10.0.1.1'))), ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6', '10.0.1.1']);
    // A last-reserved outside the set (config changed) restarts at the beginning.
    assert.deepEqual(all(candidates(rs, parseIP('192.168.0.1'))).slice(0, 2), ['10.0.0.2', '10.0.0.3']);
  });

  it('honours rangeStart/rangeEnd and returns nothing when all are taken', () => {
    const c = parseIpamConfig({ type: 'x', ranges: [[{ subnet: '10.5.0.0/24', rangeStart: '10.5.0.100', rangeEnd: '10.5.0.102' }]] });
    const r = c.rangeSets[0] ?? [];
    assert.deepEqual(all(candidates(r)), ['10.5.0.100', '10.5.0.101', '10.5.0.102']);
    const taken = new Set(['10.5.0.100', '10.5.0.102']);
    assert.equal(formatIP(pickFree(r, (ip) => taken.has(formatIP(ip)))?.ip ?? parseIP('0.0.0.0')), '10.5.0.101');
    taken.add('10.5.0.101');
    assert.equal(pickFree(r, (ip) => taken.has(formatIP(ip))), undefined);
  });

  it('walks IPv6 ranges including the last address', () => {
    const c = parseIpamConfig({ type: 'x', ranges: [[{ subnet: 'fd00:1::/126' }]] });
    assert.deepEqual(all(candidates(c.rangeSets[0] ?? [])), ['fd00:1::2', 'fd00:1::3']);
  });
});

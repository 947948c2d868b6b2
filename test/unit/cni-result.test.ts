import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CniCode, WeftError } from '../../src/errors.js';
import { convertResultJson, parseResult, resultToJson } from '../../src/cni/result.js';
import { SUPPORTED_VERSIONS, isLegacyResultVersion } from '../../src/cni/version.js';

// The richest result each layout can carry.
const V1: Record<string, unknown> = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'cni0', mac: '0a:58:0a:f4:00:01', mtu: 1450 },
    { name: 'eth0', mac: '0a:58:0a:f4:00:05', sandbox: '/run/netns/p1', socketPath: '/run/s.sock', pciID: '0000:00:01.0' },
  ],
  ips: [
    { interface: 1, address: '10.244.0.5/24', gateway: '10.244.0.1' },
    { interface: 1, address: 'fd00:10:244::5/64', gateway: 'fd00:10:244::1' },
  ],
  routes: [
    { dst: '0.0.0.0/0', gw: '10.244.0.1', mtu: 1400, advmss: 1360, priority: 10, table: 100, scope: 0 },
    { dst: '::/0' },
  ],
  dns: { nameservers: ['10.96.0.10'], domain: 'cluster.local', search: ['svc.cluster.local'], options: ['ndots:5'] },
};

describe('result conversion', () => {
  for (const from of SUPPORTED_VERSIONS) {
    for (const to of SUPPORTED_VERSIONS) {
      it(`${from} → ${to}`, () => {
        const src = convertResultJson(V1, from);
        assert.equal(src.cniVersion, from);
        const out = convertResultJson(src, to);
        assert.equal(out.cniVersion, to);
        const ips = out.ips as Array<Record<string, unknown>>;
        assert.deepEqual(ips.map((i) => i.address), ['10.244.0.5/24', 'fd00:10:244::5/64']);
        assert.deepEqual(ips.map((i) => i.gateway), ['10.244.0.1', 'fd00:10:244::1']);
        assert.deepEqual(ips.map((i) => i.interface), [1, 1]);
        // 0.3.0–0.4.0 carry the family in ips; 1.x dropped it.
        assert.deepEqual(ips.map((i) => i.version), isLegacyResultVersion(to) ? ['4', '6'] : [undefined, undefined]);
        const ifs = out.interfaces as Array<Record<string, unknown>>;
        assert.equal(ifs[1]?.sandbox, '/run/netns/p1');
        const routes = out.routes as Array<Record<string, unknown>>;
        assert.equal(routes[0]?.gw, '10.244.0.1');
        // 1.1.0-only attributes survive only when both ends are 1.1.0.
        const keeps11 = from === '1.1.0' && to === '1.1.0';
        assert.equal(routes[0]?.mtu, keeps11 ? 1400 : undefined);
        assert.equal(routes[0]?.table, keeps11 ? 100 : undefined);
        assert.equal(ifs[0]?.mtu, keeps11 ? 1450 : undefined);
        assert.equal(ifs[1]?.socketPath, keeps11 ? '/run/s.sock' : undefined);
        assert.deepEqual(out.dns, V1.dns);
      });
    }
  }

  it('prints exactly the 0.3.1 layout', () => {
    const out = convertResultJson(
      { cniVersion: '1.0.0', ips: [{ address: '10.9.0.2/29', gateway: '10.9.0.1' }], routes: [{ dst: '0.0.0.0/0' }], dns: {} },
      '0.3.1',
    );
    assert.deepEqual(out, {
      cniVersion: '0.3.1',
      ips: [{ version: '4', address: '10.9.0.2/29', gateway: '10.9.0.1' }],
      routes: [{ dst: '0.0.0.0/0' }],
      dns: {},
    });
  });

  it('rejects a result with a bad address, naming the path (code 6)', () => {
    assert.throws(
      () => parseResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.300/24' }] }),
      (e: unknown) => e instanceof WeftError && e.code === CniCode.DecodeFailure && /ips\.0\.address/.test(e.message),
    );
  });

  it('rejects an ips version that contradicts the address, and a dangling interface index', () => {
    assert.throws(() => parseResult({ cniVersion: '0.4.0', ips: [{ version: '6', address: '10.0.0.2/24' }] }), /does not match/);
    assert.throws(() => parseResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24', interface: 0 }] }), /not an index/);
  });

  it('an unsupported result version is code 1', () => {
    assert.throws(() => parseResult({ cniVersion: '0.2.0', ip4: {} }), (e: unknown) => e instanceof WeftError && e.code === 1);
  });

  it('uses the fallback version when a prevResult has none', () => {
    const r = parseResult({ ips: [{ address: '10.0.0.2/24' }] }, '0.4.0');
    assert.equal(r.version, '0.4.0');
    assert.equal(resultToJson(r.result, '1.0.0').cniVersion, '1.0.0');
  });
});

// Backends as modules: one registry answers the config parser and the agent's factory, each module
// owns its keys and its lease data, and the store hands BackendData over untouched.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { WeftError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { parseCidr, parseIPv4 } from '../../src/net/ip.js';
import { backendTypes, createBackend, registerBackend } from '../../src/backends/registry.js';
import { checkLeaseData, PeerLeaseData } from '../../src/backends/lease-data.js';
import type { Backend, BackendModule, HostContext, ReconcileReport } from '../../src/backends/types.js';
import { vxlan } from '../../src/backends/vxlan/vxlan.js';
import { parseNetworkConfig } from '../../src/store/config.js';
import { parseLeaseValue, type Lease } from '../../src/store/lease.js';
import { refuseUnsupportedByWeftd } from '../../src/cli/weftd-config-check.js';

function configError(fn: () => unknown, key: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    assert.equal(err.code, 7);
    assert.match(err.message, key);
    return true;
  });
}

/** An out-of-tree backend with a key, a default and lease data of its own. */
interface TestConfig { readonly Color: 'red' | 'blue'; readonly Weight: number }

class TestBackend implements Backend {
  readonly type = 'wsh-test';
  readonly peersSeen: string[] = [];
  constructor(readonly cfg: TestConfig) {}
  async prepare(host: HostContext) { return { backendData: { Color: this.cfg.Color }, mtu: host.publicIface.mtu }; }
  async activate() {}
  async reconcile(): Promise<ReconcileReport> { return { repairs: 0, removals: 0, problems: [], skipped: [] }; }
  async close() {}
}

const testModule: BackendModule<'wsh-test', TestConfig, { Color: string }> = {
  type: 'wsh-test',
  config: z.object({ Color: z.enum(['red', 'blue']), Weight: z.number().int().min(1).default(3) }).strict(),
  leaseData: z.object({ Color: z.string() }),
  create: (cfg) => new TestBackend(cfg),
};

function peer(subnet: string, ip: string, backendType: string, backendData: unknown): Lease {
  return { subnet: parseCidr(subnet), attrs: { publicIP: parseIPv4(ip), publicIPv6: undefined, backendType, backendData }, expiresAt: undefined, revision: 1n };
}

describe('backend registry', () => {
  it('takes a backend registered with one line in config parsing and the agent\'s factory', () => {
    const text = '{"Network":"10.244.0.0/16","Backend":{"Type":"wsh-test","Color":"blue"}}';
    configError(() => parseNetworkConfig(text), /^network config: Backend\.Type: unknown backend "wsh-test" \(expected one of vxlan, host-gw, udp, bgp\)$/);
    const unregister = registerBackend(testModule);
    try {
      assert.deepEqual(backendTypes(), ['vxlan', 'host-gw', 'udp', 'bgp', 'wsh-test']);
      const c = parseNetworkConfig(text);
      assert.deepEqual(c.backend, { type: 'wsh-test', settings: { Color: 'blue', Weight: 3 }, external: true });
      // The module's own schema words the errors, with the key path the user wrote.
      configError(() => parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"wsh-test","Color":"blue","Shade":1}}'), /^network config: Backend\.Shade: unknown key$/);
      configError(() => parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"wsh-test","Color":"green"}}'), /^network config: Backend\.Color: /);
      const b = createBackend(c.backend);
      assert.ok(b instanceof TestBackend);
      assert.deepEqual(b.cfg, { Color: 'blue', Weight: 3 });
      assert.throws(() => registerBackend(testModule), /registered twice/);
    } finally {
      unregister();
    }
    assert.deepEqual(backendTypes(), ['vxlan', 'host-gw', 'udp', 'bgp']);
    assert.throws(() => registerBackend({ ...testModule, type: 'vxlan' }), /"vxlan" is registered twice/);
  });

  it('weftd refuses EnableIPv6 on a backend that does not declare ipv6; every built-in one carries IPv6', () => {
    const dual = (type: string, extra = '') => parseNetworkConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:244::/56","Backend":{"Type":"${type}"${extra}}}`);
    for (const type of backendTypes()) assert.doesNotThrow(() => refuseUnsupportedByWeftd(dual(type)), type);
    const unregister = registerBackend(testModule);
    try {
      configError(() => refuseUnsupportedByWeftd(dual('wsh-test', ',"Color":"red"')), /^network config: EnableIPv6: the wsh-test backend carries IPv4 only$/);
      assert.doesNotThrow(() => refuseUnsupportedByWeftd(parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"wsh-test","Color":"red"}}')));
    } finally {
      unregister();
    }
  });

  it('gives built-in backends their typed config, discriminated by type', () => {
    const c = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":7}}');
    // Compiles only because the union narrows: settings.VNI is a number for vxlan.
    const vni: number = !c.backend.external && c.backend.type === 'vxlan' ? c.backend.settings.VNI : -1;
    assert.equal(vni, 7);
    const b = createBackend(c.backend);
    assert.equal(b.type, 'vxlan');
  });

  it('rejects bad udp keys as a config error naming the key, not a ZodError from the factory', () => {
    configError(() => parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":0}}'), /^network config: Backend\.Port: /);
    configError(() => parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","VNI":1}}'), /^network config: Backend\.VNI: unknown key$/);
    const c = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":9000}}');
    assert.equal(createBackend(c.backend).type, 'udp');
  });
});

describe('lease data', () => {
  it('vxlan checks VtepMAC, with and without zod, and keeps keys a newer node adds', () => {
    for (const [data, re] of [
      [{}, /^BackendData\.VtepMAC: Required$/],
      // Past the check without zod (a string VtepMAC), caught by the schema all the same.
      [{ VtepMAC: '0a:58:0a:f4:03' }, /^BackendData\.VtepMAC: expected a MAC address/],
      [{ VtepMAC: '0a:58:0a:f4:03:01\n' }, /^BackendData\.VtepMAC: expected a MAC address/],
      [['0a:58:0a:f4:03:01'], /^BackendData: Expected object/],
      [null, /^BackendData: Expected object/],
    ] as const) {
      const r = checkLeaseData(vxlan, data);
      assert.equal(r.ok, false, JSON.stringify(data));
      assert.match(r.ok ? '' : r.reason, re);
    }
    const more = checkLeaseData(vxlan, { VtepMAC: '0A:58:0a:f4:03:01', Extra: 1 });
    assert.deepEqual(more, { ok: true, data: { VtepMAC: '0A:58:0a:f4:03:01', Extra: 1 } });
  });

  it('skips a peer with bad data, warning once naming it, and passes good peers', () => {
    const lines: string[] = [];
    const log = createLogger({}, { level: 'warn', write: (l) => lines.push(l) });
    const check = new PeerLeaseData(vxlan);
    const parsed = parseLeaseValue('{"PublicIP":"198.18.0.9","BackendType":"vxlan","BackendData":{"VtepMAC":"zz"}}');
    assert.ok(parsed.ok);
    const bad: Lease = { subnet: parseCidr('10.244.9.0/24'), attrs: parsed.attrs, expiresAt: undefined, revision: 3n };
    const good = peer('10.244.2.0/24', '198.18.0.2', 'vxlan', { VtepMAC: '0a:58:0a:f4:02:01' });
    for (let pass = 0; pass < 3; pass++) {
      const r = check.get(bad, log);
      assert.equal(r.ok, false);
      assert.match(r.ok ? '' : r.reason, /^peer 10\.244\.9\.0\/24 \(198\.18\.0\.9\): BackendData\.VtepMAC: expected a MAC address .*; skipped$/);
      assert.deepEqual(check.get(good, log), { ok: true, data: { VtepMAC: '0a:58:0a:f4:02:01' } });
    }
    assert.equal(lines.length, 1);
    const w = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    assert.equal(w.level, 'warn');
    assert.equal(w.peer, '10.244.9.0/24');
    assert.equal(w.publicIP, '198.18.0.9');
    assert.match(String(w.reason), /VtepMAC/);
    // The peer writes again (a new lease value): checked afresh.
    const fixed = peer('10.244.9.0/24', '198.18.0.9', 'vxlan', { VtepMAC: '0a:58:0a:f4:09:01' });
    assert.equal(check.get(fixed, log).ok, true);
  });
});

// The weft meta plugin's pure parts: subnet.env parsing (flannel's keys, completeness → code 11,
// malformed values → code 7 naming the key) and the delegate config it builds (flannel's
// "delegate" semantics: given keys win, weft fills in the rest and owns name/cniVersion/ipam).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf, parsePluginConfig } from '../../src/cni/conf.js';
import { DEFAULT_CNI_SOCKET, defaultCniSocket, fastPathEnv, fastPathSocketFor } from '../../src/cni/fastpath-client.js';
import { loadSubnetEnv, parseSubnetEnv, parseSubnetEnvText, type SubnetEnv } from '../../src/cni/subnet-env.js';
import { CniCode, WeftError } from '../../src/errors.js';
import { formatCidr } from '../../src/net/ip.js';
import { buildDelegateConf, weftConfSchema } from '../../src/plugins/weft/conf.js';

const FLANNEL_TEXT = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';

function env(text: string): SubnetEnv {
  return parseSubnetEnv(parseSubnetEnvText(text), '/run/weft/subnet.env');
}

function weftError(fn: () => unknown): WeftError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof WeftError, `expected a WeftError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected an error');
}

describe('subnet.env parsing', () => {
  it('reads the flannel keys into typed values', () => {
    const e = env(FLANNEL_TEXT);
    assert.equal(formatCidr(e.network!), '10.244.0.0/16');
    assert.equal(formatCidr(e.subnet!), '10.244.3.1/24');
    assert.equal(e.mtu, 1450);
    assert.equal(e.ipMasq, true);
    assert.equal(e.backend, undefined);
    assert.equal(e.cniSocket, undefined);
    assert.equal(e.ipv6Network, undefined);
  });

  it('reads weft additions, comments, quotes, blank lines; later lines win', () => {
    const e = env(`# written by weftd\n\n${FLANNEL_TEXT}FLANNEL_MTU=1400\nWEFT_BACKEND=BGP\nWEFT_CNI_SOCKET="/run/weft/cni.sock"\n`);
    assert.equal(e.mtu, 1400);
    assert.equal(e.backend, 'bgp');
    assert.equal(e.cniSocket, '/run/weft/cni.sock');
  });

  it('falls back to FLANNEL_BACKEND when WEFT_BACKEND is absent', () => {
    assert.equal(env(`${FLANNEL_TEXT}FLANNEL_BACKEND=vxlan\n`).backend, 'vxlan');
  });

  it('reads dual-stack and IPv6-only files', () => {
    const dual = env(`${FLANNEL_TEXT}FLANNEL_IPV6_NETWORK=fd00:244::/56\nFLANNEL_IPV6_SUBNET=fd00:244:0:3::1/64\n`);
    assert.equal(formatCidr(dual.ipv6Network!), 'fd00:244::/56');
    assert.equal(formatCidr(dual.ipv6Subnet!), 'fd00:244:0:3::1/64');
    const v6 = env('FLANNEL_IPV6_NETWORK=fd00:244::/56\nFLANNEL_IPV6_SUBNET=fd00:244:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n');
    assert.equal(v6.network, undefined);
    assert.equal(v6.ipMasq, false);
  });

  it('an incomplete file is code 11 naming every missing key', () => {
    const e = weftError(() => env('FLANNEL_NETWORK=10.244.0.0/16\n'));
    assert.equal(e.code, CniCode.TryAgainLater);
    assert.match(e.message, /weftd is not ready yet/);
    assert.match(e.message, /FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ/);
    assert.equal(weftError(() => env('')).code, CniCode.TryAgainLater);
  });

  it('malformed values are code 7 naming the key', () => {
    const cases: Array<[string, RegExp]> = [
      [FLANNEL_TEXT.replace('10.244.3.1/24', '10.244.3.1'), /FLANNEL_SUBNET=10\.244\.3\.1 is not an IPv4 CIDR/],
      [FLANNEL_TEXT.replace('1450', 'big'), /FLANNEL_MTU=big/],
      [FLANNEL_TEXT.replace('1450', '40'), /FLANNEL_MTU=40/],
      [FLANNEL_TEXT.replace('IPMASQ=true', 'IPMASQ=yes'), /FLANNEL_IPMASQ=yes/],
      [FLANNEL_TEXT.replace('10.244.3.1/24', '10.9.3.1/24'), /FLANNEL_SUBNET 10\.9\.3\.1\/24 is outside FLANNEL_NETWORK 10\.244\.0\.0\/16/],
      [FLANNEL_TEXT.replace('FLANNEL_NETWORK=10.244.0.0/16', 'FLANNEL_NETWORK=fd00::/8'), /FLANNEL_NETWORK=fd00::\/8 is not an IPv4 CIDR/],
    ];
    for (const [text, msg] of cases) {
      const e = weftError(() => env(text));
      assert.equal(e.code, CniCode.InvalidNetworkConfig, text);
      assert.match(e.message, msg);
    }
  });

  it('loadSubnetEnv: a missing file is code 11 with the path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wmp-unit-'));
    try {
      const path = join(dir, 'subnet.env');
      await assert.rejects(loadSubnetEnv(path), (err: unknown) => err instanceof WeftError && err.code === CniCode.TryAgainLater && err.message.includes(`${path} does not exist`));
      writeFileSync(path, FLANNEL_TEXT);
      assert.equal((await loadSubnetEnv(path)).mtu, 1450);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('subnet file reading is bounded', () => {
  it('/dev/zero, a FIFO nobody writes, a directory and a file over 64 KiB are code 7 naming the path; 64 KiB is read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wmp-unit-'));
    try {
      const fifo = join(dir, 'subnet.fifo');
      assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
      const big = join(dir, 'big.env');
      writeFileSync(big, `${FLANNEL_TEXT}#${'x'.repeat(64 * 1024)}\n`);
      for (const [path, what] of [['/dev/zero', /not a regular file \(a character device\)/], [fifo, /not a regular file \(a FIFO\)/], [dir, /not a regular file \(a directory\)/], [big, /larger than 65536 bytes/]] as const) {
        await assert.rejects(loadSubnetEnv(path), (err: unknown) => {
          assert.ok(err instanceof WeftError, String(err));
          assert.equal(err.code, CniCode.InvalidNetworkConfig, err.message);
          assert.ok(err.message.includes(path), err.message);
          assert.match(err.message, what);
          return true;
        });
      }
      const atLimit = join(dir, 'limit.env');
      writeFileSync(atLimit, FLANNEL_TEXT.padEnd(64 * 1024 - 1, '#') + '\n');
      assert.equal((await loadSubnetEnv(atLimit)).mtu, 1450);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function weftConf(extra: Record<string, unknown> = {}, version = '1.0.0') {
  const conf = parseNetConf(JSON.stringify({ cniVersion: version, name: 'podnet', type: 'weft', ...extra }));
  return { conf, config: parsePluginConfig(weftConfSchema, conf.raw) };
}

describe('delegate config (flannel semantics)', () => {
  it('defaults: weft-bridge, gateway + default gateway, hairpin, mtu, ipMasq inverted, weft-ipam on the node subnet', () => {
    const { conf, config } = weftConf();
    assert.equal(config.subnetFile, '/run/weft/subnet.env');
    assert.equal(config.dataDir, '/var/lib/cni/weft');
    assert.deepEqual(buildDelegateConf(conf, config, env(FLANNEL_TEXT)), {
      cniVersion: '1.0.0',
      name: 'podnet',
      type: 'weft-bridge',
      ipMasq: false,
      mtu: 1450,
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      ipam: {
        type: 'weft-ipam',
        dataDir: '/var/lib/cni/networks',
        ranges: [[{ subnet: '10.244.3.0/24' }]],
        routes: [{ dst: '10.244.0.0/16' }],
      },
    });
  });

  it('the bridge masquerades when weftd does not', () => {
    const { conf, config } = weftConf();
    const d = buildDelegateConf(conf, config, env(FLANNEL_TEXT.replace('IPMASQ=true', 'IPMASQ=false')));
    assert.equal(d.ipMasq, true);
    // …but never towards other pods: they must see the pod's own address.
    assert.deepEqual(d.ipMasqExclude, [String(/FLANNEL_NETWORK=(\S+)/.exec(FLANNEL_TEXT)?.[1])]);
  });

  it('keys given in delegate win; name, cniVersion and ipam are always weft\'s', () => {
    const { conf, config } = weftConf({
      delegate: { bridge: 'kbr0', hairpinMode: true, isDefaultGateway: false, ipMasq: true, mtu: 1300, name: 'other', cniVersion: '0.3.1', ipam: { type: 'static' } },
    });
    const d = buildDelegateConf(conf, config, env(FLANNEL_TEXT));
    assert.equal(d.bridge, 'kbr0');
    assert.equal(d.hairpinMode, true);
    assert.equal(d.isDefaultGateway, false);
    assert.equal(d.isGateway, true);
    assert.equal(d.ipMasq, true);
    assert.equal(d.mtu, 1300);
    assert.equal(d.name, 'podnet');
    assert.equal(d.cniVersion, '1.0.0');
    assert.equal((d.ipam as { type: string }).type, 'weft-ipam');
  });

  it('hairpin is on unless the delegate turns it off; routed delegates do not get it', () => {
    const off = weftConf({ delegate: { hairpinMode: false } });
    assert.equal(buildDelegateConf(off.conf, off.config, env(FLANNEL_TEXT)).hairpinMode, false);
    const routed = weftConf({ delegate: { type: 'weft-routed' } });
    assert.equal(buildDelegateConf(routed.conf, routed.config, env(FLANNEL_TEXT)).hairpinMode, undefined);
  });

  it('isGateway: false alone also turns off the default gateway', () => {
    const { conf, config } = weftConf({ delegate: { isGateway: false } });
    const d = buildDelegateConf(conf, config, env(FLANNEL_TEXT));
    assert.equal(d.isGateway, false);
    assert.equal(d.isDefaultGateway, false);
  });

  it('bgp backend → weft-routed without bridge keys; an explicit delegate type wins', () => {
    const bgp = env(`${FLANNEL_TEXT}WEFT_BACKEND=bgp\n`);
    const { conf, config } = weftConf();
    const routed = buildDelegateConf(conf, config, bgp);
    assert.equal(routed.type, 'weft-routed');
    assert.equal(routed.isGateway, undefined);
    assert.equal(routed.isDefaultGateway, undefined);
    assert.equal(routed.mtu, 1450);
    const explicit = weftConf({ delegate: { type: 'bridge' } });
    const ref = buildDelegateConf(explicit.conf, explicit.config, bgp);
    assert.equal(ref.type, 'bridge');
    assert.equal(ref.isGateway, true, 'the reference bridge takes the gateway defaults too');
  });

  it('top-level ipam is the base: its type, dataDir and routes are kept, ranges are the node\'s', () => {
    const { conf, config } = weftConf({ ipam: { type: 'host-local', dataDir: '/tmp/x', routes: [{ dst: '192.168.0.0/16' }], ranges: [[{ subnet: '1.2.3.0/24' }]] } });
    assert.deepEqual(buildDelegateConf(conf, config, env(FLANNEL_TEXT)).ipam, {
      type: 'host-local',
      dataDir: '/tmp/x',
      ranges: [[{ subnet: '10.244.3.0/24' }]],
      routes: [{ dst: '192.168.0.0/16' }, { dst: '10.244.0.0/16' }],
    });
    const other = weftConf({ ipam: { type: 'host-local' } });
    assert.equal((buildDelegateConf(other.conf, other.config, env(FLANNEL_TEXT)).ipam as Record<string, unknown>).dataDir, undefined, 'host-local keeps its own default');
  });

  it('flannel-style ipam without type is accepted and becomes weft-ipam with the default dataDir', () => {
    const { conf, config } = weftConf({ ipam: { routes: [{ dst: '192.168.0.0/16' }] } });
    assert.equal(conf.ipam?.type, undefined);
    assert.deepEqual(buildDelegateConf(conf, config, env(FLANNEL_TEXT)).ipam, {
      type: 'weft-ipam',
      dataDir: '/var/lib/cni/networks',
      ranges: [[{ subnet: '10.244.3.0/24' }]],
      routes: [{ dst: '192.168.0.0/16' }, { dst: '10.244.0.0/16' }],
    });
  });

  it('dual stack: one range set and one route per family', () => {
    const { conf, config } = weftConf();
    const d = buildDelegateConf(conf, config, env(`${FLANNEL_TEXT}FLANNEL_IPV6_NETWORK=fd00:244::/56\nFLANNEL_IPV6_SUBNET=fd00:244:0:3::1/64\n`));
    const ipam = d.ipam as Record<string, unknown>;
    assert.deepEqual(ipam.ranges, [[{ subnet: '10.244.3.0/24' }], [{ subnet: 'fd00:244:0:3::/64' }]]);
    assert.deepEqual(ipam.routes, [{ dst: '10.244.0.0/16' }, { dst: 'fd00:244::/56' }]);
  });

  it('dns, runtimeConfig and args pass through unless the delegate has its own', () => {
    const { conf, config } = weftConf({ dns: { nameservers: ['10.96.0.10'] }, runtimeConfig: { mac: '0a:58:0a:f4:03:09' }, args: { cni: { x: 1 } }, delegate: { dns: { nameservers: ['1.1.1.1'] } } });
    const d = buildDelegateConf(conf, config, env(FLANNEL_TEXT));
    assert.deepEqual(d.dns, { nameservers: ['1.1.1.1'] });
    assert.deepEqual(d.runtimeConfig, { mac: '0a:58:0a:f4:03:09' });
    assert.deepEqual(d.args, { cni: { x: 1 } });
  });

  it('weft keys are checked: a delegate without an object shape is code 7 naming it', () => {
    const conf = parseNetConf(JSON.stringify({ cniVersion: '1.0.0', name: 'podnet', type: 'weft', delegate: 'weft-bridge' }));
    const e = weftError(() => parsePluginConfig(weftConfSchema, conf.raw));
    assert.equal(e.code, CniCode.InvalidNetworkConfig);
    assert.match(e.message, /delegate/);
  });
});

describe('fast-path socket choice', () => {
  it('conf cniSocket, then WEFT_CNI_SOCKET in subnet.env, then cni.sock next to subnet.env; fastPath: false turns it off', async () => {
    assert.equal(defaultCniSocket('/run/weft/subnet.env'), DEFAULT_CNI_SOCKET);
    const dir = mkdtempSync(join(tmpdir(), 'wmp-unit-'));
    try {
      const subnetFile = join(dir, 'subnet.env');
      const base = { cniVersion: '1.0.0', name: 'n', type: 'weft', subnetFile };
      assert.equal(await fastPathSocketFor(JSON.stringify(base)), join(dir, 'cni.sock'));
      assert.equal(await fastPathSocketFor(JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'weft' })), DEFAULT_CNI_SOCKET);
      writeFileSync(subnetFile, `${FLANNEL_TEXT}WEFT_CNI_SOCKET=${dir}/other.sock\n`);
      assert.equal(await fastPathSocketFor(JSON.stringify(base)), `${dir}/other.sock`);
      assert.equal(await fastPathSocketFor(JSON.stringify({ ...base, cniSocket: '/x.sock' })), '/x.sock');
      assert.equal(await fastPathSocketFor(JSON.stringify({ ...base, fastPath: false })), undefined);
      assert.equal(await fastPathSocketFor('not json'), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('forwards only the CNI variables', () => {
    assert.deepEqual(fastPathEnv({ CNI_COMMAND: 'ADD', CNI_PATH: '/opt/cni/bin', HOME: '/root', NODE_OPTIONS: '--x' }), { CNI_COMMAND: 'ADD', CNI_PATH: '/opt/cni/bin' });
  });
});

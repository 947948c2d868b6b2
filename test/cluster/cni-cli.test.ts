import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CniCode, WeftError } from '../../src/errors.js';
import { parseNetworkList, pluginConf, ResultCache } from '../../src/cli/cni.js';
import { emptyResult } from '../../src/cni/result.js';
import { parseCidr } from '../../src/net/ip.js';

const repo = resolve(fileURLToPath(import.meta.url), '../../../..');
const WEFTCTL = join(repo, 'bin/weftctl');

let root = '';
before(() => { root = mkdtempSync(join(tmpdir(), 'wcn-cli-')); });
after(() => { rmSync(root, { recursive: true, force: true }); });

function weftctl(args: string[]): { code: number; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(WEFTCTL, ['cni', ...args], { env, encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('network lists', () => {
  it('wraps a single-plugin .conf into a one-plugin list and injects name/version per plugin', () => {
    const l = parseNetworkList(JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 'weft-ipam', ipam: { type: 'weft-ipam' } }));
    assert.equal(l.plugins.length, 1);
    assert.equal(l.plugins[0]?.type, 'weft-ipam');
    const prev = { ...emptyResult(), ips: [{ address: parseCidr('10.0.0.2/24') }] };
    const c = pluginConf(l, { type: 'x', name: 'ignored' }, prev);
    assert.equal(c.name, 'n');
    assert.equal(c.cniVersion, '0.4.0');
    assert.deepEqual(c.prevResult, { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.0.0.2/24' }], dns: {} });
  });

  it('gives each plugin only the capability arguments it declares, as runtimeConfig', () => {
    const l = parseNetworkList('{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}]}');
    const caps = { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: 'tcp' }], ips: ['10.0.0.9/24'] };
    const c = pluginConf(l, { type: 'portmap', capabilities: { portMappings: true, bandwidth: true } }, undefined, {}, caps);
    assert.deepEqual(c.runtimeConfig, { portMappings: caps.portMappings });
    assert.equal(pluginConf(l, { type: 'weft-ipam' }, undefined, {}, caps).runtimeConfig, undefined);
  });

  it('rejects lists without plugins or with an unsupported version', () => {
    assert.throws(() => parseNetworkList('{"cniVersion":"1.0.0","name":"n","plugins":[]}'), (e: unknown) => e instanceof WeftError && e.code === CniCode.InvalidNetworkConfig && /plugins/.test(e.message));
    assert.throws(() => parseNetworkList('{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"x"}]}'), (e: unknown) => e instanceof WeftError && e.code === 1);
    assert.throws(() => parseNetworkList('{nope'), (e: unknown) => e instanceof WeftError && e.code === CniCode.DecodeFailure);
  });

  it('caches results per attachment and lists a network\'s attachments', () => {
    const cache = new ResultCache(join(root, 'cache-unit'));
    const l = parseNetworkList('{"cniVersion":"1.1.0","name":"n","plugins":[{"type":"x"}]}');
    const env = { command: 'ADD' as const, containerId: 'c1', netns: '/x', ifname: 'eth0', args: [], path: [] };
    cache.save(l, env, { ...emptyResult(), ips: [{ address: parseCidr('10.0.0.2/24') }] });
    assert.equal(cache.load('n', 'c1', 'eth0')?.ips.length, 1);
    assert.deepEqual(cache.attachments('n'), [{ containerID: 'c1', ifname: 'eth0' }]);
    assert.deepEqual(cache.attachments('other'), []);
    cache.drop('n', 'c1', 'eth0');
    assert.equal(cache.load('n', 'c1', 'eth0'), undefined);
  });
});

describe('weftctl cni', () => {
  it('add → check → gc → del over a conflist, with results cached and fed back', () => {
    const data = join(root, 'data');
    const cache = join(root, 'cache');
    const list = join(root, 'net.conflist');
    writeFileSync(list, JSON.stringify({
      cniVersion: '1.1.0', name: 'clinet',
      plugins: [{ type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir: data, ranges: [[{ subnet: '10.70.0.0/24' }]] } }],
    }));
    const common = ['--conf', list, '--cache-dir', cache];
    const a = weftctl(['add', ...common, '--netns', '/run/netns/a', '--container-id', 'ca']);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(JSON.parse(a.stdout).ips[0].address, '10.70.0.2/24');
    const b = weftctl(['add', ...common, '--netns', '/run/netns/b', '--args', 'IP=10.70.0.99']);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(JSON.parse(b.stdout).ips[0].address, '10.70.0.99/24');
    // The plugin does not declare the "ips" capability, so --runtime-config does not reach it.
    const c = weftctl(['add', ...common, '--netns', '/run/netns/c', '--runtime-config', '{"ips":["10.70.0.77/24"]}']);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(JSON.parse(c.stdout).ips[0].address, '10.70.0.100/24'); // round robin after .99, not .77
    assert.equal(weftctl(['del', ...common, '--netns', '/run/netns/c']).code, 0);
    assert.equal(weftctl(['check', ...common, '--netns', '/run/netns/a', '--container-id', 'ca']).code, 0);
    const noCache = weftctl(['check', ...common, '--netns', '/run/netns/z', '--container-id', 'zz']);
    assert.equal(noCache.code, 1);
    assert.match(noCache.stderr, /no cached result/);
    // Forget b in the runtime's cache: GC must release its address and keep a's.
    const results = readdirSync(join(cache, 'results'));
    assert.equal(results.length, 2);
    for (const f of results) if (!f.includes('-ca-')) rmSync(join(cache, 'results', f));
    const gc = weftctl(['gc', ...common]);
    assert.equal(gc.code, 0, gc.stderr);
    assert.deepEqual(readdirSync(join(data, 'clinet')).sort(), ['10.70.0.2', 'last_reserved_ip.0']);
    const st = weftctl(['status', ...common]);
    assert.equal(st.code, 0, st.stderr);
    assert.equal(weftctl(['del', ...common, '--container-id', 'ca']).code, 0);
    assert.deepEqual(readdirSync(join(data, 'clinet')), ['last_reserved_ip.0']);
    assert.deepEqual(readdirSync(join(cache, 'results')), []);
  });

  it('passes declared capability arguments (runtimeConfig.ips) to the plugin', () => {
    const data = join(root, 'data-caps');
    const list = join(root, 'caps.conflist');
    writeFileSync(list, JSON.stringify({
      cniVersion: '1.0.0', name: 'caps',
      plugins: [{ type: 'weft-ipam', capabilities: { ips: true }, ipam: { type: 'weft-ipam', dataDir: data, ranges: [[{ subnet: '10.73.0.0/24' }]] } }],
    }));
    const common = ['--conf', list, '--cache-dir', join(root, 'cache-caps'), '--netns', '/run/netns/k'];
    const r = weftctl(['add', ...common, '--runtime-config', '{"ips":["10.73.0.77/24"]}']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).ips[0].address, '10.73.0.77/24');
    assert.equal(weftctl(['del', ...common]).code, 0);
    assert.deepEqual(readdirSync(join(data, 'caps')), ['last_reserved_ip.0']);
    assert.equal(weftctl(['add', ...common, '--runtime-config', '[1]']).code, 2);
  });

  it('undoes a failed ADD with DEL over the list and reports the failing plugin and code', () => {
    const data = join(root, 'data2');
    const conf = join(root, 'broken.conflist');
    writeFileSync(conf, JSON.stringify({
      cniVersion: '1.0.0', name: 'broken',
      plugins: [
        { type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir: data, ranges: [[{ subnet: '10.71.0.0/24' }]] } },
        { type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir: data, ranges: [[{ subnet: '10.72.0.1/24' }]] } },
      ],
    }));
    const r = weftctl(['add', '--conf', conf, '--netns', '/run/netns/q', '--cache-dir', join(root, 'cache2')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /plugin weft-ipam ADD: ipam\.ranges\.0\.0\.subnet: 10\.72\.0\.1\/24 has host bits set.*\(CNI code 7\)/);
    assert.deepEqual(readdirSync(join(data, 'broken')), ['last_reserved_ip.0']);
  });

  it('explains usage errors', () => {
    assert.equal(weftctl(['frob']).code, 2);
    assert.equal(weftctl(['add', '--conf', '/nonexistent']).code, 2);
    const h = weftctl(['--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /--cni-path/);
  });
});

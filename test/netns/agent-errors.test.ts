// weftd's start-up failures: each exits non-zero with a message naming what was wrong.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Topology } from '../../src/lab/topology.js';
import { runWeftd, setConfig, tempDir, WEFTD } from './agent-harness.js';
import { spawnSync } from 'node:child_process';
import { writeFileSync, mkdirSync } from 'node:fs';

describe('weftd bad input', { timeout: 60_000 }, () => {
  let topo: Topology;
  let tmp: { path: string; remove(): void };
  let store: string[];
  const run = (args: string[]) => runWeftd(topo.host(0).ns, ['--subnet-file', join(tmp.path, 'subnet.env'), ...store, ...args]);

  before(() => {
    topo = Topology.create({ prefix: 'wgd', hosts: 1 });
    tmp = tempDir('wgd');
    store = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
  });
  after(() => { topo?.destroy(); tmp?.remove(); });

  it('--help prints the flags and exits 0', () => {
    const r = spawnSync(WEFTD, ['--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    for (const f of ['--iface', '--public-ip', '--subnet-file', '--ip-masq', '--health-addr', '--node-name', '--store', '--etcd-endpoints', '--prefix', 'WEFTD_']) assert.ok(r.stdout.includes(f), f);
  });

  it('an unknown flag is a usage error (exit 2)', () => {
    const r = run(['--no-such-flag']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no-such-flag/);
  });

  it('no network config in the store', () => {
    const r = run(['--iface', 'eth0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no network config .*weftctl config set/);
  });

  it('an invalid network config names the key', () => {
    // Written by hand: weftctl would refuse it.
    const dir = join(tmp.path, 'store', 'weft', 'network');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config'), JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 40 }));
    const r = run(['--iface', 'eth0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /SubnetLen/);
  });

  it('an unknown backend type', () => {
    const dir = join(tmp.path, 'store', 'weft', 'network');
    writeFileSync(join(dir, 'config'), JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'carrier-pigeon' } }));
    const r = run(['--iface', 'eth0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Backend\.Type.*carrier-pigeon/);
  });

  it('an interface that does not exist', () => {
    setConfig(topo.host(0).ns, store, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    const r = run(['--iface', 'eth9']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--iface eth9: no such interface .*have: .*eth0/);
    const r2 = run(['--iface', '192.0.2.77']);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /--iface 192\.0\.2\.77: no interface .* has that address/);
  });

  it('a store that is unreachable at start', () => {
    const r = runWeftd(topo.host(0).ns, ['--subnet-file', join(tmp.path, 'subnet.env'), '--store', 'etcd', '--etcd-endpoints', 'http://127.0.0.1:1', '--iface', 'eth0'], 30_000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot read the network config from the etcd store at .*127\.0\.0\.1:1/);
  });

  it('the default-route interface is picked when --iface is not given', () => {
    // It starts for real; timeout(1) sends SIGTERM after 3 s, which weftd answers with exit 0.
    const r = spawnSync('ip', ['netns', 'exec', topo.host(0).ns, 'timeout', '--preserve-status', '-s', 'TERM', '3', WEFTD, '--subnet-file', join(tmp.path, 'subnet.env'), ...store], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /"msg":"public interface".*"iface":"eth0","publicIP":"198\.18\.0\.1"/);
    assert.match(r.stderr, /"msg":"weftd ready"/);
  });
});

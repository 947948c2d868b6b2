// weftd's start-up failures: each exits non-zero with a message naming what was wrong.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Topology } from '../../src/lab/topology.js';
import { cleanEnv, runWeftd, setConfig, tempDir, WEFTD } from './agent-harness.js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';

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
    for (const f of ['--iface', '--public-ip', '--subnet-file', '--ip-masq', '--conntrack-bypass', '--no-conntrack-bypass', '--no-FLAG', '--health-addr', '--node-name', '--store', '--etcd-endpoints', '--prefix', 'WEFTD_']) assert.ok(r.stdout.includes(f), f);
  });

  it('an unknown flag is a usage error (exit 2)', () => {
    const r = run(['--no-such-flag']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no-such-flag/);
  });

  it('a bad flag value, or a bad WEFTD_* env value, is a usage error (exit 2) naming the flag', () => {
    const bad: Array<[string[], RegExp]> = [
      [['--repair-interval', '0'], /--repair-interval/],
      [['--repair-interval', 'soon'], /--repair-interval/],
      [['--lease-ttl', '-5'], /--lease-ttl/],
      [['--store', 'carrier-pigeon'], /--store/],
      [['--prefix', 'weft/network'], /--prefix/],
      [['--health-addr', 'localhost'], /--health-addr/],
      [['--health-addr', '127.0.0.1:99999'], /--health-addr/],
      [['--conntrack-bypass=maybe'], /--conntrack-bypass: expected true or false/],
      [['--ip-masq=2'], /--ip-masq: expected true or false/],
      [['--conntrack-bypass', '--no-conntrack-bypass'], /--conntrack-bypass and --no-conntrack-bypass contradict/],
      [['--ip-masq=true', '--no-ip-masq'], /--ip-masq and --no-ip-masq contradict/],
    ];
    for (const [args, msg] of bad) {
      const r = run(['--iface', 'eth0', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    for (const [name, value] of [['WEFTD_IP_MASQ', 'ture'], ['WEFTD_CONNTRACK_BYPASS', 'perhaps'], ['WEFTD_REPAIR_INTERVAL', '11'], ['WEFTD_STORE', 'etc']] as const) {
      const r = spawnSync('ip', ['netns', 'exec', topo.host(0).ns, WEFTD, '--subnet-file', join(tmp.path, 'subnet.env'), '--store-dir', join(tmp.path, 'store')],
        { encoding: 'utf8', env: cleanEnv({ [name]: value }), timeout: 20_000 });
      assert.equal(r.status, 2, `${name}=${value}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(name === 'WEFTD_IP_MASQ' || name === 'WEFTD_CONNTRACK_BYPASS' ? name : name.slice('WEFTD_'.length).toLowerCase().replace(/_/g, '-')));
    }
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

  it('EnableIPv6 on a host without an IPv6 address is refused before anything is leased', () => {
    setConfig(topo.host(0).ns, store, { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:244::/56', Backend: { Type: 'vxlan' } });
    const r = run(['--iface', 'eth0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /EnableIPv6, but eth0 has no global IPv6 address; pass --public-ipv6/);
    const subnets = join(tmp.path, 'store', 'weft', 'network', 'subnets');
    assert.deepEqual(existsSync(subnets) ? readdirSync(subnets) : [], [], 'no lease taken');
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

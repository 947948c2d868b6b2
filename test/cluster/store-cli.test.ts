// weftctl config and leases against a file store and a real etcd, through the real binary.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Topology } from '../../src/lab/topology.js';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { encodeLeaseAttrs } from '../../src/store/lease.js';
import { startEtcd, type EtcdCluster } from '../../src/store/etcd/local-etcd.js';
import { uniquePrefix } from './store-contract.js';

const weftctl = new URL('../../../bin/weftctl', import.meta.url).pathname;

function run(args: string[], opts: { input?: string; env?: Record<string, string>; ns?: string; timeoutMs?: number } = {}) {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const [cmd, argv] = opts.ns === undefined ? [weftctl, args] : ['ip', ['netns', 'exec', opts.ns, weftctl, ...args]];
  const t0 = Date.now();
  const r = spawnSync(cmd, argv, { input: opts.input ?? '', env, encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

describe('weftctl config and leases', () => {
  let dir = '';
  let etcd: EtcdCluster;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-cli-'));
    etcd = await startEtcd(1);
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await etcd.stop();
  });

  it('sets, gets and rejects configs; lists, reserves and releases leases (file store)', async () => {
    const prefix = uniquePrefix();
    const flags = ['--store', 'file', '--store-dir', dir, '--prefix', prefix];
    assert.equal(run(['config', 'get', ...flags]).code, 1);
    const bad = run(['config', 'set', '-', ...flags], { input: '{"Network":"10.80.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}' });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Backend\.VNI: Expected number/);
    const file = join(dir, 'net.json');
    writeFileSync(file, '{"Network":"10.80.0.0/16","Backend":{"Type":"host-gw"}}');
    const set = run(['config', 'set', file, ...flags]);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stderr, /10\.80\.0\.0\/16 in 255 \/24 subnets, backend host-gw/);
    // The env form of a flag works as well.
    const get = run(['config', 'get', '--store', 'file', '--prefix', prefix], { env: { WEFTD_STORE_DIR: dir } });
    assert.equal(get.code, 0, get.stderr);
    assert.deepEqual(JSON.parse(get.stdout), { Network: '10.80.0.0/16', Backend: { Type: 'host-gw' } });

    const store = new FileStore({ dir, prefix });
    await store.writeSubnet(parseCidr('10.80.3.0/24'), encodeLeaseAttrs({ publicIP: parseIP('198.18.30.3'), publicIPv6: undefined, backendType: 'host-gw', backendData: null }), 3600, { type: 'absent' });
    await store.writeSubnet(parseCidr('10.80.4.0/24'), 'garbage', 3600, { type: 'absent' });
    await store.close();

    assert.equal(run(['leases', 'reserve', '10.80.200.0/24', '--public-ip', '198.18.30.200', ...flags]).code, 0);
    const outside = run(['leases', 'reserve', '10.81.0.0/24', '--public-ip', '198.18.30.9', ...flags]);
    assert.equal(outside.code, 1);
    assert.match(outside.stderr, /not a \/24 subnet between SubnetMin and SubnetMax of 10\.80\.0\.0\/16/);
    assert.equal(run(['leases', 'reserve', '10.80.200.0/24', '--public-ip', '198.18.30.201', ...flags]).code, 1);

    const list = run(['leases', 'list', '--json', ...flags]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stderr, /skipping lease 10\.80\.4\.0\/24/);
    const rows = JSON.parse(list.stdout) as { subnet: string; publicIP: string; backendType: string; expiresAt: string | null }[];
    assert.deepEqual(rows.map((r) => [r.subnet, r.publicIP, r.backendType, r.expiresAt === null]), [
      ['10.80.3.0/24', '198.18.30.3', 'host-gw', false],
      ['10.80.200.0/24', '198.18.30.200', 'host-gw', true],
    ]);
    const exp = Date.parse(rows[0]!.expiresAt!);
    assert.ok(exp > Date.now() + 3500_000 && exp <= Date.now() + 3600_000);
    const tableOut = run(['leases', 'list', ...flags]).stdout.split('\n');
    assert.match(tableOut[0] ?? '', /^SUBNET\s+PUBLIC-IP\s+BACKEND\s+EXPIRES$/);
    assert.match(tableOut[2] ?? '', /^10\.80\.200\.0\/24\s+198\.18\.30\.200\s+host-gw\s+never \(reserved\)$/);

    assert.equal(run(['leases', 'release', '10.80.200.0/24', ...flags]).code, 0);
    assert.equal(run(['leases', 'release', '10.80.200.0/24', ...flags]).code, 1);
    assert.equal(run(['leases', 'bogus', ...flags]).code, 2);
    assert.equal(run(['leases', 'list', '--store', 'zookeeper']).code, 2, 'a bad --store is a usage error like any other bad flag');
  });

  it('works against etcd too', () => {
    const prefix = uniquePrefix();
    const flags = ['--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--prefix', prefix];
    assert.equal(run(['config', 'set', '-', ...flags], { input: '{"Network":"10.90.0.0/16"}' }).code, 0);
    assert.equal(JSON.parse(run(['config', 'get', ...flags]).stdout).Network, '10.90.0.0/16');
    assert.equal(run(['leases', 'reserve', '10.90.5.0/24', '--public-ip', '198.18.31.5', ...flags]).code, 0);
    const rows = JSON.parse(run(['leases', 'list', '--json', ...flags]).stdout) as unknown[];
    assert.deepEqual(rows, [{ subnet: '10.90.5.0/24', publicIP: '198.18.31.5', backendType: 'vxlan', expiresAt: null }]);
    assert.equal(run(['leases', 'release', '10.90.5.0/24', ...flags]).code, 0);
    assert.deepEqual(JSON.parse(run(['leases', 'list', '--json', ...flags]).stdout), []);
  });

  it('dual-stack: reserve takes the IPv6 subnet too (under flanneld\'s "<v4>&<v6>" key), list shows both; a reservation without it is refused', () => {
    const prefix = uniquePrefix();
    const flags = ['--store', 'etcd', '--etcd-endpoints', etcd.endpoints.join(','), '--prefix', prefix];
    assert.equal(run(['config', 'set', '-', ...flags], { input: '{"Network":"10.91.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:91::/56"}' }).code, 0);
    const half = run(['leases', 'reserve', '10.91.5.0/24', '--public-ip', '198.18.31.5', ...flags]);
    assert.equal(half.code, 2);
    assert.match(half.stderr, /enables IPv6: reserve needs --ipv6-subnet and --public-ipv6/);
    const outside = run(['leases', 'reserve', '10.91.5.0/24', '--public-ip', '198.18.31.5', '--ipv6-subnet', 'fd00:92::/64', '--public-ipv6', '2001:2::31:5', ...flags]);
    assert.equal(outside.code, 1);
    assert.match(outside.stderr, /--ipv6-subnet fd00:92::\/64 is not a \/64 subnet .* of fd00:91::\/56/);
    assert.equal(run(['leases', 'reserve', '10.91.5.0/24', '--public-ip', '198.18.31.5', '--ipv6-subnet', 'fd00:91:0:5::/64', '--public-ipv6', '2001:2::31:5', ...flags]).code, 0);
    const rows = JSON.parse(run(['leases', 'list', '--json', ...flags]).stdout) as unknown[];
    assert.deepEqual(rows, [{ subnet: '10.91.5.0/24', publicIP: '198.18.31.5', backendType: 'vxlan', expiresAt: null, ipv6Subnet: 'fd00:91:0:5::/64', publicIPv6: '2001:2::31:5' }]);
    assert.match(run(['leases', 'list', ...flags]).stdout, /^10\.91\.5\.0\/24\s+fd00:91:0:5::\/64\s+198\.18\.31\.5\s+2001:2::31:5\s+vxlan\s+never \(reserved\)$/m);
    assert.equal(run(['leases', 'release', '10.91.5.0/24', ...flags]).code, 0);
    assert.deepEqual(JSON.parse(run(['leases', 'list', '--json', ...flags]).stdout), []);
  });

  it('read-only commands never create a store: a missing one is named, an empty one said to be empty', () => {
    const typo = join(dir, 'typo');
    const flags = ['--store', 'file', '--store-dir', typo];
    for (const args of [['leases', 'list'], ['leases', 'list', '--json'], ['config', 'get'], ['policy', 'list', '-A'], ['policy', 'get', 'web'], ['ns', 'list']]) {
      const r = run([...args, ...flags]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /no file store at .*typo\/weft\/network.*--store-dir/, args.join(' '));
      assert.equal(existsSync(typo), false, `${args.join(' ')} created ${typo}`);
    }
    const fresh = ['--store', 'file', '--store-dir', join(dir, 'fresh'), '--prefix', uniquePrefix()];
    assert.equal(run(['config', 'set', '-', ...fresh], { input: '{"Network":"10.82.0.0/16"}' }).code, 0);
    const empty = run(['leases', 'list', ...fresh]);
    assert.equal(empty.code, 0, empty.stderr);
    assert.match(empty.stderr, /no leases in /);
    assert.deepEqual(JSON.parse(run(['leases', 'list', '--json', ...fresh]).stdout), []);
  });

  it('config set refuses networks pods cannot be addressed from (multicast, everything, loopback, link-local)', () => {
    const prefix = uniquePrefix();
    const flags = ['--store', 'file', '--store-dir', dir, '--prefix', prefix];
    const bad: Array<[unknown, RegExp]> = [
      [{ Network: '224.0.0.0/4' }, /Network: 224\.0\.0\.0\/4 .*multicast/],
      [{ Network: '239.10.0.0/16' }, /Network: 239\.10\.0\.0\/16 .*multicast/],
      [{ Network: '0.0.0.0/0' }, /Network: 0\.0\.0\.0\/0 /],
      [{ Network: '240.0.0.0/8' }, /Network: 240\.0\.0\.0\/8 .*reserved/],
      [{ Network: '127.0.0.0/16' }, /Network: 127\.0\.0\.0\/16 .*loopback/],
      [{ Network: '169.254.0.0/16' }, /Network: 169\.254\.0\.0\/16 .*link-local/],
      [{ Network: '10.0.0.0/8', EnableIPv6: true, IPv6Network: 'ff00::/8' }, /IPv6Network: ff00::\/8 .*multicast/],
      [{ Network: '10.0.0.0/8', EnableIPv6: true, IPv6Network: '::/0' }, /IPv6Network: ::\/0 /],
    ];
    for (const [config, msg] of bad) {
      const r = run(['config', 'set', '-', ...flags], { input: JSON.stringify(config) });
      assert.equal(r.code, 1, `${JSON.stringify(config)}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    assert.equal(run(['config', 'get', ...flags]).code, 1, 'nothing was stored');
    assert.equal(run(['config', 'set', '-', ...flags], { input: '{"Network":"100.64.0.0/16"}' }).code, 0, 'shared address space is fine');
  });

  it('etcd errors name the cause in plain words and end when the deadline does', async () => {
    const flags = (url: string) => ['--store', 'etcd', '--etcd-endpoints', url];
    // Nothing listens: refused.
    const port = await new Promise<number>((resolve) => { const srv = createServer().listen(0, '127.0.0.1', () => { const a = srv.address(); srv.close(() => resolve(typeof a === 'object' && a ? a.port : 0)); }); });
    const refused = run(['leases', 'list', ...flags(`http://127.0.0.1:${port}`)]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`etcd http://127\\.0\\.0\\.1:${port}: list subnets: cannot connect: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}`));
    assert.doesNotMatch(refused.stderr, /Resolution note|UNAVAILABLE|No connection established|Error: /);
    // Accepts connections but never answers (a hung member).
    const silent: Server = await new Promise((resolve) => { const srv = createServer(() => {}).listen(0, '127.0.0.1', () => resolve(srv)); });
    try {
      const a = silent.address();
      const hung = run(['config', 'get', ...flags(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`)]);
      assert.equal(hung.code, 1);
      assert.match(hung.stderr, /get config: no answer within 3000 ms\n$/);
      assert.ok(hung.ms < 5000, `took ${hung.ms} ms`);
    } finally {
      silent.close();
    }
    // A member behind a black hole (SYNs vanish): the command ends with its deadline, not
    // minutes later when the kernel gives up connecting.
    const topo = Topology.create({ prefix: 'weftsh', hosts: 1 });
    try {
      const ns = topo.host(0).ns;
      const nowhere = '198.18.0.77';
      const neigh = spawnSync('ip', ['-n', ns, 'neigh', 'replace', nowhere, 'lladdr', '02:00:00:00:00:77', 'dev', 'eth0', 'nud', 'permanent'], { encoding: 'utf8' });
      assert.equal(neigh.status, 0, neigh.stderr);
      const r = run(['leases', 'list', ...flags(`http://${nowhere}:2379`)], { ns, timeoutMs: 30_000 });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /list subnets: no answer within 3000 ms/);
      assert.ok(r.ms < 6000, `took ${r.ms} ms`);
    } finally {
      topo.destroy();
    }
  });
});

// weftctl config and leases against a file store and a real etcd, through the real binary.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { encodeLeaseAttrs } from '../../src/store/lease.js';
import { startEtcd, type EtcdCluster } from './etcd-helper.js';
import { uniquePrefix } from './store-contract.js';

const weftctl = new URL('../../../bin/weftctl', import.meta.url).pathname;

function run(args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(weftctl, args, { input: opts.input ?? '', env, encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
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
    assert.equal(run(['leases', 'list', '--store', 'zookeeper']).code, 1);
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
});

// weftctl's and weftd's command line as an operator meets it: --version, `help CMD`, store flags
// before the command (as etcdctl and kubectl take global flags), and mistakes answered with exit
// 2 and the nearest right word. Processes only, against a throwaway file store.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'wcl-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(bin: 'weftctl' | 'weftd', args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(join(REPO, 'bin', bin), args, { encoding: 'utf8', env, timeout: 30_000, ...(input !== undefined && { input }) });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('weftctl and weftd command lines', () => {
  it('--version prints package.json\'s version on both', () => {
    const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
    for (const bin of ['weftctl', 'weftd'] as const) {
      const r = run(bin, ['--version']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^${bin} ${version.replace(/\./g, '\\.')} \\(node v\\d+`));
    }
  });

  it('`weftctl help lab` is `weftctl lab --help`, and lab\'s help names its namespaces weftlab-NAME-*', () => {
    const viaHelp = run('weftctl', ['help', 'lab']);
    assert.equal(viaHelp.status, 0);
    assert.equal(viaHelp.stdout, run('weftctl', ['lab', '--help']).stdout);
    assert.match(viaHelp.stdout, /its namespaces\s+are weftlab-NAME-\*/);
  });

  it('store flags work before the command as after it', () => {
    const store = ['--store', 'file', `--store-dir=${dir}`];
    const set = run('weftctl', [...store, 'config', 'set', '-'], '{"Network":"10.42.0.0/16","Backend":{"Type":"vxlan"}}');
    assert.equal(set.status, 0, set.stderr);
    const get = run('weftctl', ['config', 'get', ...store]);
    assert.equal(get.status, 0, get.stderr);
    assert.match(get.stdout, /10\.42\.0\.0\/16/);
    const before = run('weftctl', [...store, 'leases', 'list', '--json']);
    const afterIt = run('weftctl', ['leases', 'list', '--json', ...store]);
    assert.equal(before.stdout, afterIt.stdout);
    assert.equal(before.stderr, afterIt.stderr);
    const notStore = run('weftctl', ['--json', 'leases', 'list']);
    assert.equal(notStore.status, 2);
    assert.match(notStore.stderr, /unknown option "--json" before the command \(only store flags may come first\)/);
  });

  it('a mistyped store kind, flag or command: exit 2 with the nearest right one', () => {
    const kind = run('weftctl', ['leases', 'list', '--store', 'etdc']);
    assert.equal(kind.status, 2);
    assert.match(kind.stderr, /--store: expected etcd, file or kube, got "etdc" \(did you mean etcd\?\)/);
    const flag = run('weftctl', ['leases', 'list', '--etcd-endpoint', 'http://127.0.0.1:1']);
    assert.equal(flag.status, 2);
    assert.match(flag.stderr, /Unknown option '--etcd-endpoint' \(did you mean --etcd-endpoints\?\)/);
    const cmd = run('weftctl', ['lease', 'list']);
    assert.equal(cmd.status, 2);
    assert.match(cmd.stderr, /unknown command "lease" \(did you mean leases\?\)/);
    const weftd = run('weftd', ['--ifac', 'eth0']);
    assert.equal(weftd.status, 2);
    assert.match(weftd.stderr, /Unknown option '--ifac' \(did you mean --iface\?\)/);
    const weftdStore = run('weftd', ['--store', 'fiel']);
    assert.equal(weftdStore.status, 2);
    assert.match(weftdStore.stderr, /did you mean file\?/);
  });
});

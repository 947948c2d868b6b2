// weftctl kube up|down as a script uses it: up leaves a working control plane behind and exits,
// a second up on the same directory is refused, and down needs nothing but the directory — also
// when the up that started the processes was killed half-way.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findKubeBinaries } from '../../src/kube/binaries.js';
import { readControlPlaneRecord, stopControlPlane } from '../../src/kube/controlplane.js';
import { isSameProcess } from '../../src/lab/procs.js';
import { WEFTCTL, cleanEnv } from './lab-harness.js';

const base = mkdtempSync(join(tmpdir(), 'weft-kcli-'));

function kube(args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(WEFTCTL, ['kube', ...args], { encoding: 'utf8', env: cleanEnv(), timeout: 90_000 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function assertStopped(dir: string, pids: ReadonlyArray<{ pid: number; startTime: string }>): void {
  for (const p of pids) assert.equal(isSameProcess(p.pid, p.startTime), false, `pid ${p.pid} is gone`);
  assert.equal(existsSync(dir), false, `${dir} is gone`);
}

describe('weftctl kube', { timeout: 120_000 }, () => {
  after(async () => {
    // Whatever a failed test left running.
    for (const d of ['crash', 'up']) await stopControlPlane(join(base, d)).catch(() => undefined);
    rmSync(base, { recursive: true, force: true });
  });

  it('rejects bad input with exit 2', () => {
    assert.equal(kube(['up']).code, 2);
    assert.match(kube(['up']).stderr, /--dir DIR is required/);
    assert.match(kube(['start', '--dir', base]).stderr, /expected up or down, got "start"/);
    assert.match(kube(['up', '--dir', base, '--port', '70000']).stderr, /--port: expected a port 1\.\.65535/);
    assert.match(kube(['down', '--dir', base, '--port', '6443']).stderr, /--port does not apply to kube down/);
    assert.equal(kube(['--help']).code, 0);
  });

  it('down cleans up after an up killed half-way', async () => {
    const dir = join(base, 'crash');
    const up = spawn(WEFTCTL, ['kube', 'up', '--dir', dir], { stdio: 'ignore', env: cleanEnv() });
    const exited = new Promise<void>((r) => up.once('exit', () => r()));
    let procs: ReadonlyArray<{ pid: number; startTime: string }> = [];
    for (let i = 0; i < 300 && procs.length < 2; i++) {
      await sleep(20);
      procs = readControlPlaneRecord(dir)?.processes ?? [];
    }
    assert.equal(procs.length, 2, 'up recorded etcd and kube-apiserver');
    up.kill('SIGKILL');
    await exited;
    for (const p of procs) assert.ok(isSameProcess(p.pid, p.startTime), 'the processes outlive the killed up');
    const down = kube(['down', '--dir', dir]);
    assert.equal(down.code, 0, down.stderr);
    assertStopped(dir, procs);
    assert.match(kube(['down', '--dir', dir]).stderr, /nothing to stop/);
  });

  it('up leaves a working control plane, refuses a second up, down removes it', async () => {
    const dir = join(base, 'up');
    const up = kube(['up', '--dir', dir, '--json']);
    assert.equal(up.code, 0, up.stderr);
    const out = JSON.parse(up.stdout) as { server: string; kubeconfig: string; processes: Array<{ pid: number; startTime: string }> };
    assert.match(out.server, /^https:\/\/127\.0\.0\.1:\d+$/);
    // The printed kubeconfig is all a user needs.
    const nodes = spawnSync(findKubeBinaries().kubectl, ['--kubeconfig', out.kubeconfig, 'auth', 'can-i', 'delete', 'nodes'], {
      encoding: 'utf8', env: { ...cleanEnv(), KUBECACHEDIR: join(base, 'kubectl-cache') },
    });
    assert.equal(nodes.stdout.trim(), 'yes', nodes.stderr);

    const again = kube(['up', '--dir', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already running .*weftctl kube down --dir/);

    assert.equal(kube(['down', '--dir', dir]).code, 0);
    assertStopped(dir, out.processes);
  });
});

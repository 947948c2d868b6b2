// A delegate that hangs is killed at its timeout together with everything it started: a shell
// shim's child (node under bin/cni/*, here a sleep) must not outlive it holding our pipes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniCode, WeftError } from '../../src/errors.js';
import { invokeDelegate } from '../../src/cni/exec.js';

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'wrv-exec-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A killed child of a detached group may linger as a zombie until reaped by init.
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

describe('invokeDelegate timeout', () => {
  it('kills the delegate and its children, and fails with the timeout code', async () => {
    const pidFile = join(dir, 'child.pid');
    const plugin = join(dir, 'wrv-hang');
    // The shim starts a child that would hold stdout open for a minute, then waits on it.
    writeFileSync(plugin, `#!/bin/sh\nsleep 60 &\necho $! > ${pidFile}\nwait\n`);
    chmodSync(plugin, 0o755);
    const t0 = Date.now();
    await assert.rejects(
      invokeDelegate({
        target: { kind: 'exec', type: 'wrv-hang' },
        command: 'ADD',
        env: { command: 'ADD', containerId: 'c1', netns: '/run/netns/none', ifname: 'eth0', args: [], path: [dir] },
        conf: { cniVersion: '1.1.0', name: 'wrv', type: 'wrv-hang' },
        timeoutMs: 300,
      }),
      (err: unknown) => err instanceof WeftError && err.code === CniCode.Timeout,
    );
    // Without the group kill the sleep keeps the pipe open and 'close' waits the full minute.
    assert.ok(Date.now() - t0 < 20_000, `took ${Date.now() - t0} ms`);
    const childPid = Number(readFileSync(pidFile, 'utf8').trim());
    assert.ok(childPid > 0);
    for (let i = 0; i < 100 && alive(childPid); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(alive(childPid), false, `the delegate's child ${childPid} outlived it`);
  });
});

// Ctrl-C (SIGINT) or SIGTERM during `weftctl lab up` removes what up had built, the way a failed
// up does: no `down` needed afterwards. Interrupted at two points — as soon as the first
// namespace exists (mid topology), and with every weftd running — and checked against the
// machine's own view: no namespace, process, mount or state dir of the lab is left.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertGone, downQuietly, labName, labUpAsync, namespacesOf, record } from './lab-harness.js';

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function exitOf(p: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  p.stderr?.setEncoding('utf8');
  p.stderr?.on('data', (c: string) => { stderr += c; });
  return new Promise((r) => p.once('close', (code, signal) => r({ code, signal, stderr })));
}

describe('weftctl lab up interrupted', { timeout: 120_000 }, () => {
  const used: string[] = [];
  after(() => { for (const n of used) downQuietly(n); });

  it('SIGINT as soon as the first namespace exists: exit 130, and nothing of the lab remains', async () => {
    const name = labName('wfx');
    used.push(name);
    const up = labUpAsync(['--name', name, '--backend', 'vxlan', '--hosts', '3']);
    const exited = exitOf(up);
    await until('a lab namespace', () => (namespacesOf(name).length > 0 ? true : undefined));
    assert.ok(up.pid !== undefined);
    process.kill(up.pid, 'SIGINT');
    const r = await exited;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, new RegExp(`SIGINT: removing what lab ${name} has built so far`));
    assert.match(r.stderr, new RegExp(`lab ${name} up interrupted by SIGINT; removed what it had built`));
    assertGone(name);
  });

  it('SIGTERM with every weftd running: exit 143, the agents are stopped and everything is removed', async () => {
    const name = labName('wfx');
    used.push(name);
    const up = labUpAsync(['--name', name, '--backend', 'vxlan', '--hosts', '2', '--pods', '1']);
    const exited = exitOf(up);
    const rec = await until('weftd to be recorded', () => {
      const x = record(name);
      return x && x.processes.filter((p) => p.role.startsWith('weftd')).length === 2 ? x : undefined;
    });
    assert.ok(up.pid !== undefined);
    process.kill(up.pid, 'SIGTERM');
    const r = await exited;
    assert.equal(r.code, 143, r.stderr);
    assert.match(r.stderr, /interrupted by SIGTERM/);
    assertGone(name, rec.processes.map((p) => p.pid));
  });
});

// A lab killed mid-way is fully removed by down: kill -9 of `weftctl lab up` at two points (before
// anything is recorded, and with weftd already running), and kill -9 of a weftd in a lab that is
// up (status then reports it dead).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { alive, assertGone, downQuietly, lab, labName, labUpAsync, namespacesOf, processesMentioning, record, upOk } from './lab-harness.js';

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

async function kill9(p: ChildProcess): Promise<void> {
  const exited = new Promise((r) => p.once('exit', r));
  if (p.pid !== undefined) process.kill(p.pid, 'SIGKILL');
  await exited;
}

describe('weftctl lab down after crashes', { timeout: 120_000 }, () => {
  const used: string[] = [];
  after(() => { for (const n of used) downQuietly(n); });

  it('removes a lab whose up was killed -9 as soon as its first namespace appeared', async () => {
    const name = labName();
    used.push(name);
    const up = labUpAsync(['--name', name, '--backend', 'vxlan', '--hosts', '3']);
    await until('a lab namespace', () => (namespacesOf(name).length > 0 ? true : undefined));
    await kill9(up);
    assert.ok(namespacesOf(name).length > 0, 'the killed up left namespaces behind');
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name);
  });

  it('removes the bare mount-point file a kill inside namespace creation leaves in /run/netns', () => {
    const name = labName();
    used.push(name);
    // What createNamedNetns leaves when killed between creating the file and binding the namespace.
    const placeholder = `/run/netns/weftlab-${name}-abc123-o`;
    writeFileSync(placeholder, '', { mode: 0 });
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(existsSync(placeholder), false);
    assertGone(name);
  });

  it('removes a lab whose up was killed -9 while weftd was starting, and a weftd killed -9 with it', async () => {
    const name = labName();
    used.push(name);
    const up = labUpAsync(['--name', name, '--backend', 'vxlan', '--hosts', '3', '--pods', '2']);
    const rec = await until('weftd to be recorded', () => {
      const r = record(name);
      return r && r.processes.filter((p) => p.role.startsWith('weftd')).length === 3 ? r : undefined;
    });
    await kill9(up);
    const afterKill = record(name);
    assert.equal(afterKill?.phase, 'creating', 'killed before up finished');
    const weftd = rec.processes.filter((p) => p.role.startsWith('weftd'));
    const victim = weftd[1];
    assert.ok(victim);
    // The agents were started detached: they outlive the killed up.
    for (const p of weftd) assert.ok(alive(p.pid), `${p.role} survived the lab's death`);
    process.kill(victim.pid, 'SIGKILL');
    await until('the killed weftd to be gone', () => (alive(victim.pid) ? undefined : true));
    assert.ok(processesMentioning(name).length >= 2, 'the other agents still run');
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, afterKill?.processes.map((p) => p.pid) ?? []);
  });

  it('status reports a weftd killed -9 in a lab that is up; down still removes everything', () => {
    const name = labName();
    used.push(name);
    const rec = upOk(['--name', name, '--backend', 'host-gw', '--hosts', '2', '--pods', '1']);
    const w = rec.processes.find((p) => p.role === 'weftd h1');
    assert.ok(w);
    process.kill(w.pid, 'SIGKILL');
    const status = lab(['status', '--name', name, '--json']);
    assert.equal(status.code, 1, 'unhealthy lab → exit 1');
    const s = JSON.parse(status.stdout) as { healthy: boolean; processes: Array<{ role: string; alive: boolean }> };
    assert.equal(s.healthy, false);
    assert.equal(s.processes.find((p) => p.role === 'weftd h1')?.alive, false);
    assert.equal(s.processes.find((p) => p.role === 'weftd h0')?.alive, true);
    const text = lab(['status', '--name', name]);
    assert.match(text.stdout, /DEGRADED/);
    assert.match(text.stdout, /weftd h1\s+\d+\s+DEAD/);
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, rec.processes.map((p) => p.pid));
  });
});

// A stale lock (its owner is dead) that another process is busy breaking: the waiter must back off
// like any other waiter (the event loop keeps running, the deadline still applies) instead of
// spinning on synchronous fs calls until that breaker's `.break` file is gone or ages out.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniCode, WeftError } from '../../src/errors.js';
import { acquireFileLock } from '../../src/fs/lock.js';

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'wrv-lock-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

/** Lock-file text naming a process of our pid namespace that has exited. */
function deadOwner(): string {
  const pid = spawnSync('true').pid;
  assert.ok(pid !== undefined && pid > 0);
  return `${pid} 1 ${readlinkSync('/proc/self/ns/pid')}\n`;
}

describe('acquireFileLock on a stale lock someone else is breaking', () => {
  it('sleeps between attempts and times out with code 11, without blocking the event loop', async () => {
    const path = join(dir, 'busy-breaker.lock');
    writeFileSync(path, deadOwner());
    writeFileSync(`${path}.break`, deadOwner()); // fresh: the other breaker is "at work"
    let ticks = 0;
    const ticker = setInterval(() => { ticks++; }, 10);
    const t0 = Date.now();
    try {
      await assert.rejects(acquireFileLock(path, { timeoutMs: 300 }), (err: unknown) => err instanceof WeftError && err.code === CniCode.TryAgainLater);
    } finally {
      clearInterval(ticker);
    }
    const took = Date.now() - t0;
    assert.ok(took >= 300, `gave up after ${took} ms, before its deadline`);
    // A spinning waiter lets no timer run at all; how late it gives up under load is not asked.
    assert.ok(ticks >= 3, `the event loop ran only ${ticks} timer ticks while waiting`);
  });

  it('takes the lock once the other breaker is done', async () => {
    const path = join(dir, 'breaker-done.lock');
    writeFileSync(path, deadOwner());
    writeFileSync(`${path}.break`, deadOwner());
    const waiting = acquireFileLock(path, { timeoutMs: 10_000 });
    setTimeout(() => unlinkSync(`${path}.break`), 100);
    const lock = await waiting;
    lock.release();
  });
});

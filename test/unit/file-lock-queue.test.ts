// withFileLock's in-process queue: callers of one process take a lock path in arrival order, one
// at a time, without polling the file (the handoff is immediate), and a caller that times out in
// the queue lets no one behind it overtake the holder. The file stays the cross-process mutex.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CniCode, WeftError } from '../../src/errors.js';
import { acquireFileLock, withFileLock } from '../../src/fs/lock.js';

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'wfx-lock-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

describe('withFileLock in one process', () => {
  it('20 concurrent callers hold the lock one at a time, in arrival order, with the lock file theirs', async () => {
    const path = join(dir, 'fifo.lock');
    const order: number[] = [];
    let holders = 0;
    let maxHolders = 0;
    await Promise.all(Array.from({ length: 20 }, (_, i) => withFileLock(path, async () => {
      holders++;
      maxHolders = Math.max(maxHolders, holders);
      assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} `), 'the lock file names this process');
      order.push(i);
      // Held across a turn of the event loop, so a second holder would have its chance.
      await new Promise<void>((r) => setImmediate(r));
      holders--;
    })));
    assert.equal(maxHolders, 1);
    assert.deepEqual(order, Array.from({ length: 20 }, (_, i) => i), 'arrival order (polling waiters would take it at random)');
    assert.equal(existsSync(path), false, 'released');
  });

  it('hands over without a poll sleep: 50 queued callers finish while timers are frozen', async (t) => {
    const path = join(dir, 'handoff.lock');
    // With setTimeout mocked, a waiter that polls (sleeps 1–2 ms, growing) never wakes; a
    // queued one is handed the lock by promise settlement and needs no timer at all.
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let done = 0;
    const all = Promise.all(Array.from({ length: 50 }, () => withFileLock(path, () => { done++; })));
    await new Promise<void>((r) => setImmediate(r));
    const finished = done;
    t.mock.timers.reset();
    await all;
    assert.equal(finished, 50, 'callers left waiting on a timer');
  });

  it('a caller whose timeout passes in the queue fails with code 11; the one behind it still waits for the holder', async () => {
    const path = join(dir, 'timeout.lock');
    let release!: () => void;
    const holding = new Promise<void>((r) => { release = r; });
    const events: string[] = [];
    const holder = withFileLock(path, async () => { events.push('holder in'); await holding; events.push('holder out'); });
    const impatient = withFileLock(path, () => { events.push('impatient in'); }, { timeoutMs: 50 });
    const patient = withFileLock(path, () => { events.push('patient in'); });
    await assert.rejects(impatient, (e: unknown) => e instanceof WeftError && e.code === CniCode.TryAgainLater && /held in this process/.test(e.message));
    await sleep(30);
    assert.deepEqual(events, ['holder in'], 'nobody overtook the holder');
    release();
    await Promise.all([holder, patient]);
    assert.deepEqual(events, ['holder in', 'holder out', 'patient in']);
  });

  it('the file is still the mutex: a lock taken without the queue (another process, as far as the file is concerned) holds queued callers off', async () => {
    const path = join(dir, 'file.lock');
    const outside = await acquireFileLock(path);
    let entered = false;
    const queued = withFileLock(path, () => { entered = true; });
    await sleep(40);
    assert.equal(entered, false);
    outside.release();
    await queued;
    assert.equal(entered, true);
  });
});

// A cross-process mutex on a file path (IPAM data dirs, the file store). Node has no flock(2), and exec'ing flock(1) costs a
// process start per operation, so the lock is the existence of a file created with O_EXCL that
// names its owner ("pid starttime pidns"). A waiter that finds the owner dead (no such pid, or the
// pid was reused: different start time) breaks the lock. Breaking is itself serialised by a
// second O_EXCL file and re-checked under it, so a live owner's lock is never removed by two
// breakers racing on the same stale lock. Owners in another pid namespace cannot be checked, so
// their locks are only considered stale after `foreignStaleMs`.
import { closeSync, openSync, readFileSync, readlinkSync, statSync, unlinkSync, writeSync, constants } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../backoff.js';
import { CniCode, WeftError } from '../errors.js';

export interface FileLockOptions {
  /** Give up (code 11, try again later) after this long. Default 30 s. */
  timeoutMs?: number;
  /** A lock whose owner cannot be verified is stale after this age. Default 60 s. */
  foreignStaleMs?: number;
}

export interface FileLock {
  readonly path: string;
  release(): void;
}

interface Owner {
  pid: number;
  start: string;
  pidns: string;
}

let selfIdentity: Owner | undefined;

function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may contain spaces and parentheses: fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19]; // field 22, starttime
  } catch {
    return undefined;
  }
}

function self(): Owner {
  if (!selfIdentity) {
    let pidns = '';
    try {
      pidns = readlinkSync('/proc/self/ns/pid');
    } catch {
      // no procfs: locks can still be taken, staleness falls back to age
    }
    selfIdentity = { pid: process.pid, start: procStartTime(process.pid) ?? '', pidns };
  }
  return selfIdentity;
}

function encode(o: Owner): string {
  return `${o.pid} ${o.start} ${o.pidns}\n`;
}

function readLock(path: string): { text: string; ino: number; mtimeMs: number } | undefined {
  try {
    const st = statSync(path);
    return { text: readFileSync(path, 'utf8'), ino: st.ino, mtimeMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function createExclusive(path: string, content: string): boolean {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new WeftError(CniCode.IoFailure, `cannot create lock file ${path}: ${(err as Error).message}`);
  }
  try {
    writeSync(fd, content);
  } catch (err) {
    // On a full filesystem the file is created (an inode is free) but its owner cannot be
    // written. Left there empty it reads as "owner still writing", which waiters only break
    // after 10 s: remove it, and say which file and why.
    closeSync(fd);
    try { unlinkSync(path); } catch { /* already gone */ }
    throw new WeftError(CniCode.IoFailure, `cannot write lock file ${path}: ${(err as Error).message}`);
  }
  closeSync(fd);
  return true;
}

/** Whether the owner written in a lock file is gone. Empty text = owner still writing it. */
export function isStale(text: string, ageMs: number, foreignStaleMs: number): boolean {
  const [pidS, start, pidns] = text.trim().split(' ');
  const pid = Number(pidS);
  if (!text.endsWith('\n') || !Number.isInteger(pid) || pid <= 0) return ageMs > 10_000;
  const me = self();
  if (pidns !== me.pidns || me.pidns === '') return ageMs > foreignStaleMs;
  const actual = procStartTime(pid);
  return actual === undefined || actual !== start;
}

/** Removes the lock judged stale, unless someone else is breaking it; true when it was removed. */
function tryBreak(path: string, seen: { text: string; ino: number }): boolean {
  const breaker = `${path}.break`;
  if (!createExclusive(breaker, encode(self()))) {
    // Someone else is breaking it. A breaker holds this for microseconds; one that died doing so
    // leaves a file that only age can clear.
    const b = readLock(breaker);
    if (b && Date.now() - b.mtimeMs > 5_000) {
      try { unlinkSync(breaker); } catch { /* already gone */ }
    }
    return false;
  }
  try {
    const now = readLock(path);
    // Only the very lock judged stale is removed; a fresh owner has a new inode and content.
    if (now && now.ino === seen.ino && now.text === seen.text) {
      unlinkSync(path);
      return true;
    }
    return false;
  } finally {
    try { unlinkSync(breaker); } catch { /* already gone */ }
  }
}

function ownedLock(path: string, mine: string): FileLock {
  let released = false;
  return {
    path,
    release(): void {
      if (released) return;
      released = true;
      // Remove it only while it is still ours (it could have been broken by age).
      const cur = readLock(path);
      if (cur && cur.text === mine) unlinkSync(path);
    },
  };
}

/**
 * One attempt, no waiting: the lock, or the PID written in it by its live owner. For a lock held
 * for a process's whole life (weftd's claim on its CNI socket), so an owner in another PID
 * namespace, which cannot be checked, is never taken to be gone however old its lock is.
 */
export function tryFileLock(path: string): FileLock | { readonly heldBy: string } {
  const mine = encode(self());
  for (let attempt = 0; attempt < 10; attempt++) {
    if (createExclusive(path, mine)) return ownedLock(path, mine);
    const held = readLock(path);
    if (!held) continue; // released meanwhile
    if (!held.text.endsWith('\n') && Date.now() - held.mtimeMs < 1000) {
      // Created an instant ago, its owner not written yet: look again in a moment.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      continue;
    }
    if (isStale(held.text, Date.now() - held.mtimeMs, Infinity) && tryBreak(path, held)) continue;
    return { heldBy: held.text.trim().split(' ')[0] || '?' };
  }
  return { heldBy: readLock(path)?.text.trim().split(' ')[0] || '?' };
}

export async function acquireFileLock(path: string, opts: FileLockOptions = {}): Promise<FileLock> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const foreignStaleMs = opts.foreignStaleMs ?? 60_000;
  const mine = encode(self());
  const deadline = Date.now() + timeoutMs;
  // Holders keep the lock for about a millisecond, and a hundred waiters polling in lockstep
  // would only contend on the directory: short, jittered, growing pauses (1 ms to 30 ms).
  const backoff = new Backoff({ initialMs: 2, maxMs: 30, multiplier: 1.5 });
  for (;;) {
    if (createExclusive(path, mine)) return ownedLock(path, mine);
    const held = readLock(path);
    // Retry at once only when this waiter removed the stale lock: while another breaker holds
    // `.break` (or a new owner already replaced the lock) it waits like any other waiter, rather
    // than spinning on synchronous fs calls until that breaker is done.
    if (held && isStale(held.text, Date.now() - held.mtimeMs, foreignStaleMs) && tryBreak(path, held)) continue;
    if (Date.now() >= deadline) {
      const owner = held?.text.trim().split(' ')[0] ?? '?';
      throw new WeftError(CniCode.TryAgainLater, `timed out after ${timeoutMs} ms waiting for lock ${path} (held by pid ${owner})`);
    }
    await sleep(backoff.next());
  }
}

/**
 * Per lock path, the promise that settles when this process's last queued caller is done. A
 * process with many callers at once (weftd's fast path: a burst of 20 DELs all releasing IPAM
 * addresses) would otherwise have them all poll the file with growing sleeps, and each release
 * would wait out a waiter's sleep — up to 30 ms per holder, so the burst ran one holder per
 * sleep. Queued here they take the file lock one after another the moment it is free. The file
 * stays the mutex: this only orders one process's callers (another process still polls).
 */
const localQueues = new Map<string, Promise<void>>();

function waitUntilDeadline(p: Promise<void>, deadline: number, path: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new WeftError(CniCode.TryAgainLater, `timed out after ${timeoutMs} ms waiting for lock ${path} (held in this process, pid ${process.pid})`)), Math.max(0, deadline - Date.now()));
    void p.then(() => { clearTimeout(timer); resolve(); });
  });
}

export async function withFileLock<T>(path: string, fn: () => Promise<T> | T, opts: FileLockOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const ahead = localQueues.get(path);
  let done!: () => void;
  const mine = new Promise<void>((resolve) => { done = resolve; });
  // The queue's tail settles only after every caller before it: a caller that gave up early
  // must not let the ones behind it overtake the one still holding the lock.
  const tail = ahead ? Promise.all([ahead, mine]).then(() => undefined) : mine;
  localQueues.set(path, tail);
  try {
    if (ahead) await waitUntilDeadline(ahead, deadline, path, timeoutMs);
    const lock = await acquireFileLock(path, { ...opts, timeoutMs: Math.max(0, deadline - Date.now()) });
    try {
      return await fn();
    } finally {
      lock.release();
    }
  } finally {
    done();
    if (localQueues.get(path) === tail) localQueues.delete(path);
  }
}

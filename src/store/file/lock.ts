// A lock shared by processes on one machine (they may sit in different network namespaces but
// share the PID namespace and the filesystem). Node has no flock, so the lock is a file created
// with O_EXCL holding the owner's PID; a lock whose owner is dead is broken, under a second
// short-lived "breaker" lock so two breakers cannot each delete the other's fresh lock.
import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync, constants } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CniCode, WeftError } from '../../errors.js';

const CREATE_EXCL = constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY;
/** A breaker lock older than this belongs to a process that died while breaking. */
const BREAKER_STALE_MS = 2000;
/** An empty lock file older than this was left by a process that died right after creating it. */
const EMPTY_STALE_MS = 2000;

function tryCreate(path: string): boolean {
  try {
    const fd = openSync(path, CREATE_EXCL, 0o600);
    try { writeSync(fd, String(process.pid)); } finally { closeSync(fd); }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

type Holder = { type: 'live' } | { type: 'gone' } | { type: 'stale'; owner: string };

function inspect(path: string): Holder {
  let owner: string;
  let mtimeMs: number;
  try {
    owner = readFileSync(path, 'utf8');
    mtimeMs = statSync(path).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { type: 'gone' };
    throw err;
  }
  const pid = Number(owner);
  if (owner === '') return Date.now() - mtimeMs > EMPTY_STALE_MS ? { type: 'stale', owner } : { type: 'live' };
  if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return { type: 'stale', owner };
  return { type: 'live' };
}

function breakStale(path: string, owner: string): void {
  const breaker = `${path}.break`;
  if (!tryCreate(breaker)) {
    try {
      if (Date.now() - statSync(breaker).mtimeMs > BREAKER_STALE_MS) unlinkSync(breaker);
    } catch { /* someone else cleaned it */ }
    return;
  }
  try {
    // Re-check under the breaker: the lock may have been broken and re-taken meanwhile.
    let current: string | undefined;
    try { current = readFileSync(path, 'utf8'); } catch { current = undefined; }
    if (current === owner) unlinkSync(path);
  } finally {
    unlinkSync(breaker);
  }
}

/**
 * Runs `critical` holding the lock at `path`. `critical` is synchronous on purpose: nothing else
 * in this process can interleave with it, so the lock never needs to be re-entrant.
 */
export async function withFileLock<T>(path: string, critical: () => T, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let wait = 1;
  for (;;) {
    if (tryCreate(path)) {
      try {
        return critical();
      } finally {
        unlinkSync(path);
      }
    }
    const h = inspect(path);
    if (h.type === 'stale') { breakStale(path, h.owner); continue; }
    if (h.type === 'gone') continue;
    if (Date.now() > deadline) {
      throw new WeftError(CniCode.TryAgainLater, `file store lock ${path} is held by another process for more than ${timeoutMs} ms`);
    }
    await sleep(wait);
    wait = Math.min(wait * 2, 20);
  }
}

// Processes a lab runs (weftd per host, echo servers, etcd): started detached inside a lab
// namespace so they outlive the `weftctl lab up` that made them, each recorded with its kernel
// start time so `down` never kills a stranger that reused the PID. `down` also finds anything
// running inside one of the lab's namespaces (a process started just before a kill -9 of the lab,
// before it was recorded): such a process belongs to the lab by where it lives.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, readlinkSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CniCode, WeftError } from '../errors.js';

export interface LabProcess {
  /** What it is, e.g. "weftd h0", "echo h1c0", "etcd". */
  readonly role: string;
  readonly pid: number;
  /** /proc/PID/stat starttime (clock ticks since boot): PID + this identify one process. */
  readonly startTime: string;
  readonly ns: string;
  readonly log: string;
}

/** The kernel's start time of PID, or undefined when there is no such process. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses; the fields after the last ')' are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // starttime is field 22; fields[0] here is field 3.
  return fields[19];
}

/** Alive and still the same process (not a reused PID); zombies count as gone. */
export function isSameProcess(pid: number, startTime: string): boolean {
  if (processStartTime(pid) !== startTime) return false;
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return state.slice(state.lastIndexOf(')') + 2, state.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

/**
 * Starts argv inside namespace `ns` (ip netns exec execs it, so the PID is the command's), in its
 * own session, stdout+stderr appended to `log`. Returns the record to keep in the lab state.
 */
export function startInNamespace(role: string, ns: string, argv: readonly string[], log: string, env: Record<string, string> = {}): LabProcess {
  const fd = openSync(log, 'a', 0o600);
  try {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { detached: true, stdio: ['ignore', fd, fd], env: childEnv(env) });
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new WeftError(CniCode.Internal, `could not start ${role} (${argv[0] ?? '?'}) in ${ns}`);
    const startTime = processStartTime(pid);
    if (startTime === undefined) throw new WeftError(CniCode.Internal, `${role} (${argv[0] ?? '?'}) in ${ns} exited at once; see ${log}`);
    return { role, pid, startTime, ns, log };
  } finally {
    closeSync(fd);
  }
}

/** Inode of a namespace handle (/run/netns/X or /proc/PID/ns/net). */
function nsInode(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/** PIDs of every process whose network namespace is one of `nsPaths`. */
export function processesInNamespaces(nsPaths: readonly string[]): number[] {
  const inodes = new Set<number>();
  for (const p of nsPaths) {
    const ino = nsInode(p);
    if (ino !== undefined) inodes.add(ino);
  }
  if (inodes.size === 0) return [];
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let link: string;
    try {
      link = readlinkSync(`/proc/${entry}/ns/net`);
    } catch {
      continue;
    }
    const m = /^net:\[(\d+)\]$/.exec(link);
    if (m?.[1] !== undefined && inodes.has(Number(m[1]))) out.push(Number(entry));
  }
  return out;
}

/** SIGKILLs each PID (already gone is fine) and waits until they are gone or `timeoutMs` passed. */
export async function killAndWait(targets: ReadonlyArray<{ pid: number; startTime: string }>, timeoutMs = 3000): Promise<Array<{ pid: number; startTime: string }>> {
  for (const t of targets) {
    if (!isSameProcess(t.pid, t.startTime)) continue;
    try {
      process.kill(t.pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = targets.filter((t) => isSameProcess(t.pid, t.startTime));
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await sleep(20);
  }
}

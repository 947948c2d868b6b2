// Test support for the lab suites: run bin/weftctl lab … as a user would, read the lab's record,
// and assert that nothing of a lab is left (namespace, process, mount, state dir).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_LAB_ROOT } from '../../src/lab/naming.js';
import type { LabRecord } from '../../src/lab/state.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const WEFTCTL = join(ROOT, 'bin/weftctl');

export function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  delete env.WEFT_LAB_ROOT;
  return env;
}

/** A fresh lab name with the test prefix (each suite's own, so parallel suites never collide). */
export function labName(prefix = 'wlb'): string {
  return `${prefix}${randomBytes(3).toString('hex')}`;
}

export interface Run { code: number | null; stdout: string; stderr: string }

export function lab(args: readonly string[], timeoutMs = 90_000): Run {
  const r = spawnSync(WEFTCTL, ['lab', ...args], { encoding: 'utf8', env: cleanEnv(), timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** `weftctl lab up` in the background (to kill it mid-way). */
export function labUpAsync(args: readonly string[]) {
  return spawn(WEFTCTL, ['lab', 'up', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: cleanEnv() });
}

export function stateDir(name: string): string {
  return join(DEFAULT_LAB_ROOT, name);
}

export function record(name: string): LabRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(stateDir(name), 'lab.json'), 'utf8')) as LabRecord;
  } catch {
    return undefined;
  }
}

/** The lab's /run/netns entries, mounted namespaces and bare mount-point files alike. */
export function namespacesOf(name: string): string[] {
  try {
    return readdirSync('/run/netns').filter((n) => n.startsWith(`weftlab-${name}-`));
  } catch {
    return [];
  }
}

export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Every PID whose command line mentions the lab's state dir (weftd, echo servers, etcd all do). */
export function processesMentioning(name: string): number[] {
  const needle = stateDir(name) + '/';
  const out: number[] = [];
  for (const e of spawnSync('ls', ['/proc'], { encoding: 'utf8' }).stdout.split('\n')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(needle) && alive(Number(e))) out.push(Number(e));
    } catch { /* gone */ }
  }
  return out;
}

export function upOk(args: readonly string[]): LabRecord {
  const r = lab(['up', ...args]);
  assert.equal(r.code, 0, `lab up ${args.join(' ')} failed:\n${r.stderr}`);
  const name = args[args.indexOf('--name') + 1] ?? '';
  const rec = record(name);
  assert.ok(rec, 'lab.json after up');
  assert.equal(rec.phase, 'up');
  return rec;
}

/** After down: no namespace, process, mount or state dir of the lab remains. */
export function assertGone(name: string, pids: readonly number[] = []): void {
  assert.deepEqual(namespacesOf(name), [], 'namespaces left');
  assert.equal(existsSync(stateDir(name)), false, 'state dir left');
  for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} still running`);
  assert.deepEqual(processesMentioning(name), [], 'processes of the lab still running');
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(`weftlab-${name}-`) || l.includes(stateDir(name)));
  assert.deepEqual(mounts, [], 'mounts left');
}

/** Best-effort removal for after() hooks. */
export function downQuietly(name: string): void {
  if (namespacesOf(name).length > 0 || existsSync(stateDir(name))) lab(['down', '--name', name]);
}

// Named network namespaces, compatible with iproute2 (`ip netns add/del/exec` see ours and we
// see theirs): a bind mount of the namespace under /run/netns/NAME.

import { readdirSync, statfsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { WeftError, CniCode } from '../errors.js';
import { native, isNativeError } from '../netlink/native.js';

export const NETNS_RUN_DIR = '/run/netns';
const NSFS_MAGIC = 0x6e736673;

function checkName(name: string): void {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/.test(name) || name === '.' || name === '..') {
    throw new WeftError(CniCode.InvalidEnvironment, `invalid network namespace name ${JSON.stringify(name)} (letters, digits, '_', '.', '-'; at most 63)`);
  }
}

export function netnsPath(name: string): string {
  checkName(name);
  return `${NETNS_RUN_DIR}/${name}`;
}

/** True when path is a mounted namespace handle (nsfs), e.g. /run/netns/X or /proc/PID/ns/net. */
export function netnsExists(path: string): boolean {
  try {
    return statfsSync(path).type === NSFS_MAGIC;
  } catch {
    return false;
  }
}

/** Creates /run/netns/NAME holding a fresh network namespace; returns its path. */
export function createNamedNetns(name: string): string {
  const path = netnsPath(name);
  try {
    native().createNetns(path);
  } catch (err) {
    if (isNativeError(err) && err.code === 'EEXIST') {
      throw new WeftError(CniCode.Namespace, `network namespace ${name} already exists`, '', { cause: err });
    }
    throw WeftError.wrap(err, CniCode.Namespace, `create network namespace ${name}`);
  }
  return path;
}

/** Removes /run/netns/NAME; false when it did not exist. */
export function deleteNamedNetns(name: string): boolean {
  const path = netnsPath(name);
  try {
    native().deleteNetns(path);
    return true;
  } catch (err) {
    if (isNativeError(err) && err.code === 'ENOENT') return false;
    throw WeftError.wrap(err, CniCode.Namespace, `delete network namespace ${name}`);
  }
}

export function listNamedNetns(): string[] {
  try {
    return readdirSync(NETNS_RUN_DIR).filter((n) => netnsExists(`${NETNS_RUN_DIR}/${n}`)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw WeftError.wrap(err, CniCode.Namespace, `list ${NETNS_RUN_DIR}`);
  }
}

export interface RunResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command inside a named namespace via `ip netns exec` (a process, because Node cannot
 * move a single JS thread between namespaces). For tests and diagnostics, not the fast path.
 */
export function runInNetns(name: string, argv: readonly string[], opts: { input?: string; timeoutMs?: number; maxBufferBytes?: number } = {}): RunResult {
  checkName(name);
  if (argv.length === 0) throw new WeftError(CniCode.Internal, 'runInNetns needs a command');
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync('ip', ['netns', 'exec', name, ...argv], {
    encoding: 'utf8',
    env,
    timeout: opts.timeoutMs ?? 30_000,
    ...(opts.input !== undefined && { input: opts.input }),
    ...(opts.maxBufferBytes !== undefined && { maxBuffer: opts.maxBufferBytes }),
  });
  if (r.error) throw WeftError.wrap(r.error, CniCode.Internal, `ip netns exec ${name} ${argv.join(' ')}`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

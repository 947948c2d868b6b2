// weftd's unix sockets (the CNI fast path, the API socket): published at their path with mode
// 0600 from the first moment, a stale socket left by a killed weftd replaced, a live one or
// anything that is not a socket refused, and removed on close only while the path is still ours.
import { chmod, lstat, rename, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';

/** The longest path a unix socket address holds on Linux (sun_path less its NUL). */
export const UNIX_PATH_MAX = 107;

/** True when something accepts connections on path (a live weftd), false for a stale socket. */
export function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (live: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(live);
    };
    const timer = setTimeout(() => done(false), 500);
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

/**
 * Refuses to displace a live server or anything that is not a socket; a stale socket is replaced
 * later by the rename. `what` names the socket in messages ("CNI socket").
 */
export async function claimSocketPath(path: string, what: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new WeftError(CniCode.IoFailure, `${what} path ${path} exists and is not a socket`);
  if (await socketIsLive(path)) throw new WeftError(CniCode.IoFailure, `another process already serves the ${what} ${path}`);
}

/** The temporary name a socket is bound under before it is renamed to `path`. */
function tmpPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
}

/** Something that listens on a path and closes: a net.Server or an http.Server. */
interface PathServer {
  listen(opts: { path: string }, cb: () => void): unknown;
  once(event: 'error', fn: (err: Error) => void): unknown;
  off(event: 'error', fn: (err: Error) => void): unknown;
  close(): unknown;
}

/**
 * Binds server under a temporary name, restricts it to 0600 and renames it to path: no moment
 * where the socket is reachable with the default mode, and a stale socket is replaced atomically.
 * Resolves to the socket's inode, for removeSocketIfOurs.
 */
export async function listenPrivate(server: PathServer, path: string, what: string): Promise<number> {
  const tmpPath = tmpPathFor(path);
  if (Buffer.byteLength(tmpPath) > UNIX_PATH_MAX) {
    throw new WeftError(CniCode.InvalidEnvironment, `${what} ${path}: too long for a unix socket (bound first as ${tmpPath}, ${Buffer.byteLength(tmpPath)} bytes; at most ${UNIX_PATH_MAX})`);
  }
  await rm(tmpPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: tmpPath }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  try {
    await chmod(tmpPath, 0o600);
    await rename(tmpPath, path);
  } catch (err) {
    server.close();
    await rm(tmpPath, { force: true });
    throw new WeftError(CniCode.IoFailure, `cannot publish the ${what} ${path}: ${(err as Error).message}`);
  }
  return (await lstat(path)).ino;
}

/** Removes path while it is still the socket listenPrivate made (a newer weftd may have taken it over). */
export async function removeSocketIfOurs(path: string, ino: number): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st?.ino === ino) await rm(path, { force: true });
}

// The allocation store on disk, in host-local's format so either plugin can read the other's
// state: <dataDir>/<network>/<ip> holds "<containerID>\r\n<ifname>", last_reserved_ip.<set index>
// holds the last address handed out from that range set. Our lock file has its own name because
// host-local keeps a permanent, empty "lock" file for flock(2).
import { openSync, closeSync, readdirSync, readFileSync, unlinkSync, writeFileSync, writeSync, constants } from 'node:fs';
import { join } from 'node:path';
import { CniCode, WeftError } from '../../errors.js';
import { formatIP, tryParseIP, type IP } from '../../net/ip.js';
import { withFileLock, type FileLockOptions } from '../../fs/lock.js';
import { mkdirp } from '../../fs/mkdir.js';

export const LOCK_FILE = 'lock.weft';
export const LAST_RESERVED_PREFIX = 'last_reserved_ip.';
const LINE_BREAK = '\r\n';

export interface Allocation {
  ip: IP;
  containerId: string;
  /** Empty for files written by old host-local versions (ID only). */
  ifname: string;
}

function ioError(what: string, err: unknown): WeftError {
  return new WeftError(CniCode.IoFailure, `${what}: ${err instanceof Error ? err.message : String(err)}`);
}

function parseOwner(text: string): { containerId: string; ifname: string } {
  // host-local writes \r\n; accept a bare \n too (hand-written or other tools).
  const [id = '', ifname = ''] = text.trim().split(/\r?\n/);
  return { containerId: id.trim(), ifname: ifname.trim() };
}

export class DiskStore {
  readonly dir: string;
  private readonly lockOpts: FileLockOptions;

  constructor(dataDir: string, network: string, lockOpts: FileLockOptions = {}) {
    this.dir = join(dataDir, network);
    this.lockOpts = lockOpts;
  }

  /** Creates the network directory; ADD needs it, DEL/CHECK/GC treat its absence as "empty". */
  ensureDir(): void {
    try {
      mkdirp(this.dir, 0o755);
    } catch (err) {
      throw ioError(`cannot create ipam data directory ${this.dir}`, err);
    }
  }

  exists(): boolean {
    try {
      readdirSync(this.dir);
      return true;
    } catch {
      return false;
    }
  }

  /** Runs fn holding the network's lock (creating the directory first). */
  locked<T>(fn: () => Promise<T> | T): Promise<T> {
    this.ensureDir();
    return withFileLock(join(this.dir, LOCK_FILE), fn, this.lockOpts);
  }

  /** Every reserved address, by canonical text. */
  reservedSet(): Set<string> {
    const out = new Set<string>();
    for (const name of this.entries()) {
      const ip = tryParseIP(name);
      if (ip && formatIP(ip) === name) out.add(name);
    }
    return out;
  }

  all(): Allocation[] {
    const out: Allocation[] = [];
    for (const name of this.entries()) {
      const ip = tryParseIP(name);
      if (!ip || formatIP(ip) !== name) continue;
      let text: string;
      try {
        text = readFileSync(join(this.dir, name), 'utf8');
      } catch {
        continue; // released while we listed
      }
      out.push({ ip, ...parseOwner(text) });
    }
    return out;
  }

  byId(containerId: string, ifname: string): Allocation[] {
    const all = this.all().filter((a) => a.containerId === containerId.trim());
    const exact = all.filter((a) => a.ifname === ifname);
    // Files from host-local before ifname was recorded match on the ID alone.
    return exact.length > 0 ? exact : all.filter((a) => a.ifname === '');
  }

  /** Writes the reservation file exclusively; false when the address is already taken. */
  reserve(ip: IP, containerId: string, ifname: string, rangeSetIndex: number): boolean {
    const path = join(this.dir, formatIP(ip));
    let fd: number;
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw ioError(`cannot reserve ${formatIP(ip)}`, err);
    }
    try {
      writeSync(fd, `${containerId.trim()}${LINE_BREAK}${ifname}`);
    } catch (err) {
      closeSync(fd);
      unlinkSync(path);
      throw ioError(`cannot write reservation ${path}`, err);
    }
    closeSync(fd);
    const last = join(this.dir, `${LAST_RESERVED_PREFIX}${rangeSetIndex}`);
    try {
      writeFileSync(last, formatIP(ip));
    } catch (err) {
      unlinkSync(path);
      throw ioError(`cannot record the last reserved address in ${last}`, err);
    }
    return true;
  }

  release(ip: IP): void {
    try {
      unlinkSync(join(this.dir, formatIP(ip)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(`cannot release ${formatIP(ip)}`, err);
    }
  }

  /** Releases everything held by (containerId, ifname); returns what was released. */
  releaseById(containerId: string, ifname: string): IP[] {
    const mine = this.byId(containerId, ifname);
    for (const a of mine) this.release(a.ip);
    return mine.map((a) => a.ip);
  }

  lastReserved(rangeSetIndex: number): IP | undefined {
    try {
      return tryParseIP(readFileSync(join(this.dir, `${LAST_RESERVED_PREFIX}${rangeSetIndex}`), 'utf8').trim());
    } catch {
      return undefined;
    }
  }

  private entries(): string[] {
    try {
      return readdirSync(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError(`cannot list ${this.dir}`, err);
    }
  }
}

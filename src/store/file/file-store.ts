// The embedded store for one machine: a directory that several processes (in different network
// namespaces) share. It is the file store's revisioned key/value core (src/store/core.ts) and the
// SubnetStore view over it. Layout under DIR/<prefix>/ mirrors the etcd keys:
//   config              the network config text
//   subnets/<key>       one JSON envelope per lease {value, expiresAt, revision, token}
//   policies/…, namespaces/…, endpoints/…  (any other key) the value itself, one file per key
//   rev                 the store revision (bumped by every write); rebuilt from the change
//                       log and the lease files when it is damaged, missing or behind the log
//   changes.log         "<rev> put <key> <envelope>" and "<rev> del <key>" lines for every key:
//                       subnet keys appear bare ("10.244.3.0-24", as older writers logged them),
//                       other keys by their full name ("policies/prod/web"). Watchers tail it (a
//                       subnet put carries the envelope it wrote, so a watcher need not open the
//                       key's file; other puts, and lines from older writers, send it there). It is
//                       rotated when large, which watchers notice (new inode) and answer with a
//                       resync, like an etcd compaction.
// Every write happens under the directory lock and lands by temp file + rename. Changes made beside
// the store (a lease file removed by hand) have no log line; lease watchers find them by listing
// the directory every second.
import {
  closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmdirSync,
  statSync, unlinkSync, watch as fsWatch, writeFileSync, appendFileSync, type FSWatcher,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { CniCode, WeftError } from '../../errors.js';
import { mkdirp } from '../../fs/mkdir.js';
import { type Cidr, formatCidr, leaseKey, parseLeaseKey, parseSubnetKey, subnetKey } from '../../net/ip.js';
import type {
  HeldEntry, ListOptions, RawEntry, RawWatch, RenewResult, StoreEvent, SubnetStore, WatchState, WriteResult,
} from '../types.js';
import { withFileLock } from '../../fs/lock.js';
import {
  type KvCore, type KvEntry, type KvEvent, type KvExpect, type KvPutOptions, type KvPutResult, type KvWatch, type KvWatchState,
  byKey, checkKey, checkPrefix,
} from '../core.js';

interface Envelope {
  readonly value: string;
  readonly expiresAt: number | null;
  readonly revision: string;
  readonly token: string;
}

/**
 * The envelope from parsed JSON, or what is wrong with it. Hand-written rather than a zod schema:
 * a watcher reads one envelope per change, thousands in a burst.
 */
function parseEnvelope(j: unknown): Envelope | string {
  if (typeof j !== 'object' || j === null || Array.isArray(j)) return 'envelope is not an object';
  const o = j as Record<string, unknown>;
  if (typeof o.value !== 'string') return 'value: expected a string';
  if (o.expiresAt !== null && typeof o.expiresAt !== 'number') return 'expiresAt: expected a number or null';
  if (typeof o.revision !== 'string' || !/^\d+$/.test(o.revision)) return 'revision: expected a decimal string';
  if (typeof o.token !== 'string') return 'token: expected a string';
  return { value: o.value, expiresAt: o.expiresAt, revision: o.revision, token: o.token };
}

/** One change-log line; a put carries the envelope it wrote (JSON text has no newline). */
function logLine(rev: bigint, op: 'put' | 'del', key: string, envelope: string | undefined): string {
  return envelope === undefined ? `${rev} ${op} ${key}\n` : `${rev} ${op} ${key} ${envelope}\n`;
}

/** Rotate the change log past this size; watchers that lag behind resync. */
const LOG_ROTATE_BYTES = 4 * 1024 * 1024;
/** Poll interval backing up fs.watch (which can miss events on some filesystems). */
const POLL_MS = 40;
/** How often a watcher lists the lease directory for changes made beside the store. */
const SWEEP_MS = 1000;
/** The rev file holds a decimal number and nothing else. */
const REV_TEXT = /^\d+\n?$/;
/** The lines a change log holds: `#<rev>` (where it starts) and `<rev> put|del <key>…`. */
const LOG_LINE_REV = /^(?:#(\d+)$|(\d+) (?:put|del) )/;
/** The lease keys: envelopes in the subnets directory. */
const SUBNETS = 'subnets/';

/** The change log names a subnet key bare (as older writers, and their watchers, do), any other in full. */
function logKey(key: string): string {
  return key.startsWith(SUBNETS) ? key.slice(SUBNETS.length) : key;
}

/** The key a change-log line names: every key but `config` outside subnets/ has a folder. */
function keyOfLogKey(k: string): string {
  return k.includes('/') || k === 'config' ? k : SUBNETS + k;
}

/** A lease entry of the core as the SubnetStore view hands it out (unless its name is no subnet). */
function rawEntryOf(e: KvEntry): RawEntry | undefined {
  const subnets = parseLeaseKey(e.key.slice(SUBNETS.length));
  if (!subnets) return undefined;
  return {
    ...subnets, value: e.value, revision: e.revision,
    ...(e.expiresAt !== undefined && { expiresAt: e.expiresAt }),
    ...(e.owner !== undefined && { owner: e.owner }),
  };
}

export interface FileStoreOptions {
  readonly dir: string;
  readonly prefix: string;
  /** Called for envelopes that cannot be read (garbage written by hand, say). */
  readonly onGarbage?: (key: string, reason: string) => void;
  /** Rotate the change log past this many bytes (default 4 MiB); small values test resyncs. */
  readonly logRotateBytes?: number;
  /**
   * Create the directory when it is missing (default true). Readers that must not leave anything
   * behind (weftctl's listings) pass false: a mistyped --store-dir is then an error naming the
   * path, not a new empty store.
   */
  readonly create?: boolean;
}

/** The error for a file store that is not there (opened with create: false). */
export function fileStoreMissing(root: string): WeftError {
  return new WeftError(CniCode.Store,
    `no file store at ${root}: the directory does not exist (check --store-dir and --prefix; weftctl config set creates a store)`);
}

function atomicWrite(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The revisions of the keys outside subnets/ (whose files hold the bare value, as DESIGN.md's
 * layout has them), read from the change log as it grows: a key's revision is that of its last
 * line, or the log's start revision when the log no longer names it (it has not changed since).
 */
interface PlainRevisions {
  ino: number;
  offset: number;
  start: bigint;
  partial: string;
  readonly revs: Map<string, bigint>;
}

export class FileStore implements SubnetStore, KvCore {
  readonly kind = 'file' as const;
  readonly where: string;
  private readonly root: string;
  private readonly subnetsDir: string;
  private readonly lockPath: string;
  private readonly revPath: string;
  private readonly logPath: string;
  private readonly watches = new Set<FileWatch>();
  private readonly plain: PlainRevisions = { ino: -1, offset: 0, start: 0n, partial: '', revs: new Map() };

  constructor(private readonly opts: FileStoreOptions) {
    this.root = join(opts.dir, ...opts.prefix.split('/').filter((p) => p !== ''));
    this.where = this.root;
    this.subnetsDir = join(this.root, 'subnets');
    this.lockPath = join(this.root, 'lock');
    this.revPath = join(this.root, 'rev');
    this.logPath = join(this.root, 'changes.log');
    if (opts.create === false) {
      let isDir = false;
      try { isDir = statSync(this.root).isDirectory(); } catch { /* missing */ }
      if (!isDir) throw fileStoreMissing(this.root);
      return;
    }
    try {
      mkdirp(this.subnetsDir);
      if (!existsSync(this.logPath)) {
        // Creating the log races with other processes; the first wins and later ones keep it.
        try { writeFileSync(this.logPath, '#0\n', { flag: 'wx' }); } catch { /* exists */ }
      }
    } catch (err) {
      throw WeftError.wrap(err, CniCode.Store, `cannot prepare file store directory ${this.root}`);
    }
  }

  private locked<T>(fn: () => T): Promise<T> {
    return withFileLock(this.lockPath, fn, { timeoutMs: 10_000 });
  }

  /**
   * The store's revision: the rev file's, unless that is unreadable, missing or behind the change
   * log (damaged, deleted, restored from an old backup). Watchers skip every line at or below the
   * revision they have seen, so revisions must only grow: a damaged file that restarted them at 1
   * hid every later lease from the running nodes. Then the revision is rebuilt from the log and the
   * lease files, and the next write stores it again.
   */
  private currentRevision(): bigint {
    const text = readIfExists(this.revPath);
    const fromFile = text !== undefined && REV_TEXT.test(text) ? BigInt(text.trim()) : undefined;
    const logged = this.lastLoggedRevision();
    if (fromFile !== undefined && fromFile >= logged) return fromFile;
    let rev = logged;
    for (const key of this.subnetKeys()) {
      const e = this.readEnvelope(key);
      if (e !== undefined && e !== 'garbage' && BigInt(e.revision) > rev) rev = BigInt(e.revision);
    }
    return rev;
  }

  /**
   * The revision of the change log's last line (or of its `#` start line), read from its tail:
   * every write appends here after publishing its revision, so the rev file can never be behind it
   * unless it was damaged.
   */
  private lastLoggedRevision(): bigint {
    let fd: number;
    try {
      fd = openSync(this.logPath, 'r');
    } catch {
      return 0n;
    }
    try {
      const size = fstatSync(fd).size;
      for (const want of [8192, 1 << 20, size]) {
        const len = Math.min(want, size);
        const buf = Buffer.alloc(len);
        const n = readSync(fd, buf, 0, len, size - len);
        const lines = buf.subarray(0, n).toString('utf8').split('\n');
        // The last element follows the last newline (a line still being written, or nothing); the
        // first may be cut off unless the window holds the whole file.
        for (let i = lines.length - 2; i >= (len === size ? 0 : 1); i--) {
          const m = LOG_LINE_REV.exec(lines[i]!);
          if (m) return BigInt(m[1] ?? m[2]!);
        }
        if (len === size) break;
      }
      return 0n;
    } finally {
      closeSync(fd);
    }
  }

  /** The keys of the lease files (temp files and foreign names left out). */
  subnetKeys(): string[] {
    return this.fileNames().filter((n) => parseSubnetKey(n) !== undefined);
  }

  /** The names in the lease directory but temp files, unparsed (a watcher's cheap sweep). */
  fileNames(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.subnetsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names.filter((n) => !n.includes('.tmp-'));
  }

  /**
   * Under the lock: applies the change to the key's file, then publishes the new revision, then
   * records it for watchers. Key before revision: a lister reads the revision first, so it either
   * sees the old revision (and the watch from there delivers this change, perhaps twice) or the
   * new one with the key already in place — never the new revision without the key, which would
   * hide the change from both the listing and the watch. Log last, so a watcher reading the key
   * after the log line sees it.
   */
  private commit(op: 'put' | 'del', key: string, apply: (rev: bigint) => string | void): bigint {
    const rev = this.currentRevision() + 1n;
    const envelope = apply(rev);
    atomicWrite(this.revPath, String(rev));
    this.rotateLogIfNeeded(rev - 1n);
    appendFileSync(this.logPath, logLine(rev, op, logKey(key), envelope ?? undefined));
    return rev;
  }

  /**
   * The revision of a key outside subnets/ (see PlainRevisions). A reader takes it before the
   * value: a write in between then shows as a newer revision than the value's (a later compare
   * fails, safely), never as an old revision beside a new value.
   */
  private plainRevision(key: string): bigint {
    const ix = this.plain;
    let fd: number;
    try { fd = openSync(this.logPath, 'r'); } catch { return this.currentRevision(); }
    try {
      const st = fstatSync(fd);
      if (st.ino !== ix.ino || st.size < ix.offset) {
        ix.ino = st.ino; ix.offset = 0; ix.start = 0n; ix.partial = ''; ix.revs.clear();
      }
      if (st.size > ix.offset) {
        const buf = Buffer.alloc(st.size - ix.offset);
        const n = readSync(fd, buf, 0, buf.length, ix.offset);
        ix.offset += n;
        const lines = (ix.partial + buf.subarray(0, n).toString('utf8')).split('\n');
        ix.partial = lines.pop() ?? '';
        for (const line of lines) {
          if (line.startsWith('#')) { if (/^#\d+$/.test(line)) ix.start = BigInt(line.slice(1)); continue; }
          const s1 = line.indexOf(' ');
          const s2 = s1 < 0 ? -1 : line.indexOf(' ', s1 + 1);
          if (s2 < 0 || !/^\d+$/.test(line.slice(0, s1))) continue;
          const s3 = line.indexOf(' ', s2 + 1);
          const k = keyOfLogKey(s3 < 0 ? line.slice(s2 + 1) : line.slice(s2 + 1, s3));
          if (!k.startsWith(SUBNETS)) ix.revs.set(k, BigInt(line.slice(0, s1)));
        }
      }
    } finally {
      closeSync(fd);
    }
    return ix.revs.get(key) ?? ix.start;
  }

  /** Writes a put's envelope to the key's file and returns its text (for the log line). */
  private writeEnvelope(key: string, e: Envelope): string {
    const text = JSON.stringify(e);
    atomicWrite(`${this.subnetsDir}/${key}`, text);
    return text;
  }

  /** Starts a fresh log (holding changes after `after`) once the current one is too large. */
  private rotateLogIfNeeded(after: bigint): void {
    let size = 0;
    try { size = statSync(this.logPath).size; } catch { /* recreated below */ }
    if (size > (this.opts.logRotateBytes ?? LOG_ROTATE_BYTES) || size === 0) {
      atomicWrite(this.logPath, `#${after}\n`);
    }
  }

  private readEnvelope(key: string): Envelope | undefined | 'garbage' {
    // Plain concatenation, not path.join: a watcher reads thousands of keys in a burst, and keys
    // are subnet names without separators (parseSubnetKey) in an already normalised directory.
    const text = readIfExists(`${this.subnetsDir}/${key}`);
    if (text === undefined) return undefined;
    try {
      const e = parseEnvelope(JSON.parse(text));
      if (typeof e !== 'string') return e;
      this.opts.onGarbage?.(key, e);
    } catch {
      this.opts.onGarbage?.(key, 'envelope is not JSON');
    }
    return 'garbage';
  }

  /** Reads one lease file as watchers and listers see it: missing and expired are absent. */
  readLive(name: string, now = Date.now()): KvEntry | undefined {
    const e = this.readEnvelope(name);
    if (e === undefined) return undefined;
    // An unreadable envelope still holds the key; it is surfaced as a garbage value so the
    // watcher's parser skips it with a warning rather than pretending the key is free.
    if (e === 'garbage') return { key: SUBNETS + name, value: '', revision: 0n, expiresAt: null };
    return this.liveEntry(name, e, now);
  }

  /** An envelope as readers see it: lapsed ones are absent (and reaped soon). */
  liveEntry(name: string, e: Envelope, now = Date.now()): KvEntry | undefined {
    if (e.expiresAt !== null && e.expiresAt <= now) {
      this.scheduleReap(name);
      return undefined;
    }
    return { key: SUBNETS + name, value: e.value, revision: BigInt(e.revision), expiresAt: e.expiresAt, owner: e.token };
  }

  /** Where a key lives: a lease envelope in subnets/, or a file of its own holding the value. */
  private locate(key: string): { readonly kind: 'lease'; readonly name: string } | { readonly kind: 'plain'; readonly path: string } {
    checkKey(key);
    if (key.startsWith(SUBNETS)) {
      const name = key.slice(SUBNETS.length);
      if (!name.includes('/')) return { kind: 'lease', name };
    } else if (key === 'config' || key.includes('/')) {
      return { kind: 'plain', path: join(this.root, ...key.split('/')) };
    }
    // The store's own files (rev, lock, changes.log) sit beside config at the root.
    throw new WeftError(CniCode.InvalidNetworkConfig, `file store key ${JSON.stringify(key)}: keys other than config need a folder (subnets/ holds leases only)`);
  }

  /** A plain key's value as of now (sync: watchers read it for a log line). */
  readPlain(key: string, path: string): string | undefined {
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
      throw WeftError.wrap(err, CniCode.Store, `read ${key} in ${this.where}`);
    }
  }

  /** For a watcher: the state of a key outside subnets/ (it has no envelope to carry in the log). */
  readPlainEntry(key: string, revision: bigint): KvEntry | undefined {
    const value = this.readPlain(key, join(this.root, ...key.split('/')));
    return value === undefined ? undefined : { key, value, revision };
  }

  // ---- the key/value core ----

  async get(key: string): Promise<KvEntry | undefined> {
    const at = this.locate(key);
    if (at.kind === 'lease') return this.readLive(at.name);
    const revision = this.plainRevision(key);
    const value = this.readPlain(key, at.path);
    return value === undefined ? undefined : { key, value, revision };
  }

  async list(prefix: string): Promise<{ revision: bigint; entries: KvEntry[] }> {
    checkPrefix(prefix);
    // Revision first: anything written after it shows up again through a watch from it.
    const revision = this.currentRevision();
    const entries: KvEntry[] = [];
    if (prefix === SUBNETS) {
      const now = Date.now();
      for (const name of this.fileNames()) {
        const e = this.readLive(name, now);
        if (e) entries.push(e);
      }
    } else if (!prefix.startsWith(SUBNETS)) {
      this.plainRevision(prefix);
      const walk = (dir: string, rel: string): void => {
        let names: string[];
        try { names = readdirSync(dir); } catch { return; }
        for (const name of names) {
          if (name.includes('.tmp-') || name.startsWith('.')) continue;
          const key = rel + name;
          const value = this.readPlain(key, join(dir, name));
          if (value !== undefined) entries.push({ key, value, revision: this.plain.revs.get(key) ?? this.plain.start });
          else walk(join(dir, name), `${key}/`);
        }
      };
      walk(join(this.root, ...prefix.slice(0, -1).split('/')), prefix);
    }
    return { revision, entries: entries.sort(byKey) };
  }

  async put(key: string, value: string, opts: KvPutOptions = {}): Promise<KvPutResult> {
    const at = this.locate(key);
    const ttl = opts.ttlSeconds ?? null;
    if (at.kind === 'lease') return this.locked(() => this.putLeaseLocked(at.name, value, ttl, opts.expect, Date.now()));
    if (ttl !== null) throw new WeftError(CniCode.Store, `file store ${this.where}: ${key}: only leases (subnets/) carry a TTL here`);
    return this.locked((): KvPutResult => {
      const exists = this.readPlain(key, at.path) !== undefined;
      if (opts.expect?.type === 'absent' && exists) return { type: 'conflict' };
      if (opts.expect?.type === 'revision' && (!exists || this.plainRevision(key) !== opts.expect.revision)) return { type: 'conflict' };
      const revision = this.commit('put', key, () => {
        mkdirp(dirname(at.path));
        atomicWrite(at.path, value);
      });
      return { type: 'written', revision, owner: '', expiresAt: null };
    });
  }

  /** Under the lock: a lease envelope written if the key is as expected. */
  private putLeaseLocked(name: string, value: string, ttl: number | null, expect: KvExpect | undefined, now: number): KvPutResult {
    const cur = this.readEnvelope(name);
    const live = cur !== undefined && cur !== 'garbage' && (cur.expiresAt === null || cur.expiresAt > now) ? cur : undefined;
    if (expect?.type === 'absent' && (live || cur === 'garbage')) return { type: 'conflict' };
    if (expect?.type === 'revision' && (!live || BigInt(live.revision) !== expect.revision)) return { type: 'conflict' };
    const token = ttl === null ? '' : randomBytes(8).toString('hex');
    const expiresAt = ttl === null ? null : now + ttl * 1000;
    const revision = this.commit('put', SUBNETS + name, (rev) => this.writeEnvelope(name, { value, expiresAt, revision: String(rev), token }));
    return { type: 'written', revision, owner: token, expiresAt };
  }

  async delete(key: string, opts: { readonly expect?: KvExpect; readonly owner?: string } = {}): Promise<boolean> {
    const at = this.locate(key);
    if (opts.expect?.type === 'absent') return false;
    const want = opts.expect?.type === 'revision' ? opts.expect.revision : undefined;
    return this.locked(() => {
      if (at.kind === 'lease') {
        const cur = this.readEnvelope(at.name);
        if (cur === undefined) return false;
        if (opts.owner !== undefined && (cur === 'garbage' || cur.token !== opts.owner)) return false;
        if (want !== undefined && (cur === 'garbage' || BigInt(cur.revision) !== want)) return false;
        return this.deleteLocked(at.name);
      }
      if (this.readPlain(key, at.path) === undefined) return false;
      if (opts.owner !== undefined && opts.owner !== '') return false;
      if (want !== undefined && this.plainRevision(key) !== want) return false;
      this.commit('del', key, () => {
        unlinkSync(at.path);
        // Empty folders (a namespace with no policies left) go too, up to the store root.
        for (let dir = dirname(at.path); dir.startsWith(this.root + '/'); dir = dirname(dir)) {
          try { rmdirSync(dir); } catch { break; }
        }
      });
      return true;
    });
  }

  watch(prefix: string, afterRevision: bigint, onEvent: (ev: KvEvent) => void, onState?: (s: KvWatchState) => void): KvWatch {
    const w = new FileWatch(this, this.root, this.logPath, checkPrefix(prefix), afterRevision, onEvent, () => this.watches.delete(w));
    this.watches.add(w);
    onState?.({ type: 'connected' });
    return w;
  }

  // ---- the SubnetStore view ----

  async getConfig(): Promise<string | undefined> {
    return readIfExists(join(this.root, 'config'));
  }

  async putConfig(text: string): Promise<void> {
    await this.put('config', text);
  }

  async listSubnets(_opts?: ListOptions): Promise<{ revision: bigint; entries: RawEntry[] }> {
    const { revision, entries } = await this.list(SUBNETS);
    return { revision, entries: entries.flatMap((e) => rawEntryOf(e) ?? []) };
  }

  async getSubnet(subnet: Cidr): Promise<RawEntry | undefined> {
    const key = subnetKey(subnet);
    const e = this.readLive(key);
    if (e !== undefined) return rawEntryOf(e);
    const dual = this.dualStackKey(key);
    const d = dual === undefined ? undefined : this.readLive(dual);
    return d === undefined ? undefined : rawEntryOf(d);
  }

  /** A dual-stack lease of the subnet ("<key>&<IPv6 key>", flanneld's or weft's) other than `except`. */
  private dualStackKey(key: string, except?: string): string | undefined {
    if (!existsSync(this.subnetsDir)) return undefined;
    return this.subnetKeys().find((k) => k.startsWith(`${key}&`) && k !== except);
  }

  /** Whether the entry under `key` holds its subnet (an unreadable one holds it too). */
  private liveAt(key: string | undefined, now: number): boolean {
    const e = key === undefined ? undefined : this.readEnvelope(key);
    return e === 'garbage' || (e !== undefined && (e.expiresAt === null || e.expiresAt > now));
  }

  /** Whether a dual-stack lease holds the subnet of `key` (an unreadable one holds it too). */
  private liveDualStack(key: string, now: number, except?: string): boolean {
    return this.liveAt(this.dualStackKey(key, except), now);
  }

  async writeSubnet(
    subnet: Cidr,
    value: string,
    ttlSeconds: number | null,
    expect: { type: 'absent' } | { type: 'revision'; revision: bigint },
    ipv6Subnet?: Cidr,
  ): Promise<WriteResult> {
    const plain = subnetKey(subnet);
    const key = leaseKey(subnet, ipv6Subnet);
    return this.locked((): WriteResult => {
      const now = Date.now();
      // The subnet may be held under its other key form (single- or dual-stack).
      if (expect.type === 'absent' && (this.liveDualStack(plain, now, key) || (key !== plain && this.liveAt(plain, now)))) return { type: 'conflict' };
      const r = this.putLeaseLocked(key, value, ttlSeconds, expect, now);
      if (r.type === 'conflict') return r;
      return { type: 'written', held: { subnet, ...(ipv6Subnet && { ipv6Subnet }), value, revision: r.revision, token: r.owner, ttlSeconds, expiresAt: r.expiresAt } };
    });
  }

  /**
   * Many put-if-absent writes under one lock, with one revision-file write and one change-log
   * append for all of them (a bulk loader, or a benchmark filling the store, pays the lock and
   * the log once instead of per key). Each entry gets its own revision, in input order; an entry
   * whose key is live (or holds garbage) is a conflict and takes no revision.
   */
  async writeSubnetsIfAbsent(
    items: readonly { readonly subnet: Cidr; readonly value: string }[],
    ttlSeconds: number | null,
  ): Promise<WriteResult[]> {
    return this.locked((): WriteResult[] => {
      const now = Date.now();
      const expiresAt = ttlSeconds === null ? null : now + ttlSeconds * 1000;
      // One directory listing instead of opening every key: most keys of a bulk load are new,
      // and under the lock nobody else creates one meanwhile.
      const names = readdirSync(this.subnetsDir);
      const present = new Set(names);
      const dualStack = new Set(names.filter((n) => n.includes('&') && !n.includes('.tmp-')).map((n) => n.slice(0, n.indexOf('&'))));
      const free = items.map(({ subnet }) => {
        const key = subnetKey(subnet);
        if (dualStack.has(key) && this.liveDualStack(key, now)) return false;
        if (!present.has(key)) return true;
        const cur = this.readEnvelope(key);
        return cur === undefined || (cur !== 'garbage' && cur.expiresAt !== null && cur.expiresAt <= now);
      });
      const base = this.currentRevision();
      const count = free.filter(Boolean).length;
      if (count === 0) return items.map(() => ({ type: 'conflict' }));
      // The same order as commit(): the keys, then the revision, then the log lines naming them.
      let rev = base;
      const lines: string[] = [];
      const results = items.map(({ subnet, value }, i): WriteResult => {
        if (!free[i]) return { type: 'conflict' };
        rev += 1n;
        const key = subnetKey(subnet);
        const token = ttlSeconds === null ? '' : randomBytes(8).toString('hex');
        lines.push(logLine(rev, 'put', key, this.writeEnvelope(key, { value, expiresAt, revision: String(rev), token })));
        return { type: 'written', held: { subnet, value, revision: rev, token, ttlSeconds, expiresAt } };
      });
      atomicWrite(this.revPath, String(rev));
      this.rotateLogIfNeeded(base);
      appendFileSync(this.logPath, lines.join(''));
      return results;
    });
  }

  async renewSubnet(held: HeldEntry): Promise<RenewResult> {
    const key = leaseKey(held.subnet, held.ipv6Subnet);
    if (held.ttlSeconds === null) {
      const e = this.readLive(key);
      return e ? { type: 'renewed', held } : { type: 'lost', reason: `reservation ${formatCidr(held.subnet)} was removed` };
    }
    const ttl = held.ttlSeconds;
    return this.locked((): RenewResult => {
      const now = Date.now();
      const cur = this.readEnvelope(key);
      if (cur === undefined) return { type: 'lost', reason: `lease ${formatCidr(held.subnet)} was removed from the store` };
      if (cur === 'garbage' || cur.token !== held.token) {
        return { type: 'lost', reason: `lease ${formatCidr(held.subnet)} was taken over by another writer` };
      }
      if (cur.expiresAt !== null && cur.expiresAt <= now) {
        return { type: 'lost', reason: `lease ${formatCidr(held.subnet)} expired before it was renewed` };
      }
      const expiresAt = now + ttl * 1000;
      const revision = this.commit('put', SUBNETS + key, (rev) => this.writeEnvelope(key, { ...cur, expiresAt, revision: String(rev) }));
      return { type: 'renewed', held: { ...held, revision, expiresAt } };
    });
  }

  async releaseSubnet(held: HeldEntry): Promise<boolean> {
    const key = leaseKey(held.subnet, held.ipv6Subnet);
    return this.locked(() => {
      const cur = this.readEnvelope(key);
      if (cur === undefined || cur === 'garbage' || cur.token !== held.token) return false;
      this.commit('del', SUBNETS + key, () => unlinkSync(join(this.subnetsDir, key)));
      return true;
    });
  }

  async deleteSubnet(subnet: Cidr): Promise<boolean> {
    const key = subnetKey(subnet);
    return this.locked(() => {
      if (this.deleteLocked(key)) return true;
      const dual = this.dualStackKey(key);
      return dual !== undefined && this.deleteLocked(dual);
    });
  }

  private deleteLocked(key: string): boolean {
    const path = join(this.subnetsDir, key);
    if (!existsSync(path)) return false;
    this.commit('del', SUBNETS + key, () => unlinkSync(path));
    return true;
  }

  private readonly reaping = new Set<string>();

  /** Lapsed leases are invisible at once and deleted soon after, by whoever saw them first. */
  private scheduleReap(key: string): void {
    if (this.reaping.has(key)) return;
    this.reaping.add(key);
    this.reapExpired(key).catch(() => { /* next reader retries */ }).finally(() => this.reaping.delete(key));
  }

  /** Removes a lease that lapsed (if it was not renewed or replaced meanwhile). */
  async reapExpired(key: string): Promise<void> {
    await this.locked(() => {
      const cur = this.readEnvelope(key);
      if (cur && cur !== 'garbage' && cur.expiresAt !== null && cur.expiresAt <= Date.now()) this.deleteLocked(key);
    });
  }

  watchSubnets(afterRevision: bigint, onEvent: (ev: StoreEvent) => void, onState?: (s: WatchState) => void): RawWatch {
    return this.watch(SUBNETS, afterRevision, (ev) => {
      if (ev.type === 'resync') { onEvent(ev); return; }
      if (ev.type === 'put') { const entry = rawEntryOf(ev.entry); if (entry) onEvent({ type: 'put', entry }); return; }
      const subnet = parseSubnetKey(ev.key.slice(SUBNETS.length));
      if (subnet) onEvent({ type: 'delete', subnet, revision: ev.revision });
    }, onState);
  }

  async close(): Promise<void> {
    await Promise.all([...this.watches].map((w) => w.close()));
  }
}

/**
 * Tails changes.log and turns the lines of keys under its prefix into events. Lapsed TTLs are not
 * in the log: the consumer (LeaseWatcher) times them from each entry's expiresAt and confirms with
 * getSubnet. Lease files removed or dropped in by hand are not in the log either: a watch of
 * subnets/ lists the directory every SWEEP_MS to find them (a node whose own lease file was
 * deleted would otherwise learn it at its next renewal, hours later, while another node could be
 * handed the subnet).
 */
class FileWatch implements KvWatch {
  /** The lease names on disk at the last sweep (a watch of subnets/ only). */
  private onDisk: Set<string> | undefined;
  private lastSweep = Date.now();
  private fd: number | undefined;
  private ino = -1;
  private offset = 0;
  private partial = '';
  private lastRev: bigint;
  private readonly timer: NodeJS.Timeout;
  private readonly fsw: FSWatcher | undefined;
  private closed = false;
  private scheduled = false;

  constructor(
    private readonly store: FileStore,
    dir: string,
    private readonly logPath: string,
    private readonly prefix: string,
    afterRevision: bigint,
    private readonly onEvent: (ev: KvEvent) => void,
    private readonly onClose: () => void,
  ) {
    this.lastRev = afterRevision;
    if (prefix === SUBNETS) this.onDisk = new Set(store.fileNames());
    this.openLog();
    this.timer = setInterval(() => this.tick(), POLL_MS);
    this.timer.unref?.();
    let fsw: FSWatcher | undefined;
    try {
      fsw = fsWatch(dir, { persistent: false }, (_ev, name) => {
        if (name === 'changes.log') this.schedule();
      });
      fsw.on('error', () => { /* the poll keeps us going */ });
    } catch { fsw = undefined; }
    this.fsw = fsw;
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => { this.scheduled = false; this.tick(); });
  }

  private openLog(): void {
    this.fd = openSync(this.logPath, 'r');
    this.ino = fstatSync(this.fd).ino;
  }

  private tick(): void {
    if (this.closed) return;
    try {
      let ino: number;
      try { ino = statSync(this.logPath).ino; } catch { return; }
      if (ino !== this.ino) {
        this.readNew(); // deliver what the old file still held, then start over
        this.endWithResync('file store change log was rotated');
        return;
      }
      this.readNew();
      if (Date.now() - this.lastSweep >= SWEEP_MS) this.sweep();
    } catch (err) {
      this.endWithResync(`file store watch error: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private endWithResync(reason: string): void {
    if (this.closed) return;
    void this.close();
    this.onEvent({ type: 'resync', reason });
  }

  private readNew(): void {
    if (this.fd === undefined) return;
    const size = fstatSync(this.fd).size;
    if (size <= this.offset) return;
    const buf = Buffer.alloc(size - this.offset);
    const n = readSync(this.fd, buf, 0, buf.length, this.offset);
    this.offset += n;
    const text = this.partial + buf.subarray(0, n).toString('utf8');
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    const changed = new Map<string, { rev: bigint; envelope: string | undefined }>();
    for (const line of lines) {
      if (this.closed) return;
      if (line.startsWith('#')) {
        // The log starts after this revision; if we needed older lines, they are gone.
        const start = BigInt(line.slice(1) || '0');
        if (start > this.lastRev) {
          this.endWithResync('file store change log no longer holds the watched revision');
          return;
        }
        continue;
      }
      // "<rev> <op> <key>[ <envelope>]": the envelope may hold spaces, so split by position.
      const s1 = line.indexOf(' ');
      const s2 = s1 < 0 ? -1 : line.indexOf(' ', s1 + 1);
      if (s2 < 0) continue;
      const revS = line.slice(0, s1);
      const s3 = line.indexOf(' ', s2 + 1);
      const logged = s3 < 0 ? line.slice(s2 + 1) : line.slice(s2 + 1, s3);
      if (!logged || !/^\d+$/.test(revS)) continue;
      const rev = BigInt(revS);
      if (rev <= this.lastRev) continue;
      this.lastRev = rev;
      const key = keyOfLogKey(logged);
      if (!key.startsWith(this.prefix)) continue;
      changed.delete(key); // keep the map in log order of each key's last change
      changed.set(key, { rev, envelope: s3 < 0 || line.slice(s1 + 1, s2) !== 'put' ? undefined : line.slice(s3 + 1) });
    }
    // Several lines for one key collapse into its last state.
    for (const [key, { rev, envelope }] of changed) {
      if (this.closed) return;
      this.emitCurrent(key, rev, envelope);
    }
  }

  /**
   * Keys that appeared or vanished on disk since the last sweep, whatever the log says: the log
   * was read to its end first, so what it announced is already out, and saying it again is
   * harmless (a consumer holds the last state per key).
   */
  private sweep(): void {
    this.lastSweep = Date.now();
    if (this.onDisk === undefined) return;
    // Names only: thousands of leases cost a directory read, and only a changed name is parsed.
    const now = new Set(this.store.fileNames());
    for (const name of this.onDisk) {
      if (this.closed) return;
      if (!now.has(name)) this.onEvent({ type: 'delete', key: SUBNETS + name, revision: this.lastRev });
    }
    for (const name of now) {
      if (this.closed) return;
      if (!this.onDisk.has(name)) this.emitCurrent(SUBNETS + name, this.lastRev, undefined);
    }
    this.onDisk = now;
  }

  /** The key's state as of its last line: the line's envelope, or else the key's file. */
  private emitCurrent(key: string, rev: bigint, envelopeText: string | undefined): void {
    let entry: KvEntry | undefined;
    if (key.startsWith(SUBNETS)) {
      const name = key.slice(SUBNETS.length);
      let envelope: Envelope | undefined;
      if (envelopeText !== undefined) {
        try {
          const e = parseEnvelope(JSON.parse(envelopeText));
          if (typeof e !== 'string') envelope = e;
        } catch { /* not one we wrote: read the file instead */ }
      }
      entry = envelope !== undefined ? this.store.liveEntry(name, envelope) : this.store.readLive(name);
    } else {
      entry = this.store.readPlainEntry(key, rev);
    }
    this.onEvent(entry ? { type: 'put', entry } : { type: 'delete', key, revision: rev });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.fsw?.close();
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.onClose();
  }
}

// A small generic key/value view of the store for everything that is not a subnet lease:
// policies, namespaces, endpoints. Keys are relative to the store prefix (`policies/prod/web`
// is `<prefix>/policies/prod/web` in etcd and `<dir>/<prefix>/policies/prod/web` on disk), so
// both stores keep the flannel-style layout of DESIGN.md.
import {
  appendFileSync, closeSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmdirSync, statSync,
  unlinkSync, watch as fsWatch, writeFileSync, type FSWatcher,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { describeEtcdError } from './etcd/errors.js';
import { CniCode, WeftError } from '../errors.js';
import { withFileLock } from '../fs/lock.js';
import { mkdirp } from '../fs/mkdir.js';
import { fileStoreMissing } from './file/file-store.js';
import type { OpenOptions, StoreSettings } from './flags.js';
import { storeReconnectBackoff } from './reconnect.js';

export interface KeyValue {
  readonly key: string;
  readonly value: string;
}

export interface KeyValueStore {
  readonly where: string;
  get(key: string): Promise<string | undefined>;
  put(key: string, value: string): Promise<void>;
  /** True if the key existed. */
  delete(key: string): Promise<boolean>;
  /** Every key under `prefix` (a directory-like prefix ending in '/'), sorted by key. */
  list(prefix: string): Promise<KeyValue[]>;
  /**
   * Follows every key under `prefix`: first the current listing as one `snapshot`, then `put` /
   * `delete` per change. Whenever continuity is lost (etcd reconnect, change log rotated) a new
   * `snapshot` replaces everything the consumer held, so no deletion is ever missed.
   */
  watch(prefix: string, onEvent: (ev: KeyValueEvent) => void): KeyValueWatch;
  close(): Promise<void>;
}

export type KeyValueEvent =
  | { readonly type: 'snapshot'; readonly entries: readonly KeyValue[] }
  | { readonly type: 'put'; readonly key: string; readonly value: string }
  | { readonly type: 'delete'; readonly key: string }
  /**
   * The watch lost the store (once per outage, not per reconnect attempt); it keeps trying and
   * the next `snapshot` says it is back.
   */
  | { readonly type: 'error'; readonly reason: string };

export interface KeyValueWatch {
  close(): Promise<void>;
}

/** The file store's key/value change log: `put|del <key>` lines, appended under the lock. */
const KV_LOG = 'kv-changes.log';
/** Past this size the log starts over; watchers see a new inode and re-list. */
const KV_LOG_MAX = 4 << 20;

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Keys are slash-separated segments of [A-Za-z0-9._-] (no empty, dot-only or hidden parts). */
export function checkKey(key: string): string {
  const parts = key.split('/');
  if (parts.some((p) => !SEGMENT.test(p) || p.includes('.tmp-'))) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid store key ${JSON.stringify(key)}`);
  }
  return key;
}

function checkPrefix(prefix: string): string {
  if (!prefix.endsWith('/')) throw new WeftError(CniCode.Internal, `list prefix must end in '/': ${JSON.stringify(prefix)}`);
  checkKey(prefix.slice(0, -1));
  return prefix;
}

/** The file store's directory layout: one file per key under the store root. */
export class FileKeyValueStore implements KeyValueStore {
  readonly where: string;
  private readonly root: string;

  /** `create: false` opens an existing store only (see OpenOptions). */
  constructor(dir: string, prefix: string, opts: OpenOptions = {}) {
    this.root = join(dir, ...prefix.split('/').filter((p) => p !== ''));
    this.where = this.root;
    if (opts.create === false) {
      let isDir = false;
      try { isDir = statSync(this.root).isDirectory(); } catch { /* missing */ }
      if (!isDir) throw fileStoreMissing(this.root);
      return;
    }
    mkdirp(this.root);
  }

  private path(key: string): string {
    return join(this.root, ...checkKey(key).split('/'));
  }

  private locked<T>(fn: () => T): Promise<T> {
    return withFileLock(join(this.root, 'lock'), fn, { timeoutMs: 10_000 });
  }

  async get(key: string): Promise<string | undefined> {
    try {
      return readFileSync(this.path(key), 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
      throw WeftError.wrap(err, CniCode.Store, `read ${key} in ${this.where}`);
    }
  }

  async put(key: string, value: string): Promise<void> {
    const path = this.path(key);
    await this.locked(() => {
      mkdirp(dirname(path));
      const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      writeFileSync(tmp, value);
      renameSync(tmp, path);
      this.logChange('put', key);
    });
  }

  /** Under the lock, after the change: a watcher reading the key after this line sees it. */
  private logChange(op: 'put' | 'del', key: string): void {
    const log = join(this.root, KV_LOG);
    try {
      if (statSync(log).size > KV_LOG_MAX) renameSync(log, `${log}.old`);
    } catch { /* no log yet */ }
    appendFileSync(log, `${op} ${key}\n`);
  }

  async delete(key: string): Promise<boolean> {
    const path = this.path(key);
    return this.locked(() => {
      try {
        unlinkSync(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
        throw WeftError.wrap(err, CniCode.Store, `delete ${key} in ${this.where}`);
      }
      this.logChange('del', key);
      // Empty parent directories (a namespace with no policies left) go too, up to the root.
      let dir = dirname(path);
      while (dir.startsWith(this.root + '/') && dir !== this.root) {
        try { rmdirSync(dir); } catch { break; }
        dir = dirname(dir);
      }
      return true;
    });
  }

  async list(prefix: string): Promise<KeyValue[]> {
    const base = join(this.root, ...checkPrefix(prefix).slice(0, -1).split('/'));
    const out: KeyValue[] = [];
    const walk = (dir: string, rel: string): void => {
      let names: string[];
      try { names = readdirSync(dir); } catch { return; }
      for (const name of names) {
        if (!SEGMENT.test(name) || name.includes('.tmp-')) continue;
        const path = join(dir, name);
        try {
          out.push({ key: rel + name, value: readFileSync(path, 'utf8') });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'EISDIR') walk(path, `${rel}${name}/`);
          else if (code !== 'ENOENT') throw WeftError.wrap(err, CniCode.Store, `read ${rel}${name} in ${this.where}`);
        }
      }
    };
    walk(base, prefix);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  watch(prefix: string, onEvent: (ev: KeyValueEvent) => void): KeyValueWatch {
    return new FileKeyValueWatch(this, join(this.root, KV_LOG), checkPrefix(prefix), onEvent);
  }

  async close(): Promise<void> {}
}

/**
 * Tails the file store's key/value change log. fs.watch on the store root wakes it at once; a
 * poll backs it up (fs.watch can miss events). The log is read from where the listing started,
 * so a change between listing and tailing is delivered, at worst twice (puts are idempotent).
 */
class FileKeyValueWatch implements KeyValueWatch {
  private offset = 0;
  private inode = -1;
  private closed = false;
  private busy = false;
  private again = false;
  /** An error was reported and no listing has succeeded since: the next errors are the same outage. */
  private failing = false;
  private readonly poll: NodeJS.Timeout;
  private fsw: FSWatcher | undefined;

  constructor(private readonly kv: FileKeyValueStore, private readonly log: string, private readonly prefix: string,
    private readonly onEvent: (ev: KeyValueEvent) => void, pollMs = 250) {
    try {
      this.fsw = fsWatch(dirname(log), (_t, name) => { if (name === KV_LOG) this.schedule(); });
      this.fsw.on('error', () => { this.fsw?.close(); this.fsw = undefined; });
    } catch { /* the poll alone still works */ }
    this.poll = setInterval(() => this.schedule(), pollMs);
    this.poll.unref?.();
    this.schedule(true);
  }

  private schedule(resync = false): void {
    if (this.closed) return;
    if (resync) this.inode = -1;
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    void this.step().catch((err: unknown) => {
      if (!this.failing && !this.closed) this.onEvent({ type: 'error', reason: err instanceof Error ? err.message : String(err) });
      this.failing = true;
      this.inode = -1;
    }).finally(() => {
      this.busy = false;
      if (this.again) { this.again = false; this.schedule(); }
    });
  }

  private async step(): Promise<void> {
    let st: { ino: number; size: number };
    try {
      st = statSync(this.log);
    } catch {
      st = { ino: 0, size: 0 };
    }
    if (st.ino !== this.inode || st.size < this.offset) {
      // Start (or lost continuity): remember where the log is, then list.
      this.inode = st.ino;
      this.offset = st.size;
      const entries = await this.kv.list(this.prefix);
      this.failing = false;
      if (!this.closed) this.onEvent({ type: 'snapshot', entries });
      return;
    }
    if (st.size === this.offset) return;
    const fd = openSync(this.log, 'r');
    let text: string;
    try {
      const buf = Buffer.alloc(st.size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      const chunk = buf.subarray(0, n).toString('utf8');
      const end = chunk.lastIndexOf('\n');
      if (end < 0) return;
      text = chunk.slice(0, end);
      this.offset += Buffer.byteLength(chunk.slice(0, end + 1));
    } finally {
      closeSync(fd);
    }
    const touched = new Set<string>();
    for (const line of text.split('\n')) {
      const m = /^(put|del) (\S+)$/.exec(line);
      if (m?.[2]?.startsWith(this.prefix)) touched.add(m[2]);
    }
    for (const key of touched) {
      // The log says which keys moved; the key's file says what they hold now.
      const value = await this.kv.get(key);
      if (this.closed) return;
      this.onEvent(value === undefined ? { type: 'delete', key } : { type: 'put', key, value });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.poll);
    this.fsw?.close();
  }
}

/** The same keys in etcd, under `<prefix>/`. */
export class EtcdKeyValueStore implements KeyValueStore {
  readonly where: string;
  private readonly prefix: string;
  /**
   * An outage was reported (by whichever watch saw it first) and no watch has listed since: one
   * warning per outage for all the watches of this store, not one per watch and retry (weftd
   * logged "etcd watch disconnected" ~18 times a second while etcd was down).
   */
  private down = false;

  constructor(private readonly client: Etcd3, prefix: string, where: string, private readonly onClose: () => Promise<void> = async () => {}) {
    this.prefix = prefix.replace(/\/+$/, '') + '/';
    this.where = where;
  }

  private async run<T>(what: string, p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (err) {
      throw new WeftError(CniCode.Store, `etcd ${this.where}: ${what}: ${describeEtcdError(err)}`, '', { cause: err });
    }
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.run(`get ${key}`, this.client.get(this.prefix + checkKey(key)).string())) ?? undefined;
  }

  async put(key: string, value: string): Promise<void> {
    await this.run(`put ${key}`, this.client.put(this.prefix + checkKey(key)).value(value).exec());
  }

  async delete(key: string): Promise<boolean> {
    const r = await this.run(`delete ${key}`, this.client.delete().key(this.prefix + checkKey(key)).exec());
    return Number(r.deleted) > 0;
  }

  async list(prefix: string): Promise<KeyValue[]> {
    const full = this.prefix + checkPrefix(prefix);
    const m = await this.run(`list ${prefix}`, this.client.getAll().prefix(full).strings());
    return Object.entries(m).map(([k, value]) => ({ key: k.slice(this.prefix.length), value }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  watch(prefix: string, onEvent: (ev: KeyValueEvent) => void): KeyValueWatch {
    const full = this.prefix + checkPrefix(prefix);
    const strip = (k: Buffer): string => k.toString('utf8').slice(this.prefix.length);
    let closed = false;
    let watcher: Awaited<ReturnType<ReturnType<Etcd3['watch']>['watcher']>> | undefined;
    const backoff = storeReconnectBackoff();
    const lost = (reason: string): void => {
      if (closed || this.down) return;
      this.down = true;
      onEvent({ type: 'error', reason: `etcd ${this.where}: ${reason}` });
    };
    // List at a revision, then watch from the next one: nothing falls between the two. After a
    // disconnect the client resumes from its last revision (pacing its attempts with the same
    // backoff), but a compaction can cut that stream, so any reconnect is answered with a fresh
    // snapshot.
    const resync = async (): Promise<void> => {
      const r = await this.client.getAll().prefix(full).exec();
      const entries = r.kvs.map((kv) => ({ key: strip(kv.key), value: kv.value.toString('utf8') }))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      if (closed) return;
      this.down = false;
      backoff.reset();
      onEvent({ type: 'snapshot', entries });
      if (watcher) return;
      const w = await this.client.watch().prefix(full).startRevision((BigInt(r.header.revision) + 1n).toString()).create();
      if (closed) { await w.cancel(); return; }
      watcher = w;
      w.on('put', (kv) => onEvent({ type: 'put', key: strip(kv.key), value: kv.value.toString('utf8') }));
      w.on('delete', (kv) => onEvent({ type: 'delete', key: strip(kv.key) }));
      w.on('disconnected', (err: Error) => lost(`watch disconnected: ${describeEtcdError(err)}`));
      w.on('connected', () => { void resync().catch(fail); });
      // Cancelled by etcd (e.g. its start revision compacted away): this watcher is done; the
      // retry lists again and starts a new one.
      w.on('error', (err: Error) => {
        if (watcher === w) watcher = undefined;
        void w.cancel().catch(() => {});
        fail(err);
      });
    };
    const fail = (err: unknown): void => {
      if (closed) return;
      lost(describeEtcdError(err));
      setTimeout(() => { if (!closed) void resync().catch(fail); }, backoff.next()).unref?.();
    };
    void resync().catch(fail);
    return {
      async close() {
        closed = true;
        await watcher?.cancel().catch(() => {});
      },
    };
  }

  async close(): Promise<void> {
    await this.onClose();
  }
}

/** Opens the key/value view of the configured store (same flags and options as openStore). */
export async function openKeyValueStore(s: StoreSettings, opts: OpenOptions = {}): Promise<KeyValueStore> {
  if (s.type === 'file') return new FileKeyValueStore(s.dir, s.prefix, opts);
  if (s.type === 'kube') {
    const [{ KubeClient }, { resolveKubeConnection }, { KubeKeyValueStore }] = await Promise.all([
      import('../kube/client.js'), import('../kube/config.js'), import('./kube/kube-kv.js'),
    ]);
    const client = new KubeClient(resolveKubeConnection(s.kubeconfig));
    return new KubeKeyValueStore(client, async () => client.close());
  }
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const { type: _type, ...etcdOpts } = s;
  const store = new EtcdStore(etcdOpts);
  return new EtcdKeyValueStore(store.client, s.prefix, store.where, () => store.close());
}

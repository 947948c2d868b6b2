// A small generic key/value view of the store for everything that is not a subnet lease:
// policies, namespaces, endpoints. Keys are relative to the store prefix (`policies/prod/web`
// is `<prefix>/policies/prod/web` in etcd and `<dir>/<prefix>/policies/prod/web` on disk), so
// both stores keep the flannel-style layout of DESIGN.md.
import { mkdirSync, readFileSync, readdirSync, renameSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { CniCode, WeftError } from '../errors.js';
import { withFileLock } from '../fs/lock.js';
import type { StoreSettings } from './flags.js';

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
  close(): Promise<void>;
}

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

  constructor(dir: string, prefix: string) {
    this.root = join(dir, ...prefix.split('/').filter((p) => p !== ''));
    this.where = this.root;
    mkdirSync(this.root, { recursive: true });
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
      mkdirSync(dirname(path), { recursive: true });
      const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      writeFileSync(tmp, value);
      renameSync(tmp, path);
    });
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

  async close(): Promise<void> {}
}

/** The same keys in etcd, under `<prefix>/`. */
export class EtcdKeyValueStore implements KeyValueStore {
  readonly where: string;
  private readonly prefix: string;

  constructor(private readonly client: Etcd3, prefix: string, where: string, private readonly onClose: () => Promise<void> = async () => {}) {
    this.prefix = prefix.replace(/\/+$/, '') + '/';
    this.where = where;
  }

  private async run<T>(what: string, p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (err) {
      throw WeftError.wrap(err, CniCode.Store, `etcd ${this.where}: ${what}`);
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

  async close(): Promise<void> {
    await this.onClose();
  }
}

/** Opens the key/value view of the configured store (same flags as openStore). */
export async function openKeyValueStore(s: StoreSettings): Promise<KeyValueStore> {
  if (s.type === 'file') return new FileKeyValueStore(s.dir, s.prefix);
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const { type: _type, ...opts } = s;
  const store = new EtcdStore(opts);
  return new EtcdKeyValueStore(store.client, s.prefix, store.where, () => store.close());
}

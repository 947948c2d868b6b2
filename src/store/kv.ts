// A small key/value view of the store for everything that is not a subnet lease: policies,
// namespaces, endpoints. Keys are relative to the store prefix (`policies/prod/web` is
// `<prefix>/policies/prod/web` in etcd and `<dir>/<prefix>/policies/prod/web` on disk), so both
// stores keep the flannel-style layout of DESIGN.md. For etcd and the file store it is a view over
// the store's revisioned core (src/store/core.ts) — the same client, change log, deadlines and
// resync as the subnet leases; the kube store maps API objects to these keys itself (kube-kv.ts).
import { checkKey, checkPrefix, type KvCore, type KvEvent, type KvWatch } from './core.js';
import { FileStore } from './file/file-store.js';
import type { OpenOptions, StoreSettings } from './flags.js';
import { storeReconnectBackoff } from './reconnect.js';

export { checkKey } from './core.js';

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

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/**
 * The KeyValueStore view of a core. Closing the view closes the core (it owns it). A watch is a
 * listing, then the core's watch from the listing's revision; a `resync` from the core (etcd
 * reconnected or compacted, the file store's log rotated) is answered with a new listing, sent as
 * the next snapshot.
 */
export function keyValueView(core: KvCore): KeyValueStore {
  /**
   * An outage was reported (by whichever watch saw it first) and no watch has listed since: one
   * warning per outage for all the watches of this store, not one per watch and retry (weftd
   * logged "etcd watch disconnected" ~18 times a second while etcd was down).
   */
  let down = false;
  return {
    where: core.where,
    async get(key) { return (await core.get(checkKey(key)))?.value; },
    async put(key, value) { await core.put(checkKey(key), value); },
    delete: (key) => core.delete(checkKey(key)),
    async list(prefix) {
      const { entries } = await core.list(checkPrefix(prefix));
      return entries.map(({ key, value }) => ({ key, value }));
    },
    watch(prefix, onEvent) {
      checkPrefix(prefix);
      let closed = false;
      let inner: KvWatch | undefined;
      let generation = 0;
      let retry: NodeJS.Timeout | undefined;
      const backoff = storeReconnectBackoff();
      const lost = (reason: string): void => {
        if (closed || down) return;
        down = true;
        onEvent({ type: 'error', reason });
      };
      const follow = async (gen: number): Promise<void> => {
        const { revision, entries } = await core.list(prefix);
        if (closed || gen !== generation) return;
        down = false;
        backoff.reset();
        onEvent({ type: 'snapshot', entries: entries.map(({ key, value }) => ({ key, value })) });
        inner = core.watch(prefix, revision, (ev: KvEvent) => {
          if (closed || gen !== generation) return;
          if (ev.type === 'put') onEvent({ type: 'put', key: ev.entry.key, value: ev.entry.value });
          else if (ev.type === 'delete') onEvent({ type: 'delete', key: ev.key });
          else restart();
        }, (s) => {
          if (s.type === 'disconnected' && gen === generation) lost(`${core.kind} ${core.where}: watch disconnected: ${s.reason}`);
        });
      };
      const attempt = (): void => {
        retry = undefined;
        const gen = ++generation;
        follow(gen).catch((err: unknown) => {
          if (closed || gen !== generation) return;
          lost(message(err));
          retry = setTimeout(attempt, backoff.next());
          retry.unref?.();
        });
      };
      // The core's watch has ended (it sends resync last): list again and follow from there.
      const restart = (): void => {
        const old = inner;
        inner = undefined;
        void old?.close().catch(() => {});
        if (retry === undefined) attempt();
      };
      attempt();
      return {
        async close() {
          closed = true;
          if (retry !== undefined) clearTimeout(retry);
          await inner?.close();
        },
      };
    },
    close: () => core.close(),
  };
}

/** The key/value view of a file store directory (tests, the lab, benchmarks). */
export function fileKeyValueStore(dir: string, prefix: string, opts: OpenOptions = {}): KeyValueStore {
  return keyValueView(new FileStore({ dir, prefix, create: opts.create ?? true }));
}

/** Opens the key/value view of the configured store (same flags and options as openStore). */
export async function openKeyValueStore(s: StoreSettings, opts: OpenOptions = {}): Promise<KeyValueStore> {
  if (s.type === 'file') return fileKeyValueStore(s.dir, s.prefix, opts);
  if (s.type === 'kube') {
    const [{ KubeClient }, { resolveKubeConnection }, { KubeKeyValueStore }] = await Promise.all([
      import('../kube/client.js'), import('../kube/config.js'), import('./kube/kube-kv.js'),
    ]);
    const client = new KubeClient(resolveKubeConnection(s.kubeconfig));
    return new KubeKeyValueStore(client, async () => client.close());
  }
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const { type: _type, ...etcdOpts } = s;
  return keyValueView(new EtcdStore(etcdOpts));
}

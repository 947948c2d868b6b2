// The one revisioned key/value core each store (etcd, file) implements. Everything the store
// holds — subnet leases, the network config, policies, namespaces, endpoints — is a key under
// the store prefix (`subnets/10.244.3.0-24`, `policies/prod/web`), so the layout of DESIGN.md
// ("Store layout") is the core's key space as it is. Subnet leases (SubnetStore) and the generic
// key/value view (KeyValueStore, src/store/kv.ts) are typed views over it; the kube store maps
// API objects itself and offers the views only.
//
// Revisions follow etcd: every write gets a store-wide revision, a listing says which revision it
// reflects, and a watch started from that revision delivers every later change in order — or
// ends with `resync` (reconnect, compaction, log rotation), after which the consumer lists again.
// Every request has a deadline: a store that does not answer yields a Store/Timeout error.
import { CniCode, WeftError } from '../errors.js';

export interface KvEntry {
  /** Relative to the store prefix. */
  readonly key: string;
  readonly value: string;
  /** Revision of the key's last write; the compare token for a `revision` expectation. */
  readonly revision: bigint;
  /** Who holds the key (etcd: lease id, '0' for none; file store: owner token, '' for none). */
  readonly owner?: string;
  /** When the key lapses (epoch ms), `null` without a TTL, `undefined` when not looked up. */
  readonly expiresAt?: number | null;
}

/** What a conditional write expects to find at the key. */
export type KvExpect =
  | { readonly type: 'absent' }
  | { readonly type: 'revision'; readonly revision: bigint };

export interface KvPutOptions {
  /** Write only if the key is as expected; absent, the write is unconditional. */
  readonly expect?: KvExpect;
  /**
   * The key lapses after this long unless renewed, and gets a fresh owner token (etcd: a new
   * lease). Absent or null: no TTL.
   */
  readonly ttlSeconds?: number | null;
}

export type KvPutResult =
  | { readonly type: 'written'; readonly revision: bigint; readonly owner: string; readonly expiresAt: number | null }
  | { readonly type: 'conflict' };

export type KvEvent =
  | { readonly type: 'put'; readonly entry: KvEntry }
  | { readonly type: 'delete'; readonly key: string; readonly revision: bigint }
  /** Continuity was lost; this is the watch's last event. List again and watch from there. */
  | { readonly type: 'resync'; readonly reason: string };

export type KvWatchState =
  | { readonly type: 'connected' }
  | { readonly type: 'disconnected'; readonly reason: string };

export interface KvWatch {
  close(): Promise<void>;
}

export interface KvCore {
  readonly kind: 'etcd' | 'file';
  /** A human description (endpoints or directory), for logs and errors. */
  readonly where: string;
  get(key: string): Promise<KvEntry | undefined>;
  /** Every live key under `prefix` (ending in '/'), sorted by key, and the revision it reflects. */
  list(prefix: string): Promise<{ readonly revision: bigint; readonly entries: KvEntry[] }>;
  put(key: string, value: string, opts?: KvPutOptions): Promise<KvPutResult>;
  /**
   * Deletes the key; with `expect` only if it is unchanged since that revision (or, with
   * `owner`, still held by that owner). True if something was deleted.
   */
  delete(key: string, opts?: { readonly expect?: KvExpect; readonly owner?: string }): Promise<boolean>;
  /** Changes under `prefix` after `afterRevision`, in store order, until closed or `resync`. */
  watch(prefix: string, afterRevision: bigint, onEvent: (ev: KvEvent) => void, onState?: (s: KvWatchState) => void): KvWatch;
  close(): Promise<void>;
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._&:-]*$/;

/**
 * Keys are slash-separated segments of [A-Za-z0-9._-] (plus '&' and ':' for flanneld's
 * dual-stack subnet keys); no empty, dot-led or hidden parts, nothing that could leave the store
 * directory or collide with the file store's temp files.
 */
export function checkKey(key: string): string {
  const parts = key.split('/');
  if (parts.some((p) => !SEGMENT.test(p) || p.includes('.tmp-'))) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid store key ${JSON.stringify(key)}`);
  }
  return key;
}

export function checkPrefix(prefix: string): string {
  if (!prefix.endsWith('/')) throw new WeftError(CniCode.Internal, `list prefix must end in '/': ${JSON.stringify(prefix)}`);
  checkKey(prefix.slice(0, -1));
  return prefix;
}

export function byKey(a: { readonly key: string }, b: { readonly key: string }): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

// The SubnetStore contract both backends (etcd, file) implement. It speaks in raw entries —
// key plus the stored text — so that parsing, and skipping garbage, happens once, in lease.ts.
import type { Cidr } from '../net/ip.js';
import type { KvWatchState } from './core.js';
import type { LeaseManagerOptions, SubnetLeaser } from './lease-manager.js';

/** One stored subnet key as the store holds it. */
export interface RawEntry {
  /**
   * The subnet, parsed from the key (entries whose key is not a subnet are never returned): the
   * IPv4 subnet of a dual-stack key, the IPv6 one of an IPv6-only key.
   */
  readonly subnet: Cidr;
  /** The entry's IPv6 subnet, when its key has one (see leaseKey in src/net/ip.ts). */
  readonly ipv6Subnet?: Cidr | undefined;
  /** The stored value, unparsed (may be garbage). */
  readonly value: string;
  /** Store revision of the last write to this key; the compare token for replaceLease. */
  readonly revision: bigint;
  /**
   * When the entry lapses: epoch ms, `null` for a reservation (no TTL), or `undefined` when the
   * store did not look it up (etcd only resolves TTLs when asked; see listSubnets).
   */
  readonly expiresAt?: number | null;
  /**
   * Who holds the entry, where the store knows: the token a HeldEntry of it carries (etcd: the
   * lease id, '0' for none; file store: the writer's token, '' for none). A holder that sees its
   * key written under another owner has been taken over.
   */
  readonly owner?: string;
}

/** A lease this process holds: enough to renew it and to know whether it is still ours. */
export interface HeldEntry {
  readonly subnet: Cidr;
  readonly ipv6Subnet?: Cidr | undefined;
  readonly value: string;
  readonly revision: bigint;
  /** etcd lease id, or the file store's owner token. Empty for a reservation. */
  readonly token: string;
  readonly ttlSeconds: number | null;
  readonly expiresAt: number | null;
}

export type WriteResult =
  | { readonly type: 'written'; readonly held: HeldEntry }
  | { readonly type: 'conflict' };

export type RenewResult =
  | { readonly type: 'renewed'; readonly held: HeldEntry }
  /** The key is gone or now belongs to someone else. */
  | { readonly type: 'lost'; readonly reason: string };

/** Changes seen by a raw watch, in store order. */
export type StoreEvent =
  | { readonly type: 'put'; readonly entry: RawEntry }
  | { readonly type: 'delete'; readonly subnet: Cidr; readonly revision: bigint }
  /**
   * Continuity was lost (reconnect, compaction, log rotation). This is the watch's last event:
   * the consumer lists again and starts a new watch from the listing's revision.
   */
  | { readonly type: 'resync'; readonly reason: string };

/** A subnet watch's connection, as the core's watch reports it. */
export type WatchState = KvWatchState;

export interface RawWatch {
  /**
   * How a node gets its own lease, where the store decides it (kube: the Node's podCIDR);
   * absent, the node picks a free subnet and writes it (LeaseManager).
   */
  createLeaser?(opts: LeaseManagerOptions): SubnetLeaser;

  /** A cheap request proving the store answers (the repair pass); absent, getConfig serves. */
  probe?(): Promise<void>;

  close(): Promise<void>;
}

export interface ListOptions {
  /** Resolve each entry's expiry (costs one round trip per etcd lease). */
  readonly withExpiry?: boolean;
}

export interface SubnetStore {
  readonly kind: 'etcd' | 'file' | 'kube';
  /** A human description (endpoints or directory), for logs and errors. */
  readonly where: string;

  getConfig(): Promise<string | undefined>;
  putConfig(text: string): Promise<void>;

  /** Every subnet entry that is currently live, and the revision the listing reflects. */
  listSubnets(opts?: ListOptions): Promise<{ readonly revision: bigint; readonly entries: RawEntry[] }>;
  getSubnet(subnet: Cidr): Promise<RawEntry | undefined>;

  /**
   * Writes a subnet entry if the key is as expected: absent (put-if-absent: no entry holds
   * `subnet`, under whatever key), or unchanged since `revision` (taking over our own previous
   * lease). ttlSeconds null makes a reservation. With `ipv6Subnet` the key is the dual-stack one
   * (leaseKey); the IPv6 half is not checked for overlaps here, that is the allocator's job, as
   * in flanneld.
   */
  writeSubnet(
    subnet: Cidr,
    value: string,
    ttlSeconds: number | null,
    expect: { readonly type: 'absent' } | { readonly type: 'revision'; readonly revision: bigint },
    ipv6Subnet?: Cidr,
  ): Promise<WriteResult>;

  /**
   * Many put-if-absent writes at once (a bulk loader, a benchmark filling the store): one verdict
   * per item, in the items' order; a key already taken is a conflict and stays as it was.
   */
  writeSubnetsIfAbsent(items: readonly { readonly subnet: Cidr; readonly value: string }[], ttlSeconds: number | null): Promise<WriteResult[]>;

  /** Extends a held lease's TTL, checking the key still carries it. */
  renewSubnet(held: HeldEntry): Promise<RenewResult>;

  /** Deletes the entry if it is still the one held (used on shutdown). */
  releaseSubnet(held: HeldEntry): Promise<boolean>;

  /** Deletes whatever entry is at the subnet (operator action). True if one existed. */
  deleteSubnet(subnet: Cidr): Promise<boolean>;

  /**
   * Streams changes after `afterRevision`, in order, until closed or until it ends with a
   * `resync` event.
   */
  watchSubnets(
    afterRevision: bigint,
    onEvent: (ev: StoreEvent) => void,
    onState?: (s: WatchState) => void,
  ): RawWatch;

  /**
   * How a node gets its own lease, where the store decides it (kube: the Node's podCIDR);
   * absent, the node picks a free subnet and writes it (LeaseManager).
   */
  createLeaser?(opts: LeaseManagerOptions): SubnetLeaser;

  /** A cheap request proving the store answers (the repair pass); absent, getConfig serves. */
  probe?(): Promise<void>;

  close(): Promise<void>;
}

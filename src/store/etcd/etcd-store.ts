// The etcd v3 store through the etcd3 client: the revisioned key/value core (src/store/core.ts)
// and the SubnetStore view over it, one client, one deadline (requestTimeoutMs) on every request.
// A lease is a put-if-absent transaction (create revision 0) bound to an etcd lease; renewal is
// one keep-alive plus a check that the key still carries our lease, so a removed key is noticed,
// not just a lapsed etcd lease.
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions, type IKeyValue, type Watcher } from 'etcd3';
import { CniCode, WeftError } from '../../errors.js';
import { mapLimit } from '../../map-limit.js';
import { type Cidr, formatCidr, leaseKey, parseLeaseKey, subnetKey } from '../../net/ip.js';
import { storeReconnectBackoff } from '../reconnect.js';
import { describeEtcdError } from './errors.js';
import type {
  HeldEntry, ListOptions, RawEntry, RawWatch, RenewResult, StoreEvent, SubnetStore, WatchState, WriteResult,
} from '../types.js';
import { withTimeout } from '../../timeout.js';
import {
  type KvCore, type KvEntry, type KvEvent, type KvExpect, type KvPutOptions, type KvPutResult, type KvWatch, type KvWatchState,
  byKey, checkKey, checkPrefix,
} from '../core.js';

export interface EtcdStoreOptions {
  readonly endpoints: readonly string[];
  readonly prefix: string;
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly username?: string;
  readonly password?: string;
  /** Deadline for each request, so an etcd without quorum yields an error instead of a hang. */
  readonly requestTimeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 3000;
/** etcd's default --max-txn-ops is 128: a transaction may hold that many compares and puts. */
const ETCD_TXN_KEYS = 128;
/** Bulk writes: transactions committed concurrently (see writeSubnetsIfAbsent). */
const BULK_TXNS_IN_FLIGHT = 8;


type WatchBackoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

/**
 * The client's watch manager reconnects every watch stream at the store-wide pace
 * (storeReconnectBackoff) instead of its default, which grows to 30 s: a watch would lag a
 * recovered cluster by up to that much. It asks the initial object for a fresh sequence after
 * each success, and each step for the next.
 */
function watchBackoff(): WatchBackoff {
  const b = storeReconnectBackoff();
  const step = (): WatchBackoff => ({ duration: b.next(), next: step });
  return { duration: 0, next: () => { b.reset(); return step(); } };
}

function clientOptions(o: EtcdStoreOptions): IOptions {
  const opts: IOptions = {
    hosts: [...o.endpoints],
    dialTimeout: o.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS,
    faultHandling: { watchBackoff: watchBackoff() },
  };
  if (o.caFile !== undefined) {
    const credentials: NonNullable<IOptions['credentials']> = { rootCertificate: readFileSync(o.caFile) };
    if (o.keyFile !== undefined) credentials.privateKey = readFileSync(o.keyFile);
    if (o.certFile !== undefined) credentials.certChain = readFileSync(o.certFile);
    opts.credentials = credentials;
  } else if (o.certFile !== undefined || o.keyFile !== undefined) {
    throw new WeftError(CniCode.InvalidNetworkConfig, '--etcd-certfile/--etcd-keyfile need --etcd-cafile too');
  }
  if (o.username !== undefined) opts.auth = { username: o.username, password: o.password ?? '' };
  return opts;
}

export class EtcdStore implements SubnetStore, KvCore {
  readonly kind = 'etcd' as const;
  readonly where: string;
  readonly client: Etcd3;
  private readonly prefix: string;
  private readonly subnetsPrefix: string;
  private readonly timeoutMs: number;
  private readonly watches = new Set<EtcdWatch>();

  constructor(opts: EtcdStoreOptions) {
    if (opts.endpoints.length === 0) throw new WeftError(CniCode.InvalidNetworkConfig, '--etcd-endpoints is empty');
    this.prefix = opts.prefix.replace(/\/+$/, '');
    this.subnetsPrefix = `${this.prefix}/subnets/`;
    this.where = opts.endpoints.join(',');
    this.timeoutMs = opts.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.client = new Etcd3(clientOptions(opts));
  }

  /** Every request goes through here: a deadline, and errors in plain words naming the store. */
  private run<T>(what: string, p: Promise<T>): Promise<T> {
    return withTimeout(p, this.timeoutMs).catch((err: unknown) => {
      throw new WeftError(err instanceof WeftError ? err.code : CniCode.Store, `etcd ${this.where}: ${what}: ${describeEtcdError(err)}`, '', { cause: err });
    });
  }

  private key(subnet: Cidr): string {
    return this.subnetsPrefix + subnetKey(subnet);
  }

  /** The key a lease of both subnets is stored under (dual-stack: "<IPv4 key>&<IPv6 key>"). */
  private keyOf(s: { readonly subnet: Cidr; readonly ipv6Subnet?: Cidr | undefined }): string {
    return this.subnetsPrefix + leaseKey(s.subnet, s.ipv6Subnet);
  }

  private kvEntry(kv: IKeyValue): KvEntry {
    return { key: kv.key.toString().slice(this.prefix.length + 1), value: kv.value.toString(), revision: BigInt(kv.mod_revision), owner: kv.lease };
  }

  private compare(key: string, expect: KvExpect) {
    return expect.type === 'absent' ? this.client.if(key, 'Create', '==', 0) : this.client.if(key, 'Mod', '==', expect.revision.toString());
  }

  // ---- the key/value core ----

  async get(key: string): Promise<KvEntry | undefined> {
    const res = await this.run(`get ${key}`, this.client.get(`${this.prefix}/${checkKey(key)}`).exec());
    const kv = res.kvs[0];
    return kv ? this.kvEntry(kv) : undefined;
  }

  async list(prefix: string): Promise<{ revision: bigint; entries: KvEntry[] }> {
    const res = await this.run(`list ${prefix}`, this.client.getAll().prefix(`${this.prefix}/${checkPrefix(prefix)}`).exec());
    return { revision: BigInt(res.header.revision), entries: res.kvs.map((kv) => this.kvEntry(kv)).sort(byKey) };
  }

  async put(key: string, value: string, opts: KvPutOptions = {}): Promise<KvPutResult> {
    const full = `${this.prefix}/${checkKey(key)}`;
    const ttl = opts.ttlSeconds ?? null;
    let leaseId = '0';
    if (ttl !== null) {
      const g = await this.run('lease grant', this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttl)), ID: 0 }));
      leaseId = String(g.ID);
    }
    const put = this.client.put(full).value(value);
    if (leaseId !== '0') put.lease(leaseId);
    let revision: bigint;
    try {
      if (opts.expect === undefined) {
        revision = BigInt((await this.run(`put ${key}`, put.exec())).header.revision);
      } else {
        const res = await this.run(opts.expect.type === 'absent' ? `put-if-absent ${key}` : `put-if-revision ${key}`,
          this.compare(full, opts.expect).then(put).commit());
        if (!res.succeeded) {
          if (leaseId !== '0') this.revokeQuietly(leaseId);
          return { type: 'conflict' };
        }
        revision = BigInt(res.header.revision);
      }
    } catch (err) {
      if (leaseId !== '0') this.revokeQuietly(leaseId);
      throw err;
    }
    return { type: 'written', revision, owner: leaseId, expiresAt: ttl === null ? null : Date.now() + ttl * 1000 };
  }

  async delete(key: string, opts: { readonly expect?: KvExpect; readonly owner?: string } = {}): Promise<boolean> {
    const full = `${this.prefix}/${checkKey(key)}`;
    if (opts.expect === undefined && opts.owner === undefined) {
      const r = await this.run(`delete ${key}`, this.client.delete().key(full).exec());
      return Number(r.deleted) > 0;
    }
    if (opts.expect?.type === 'absent') return false;
    let txn = opts.owner !== undefined ? this.client.if(full, 'Lease', '==', opts.owner === '' ? '0' : opts.owner) : undefined;
    if (opts.expect) txn = txn ? txn.and(full, 'Mod', '==', opts.expect.revision.toString()) : this.compare(full, opts.expect);
    // A compare on a missing key's lease (0) or revision (0) could pass; the key must exist too.
    txn = txn!.and(full, 'Create', '>', 0);
    const res = await this.run(`delete ${key}`, txn.then(this.client.delete().key(full)).commit());
    return res.succeeded;
  }

  watch(prefix: string, afterRevision: bigint, onEvent: (ev: KvEvent) => void, onState?: (s: KvWatchState) => void): KvWatch {
    const full = `${this.prefix}/${checkPrefix(prefix)}`;
    const w: EtcdWatch = new EtcdWatch(this.client, full, afterRevision, (kv) => this.kvEntry(kv), onEvent,
      onState ?? (() => {}), () => this.watches.delete(w));
    this.watches.add(w);
    return w;
  }

  // ---- the SubnetStore view ----

  private entryOf(kv: IKeyValue): RawEntry | undefined {
    const subnets = parseLeaseKey(kv.key.toString().slice(this.subnetsPrefix.length));
    if (!subnets) return undefined;
    return { ...subnets, value: kv.value.toString(), revision: BigInt(kv.mod_revision), owner: kv.lease };
  }

  async getConfig(): Promise<string | undefined> {
    const v = await this.run('get config', this.client.get(`${this.prefix}/config`).string());
    return v ?? undefined;
  }

  async putConfig(text: string): Promise<void> {
    await this.run('put config', this.client.put(`${this.prefix}/config`).value(text).exec());
  }

  async listSubnets(opts?: ListOptions): Promise<{ revision: bigint; entries: RawEntry[] }> {
    const res = await this.run('list subnets', this.client.getAll().prefix(this.subnetsPrefix).exec());
    const entries: RawEntry[] = [];
    const leaseOf = new Map<RawEntry, string>();
    for (const kv of res.kvs) {
      const e = this.entryOf(kv);
      if (!e) continue;
      entries.push(e);
      leaseOf.set(e, kv.lease);
    }
    if (opts?.withExpiry) {
      const ttl = new Map<string, number | null>();
      const now = Date.now();
      for (const id of new Set(leaseOf.values())) {
        if (id === '0') { ttl.set(id, null); continue; }
        const r = await this.run('lease ttl', this.client.leaseClient.leaseTimeToLive({ ID: id }));
        ttl.set(id, Number(r.TTL) > 0 ? now + Number(r.TTL) * 1000 : now);
      }
      return {
        revision: BigInt(res.header.revision),
        entries: entries.map((e) => ({ ...e, expiresAt: ttl.get(leaseOf.get(e) ?? '0') ?? null })),
      };
    }
    return { revision: BigInt(res.header.revision), entries };
  }

  async getSubnet(subnet: Cidr): Promise<RawEntry | undefined> {
    const res = await this.run('get subnet', this.client.get(this.key(subnet)).exec());
    const kv = res.kvs[0] ?? (await this.dualStackKv(subnet));
    return kv ? this.entryOf(kv) : undefined;
  }

  /** The dual-stack lease of the subnet ("<key>&<IPv6 key>"), flanneld's or weft's. */
  private async dualStackKv(subnet: Cidr): Promise<IKeyValue | undefined> {
    const res = await this.run('get subnet', this.client.getAll().prefix(`${this.key(subnet)}&`).limit(1).exec());
    return res.kvs.find((kv) => this.entryOf(kv) !== undefined);
  }

  async writeSubnet(
    subnet: Cidr,
    value: string,
    ttlSeconds: number | null,
    expect: { type: 'absent' } | { type: 'revision'; revision: bigint },
    ipv6Subnet?: Cidr,
  ): Promise<WriteResult> {
    const key = this.keyOf({ subnet, ipv6Subnet });
    // A lease holds the subnet under its single-stack key or a dual-stack one (any IPv6 half).
    // etcd's transactions cannot compare a range, so the other keys are looked at before the
    // write, and again after it: of two writers that raced past the first look, the later one
    // (higher create revision) sees the earlier and backs off (flanneld's own put-if-absent is
    // no more exclusive towards our key).
    if (expect.type === 'absent' && (await this.otherHolders(subnet, key)).length > 0) return { type: 'conflict' };
    const r = await this.put(key.slice(this.prefix.length + 1), value, { expect, ttlSeconds });
    if (r.type === 'conflict') return r;
    if (expect.type === 'absent' && (await this.otherHolders(subnet, key)).some((kv) => BigInt(kv.create_revision) < r.revision)) {
      await this.run('back off', this.client.if(key, 'Mod', '==', r.revision.toString()).then(this.client.delete().key(key)).commit());
      if (r.owner !== '0') this.revokeQuietly(r.owner);
      return { type: 'conflict' };
    }
    return { type: 'written', held: { subnet, ...(ipv6Subnet && { ipv6Subnet }), value, revision: r.revision, token: r.owner, ttlSeconds, expiresAt: r.expiresAt } };
  }

  /** Every entry holding `subnet` under a key other than `key`: its plain key and its dual-stack ones. */
  private async otherHolders(subnet: Cidr, key: string): Promise<IKeyValue[]> {
    const plain = this.key(subnet);
    const [single, duals] = await Promise.all([
      this.run('get subnet', this.client.get(plain).exec()),
      this.run('get subnet', this.client.getAll().prefix(`${plain}&`).exec()),
    ]);
    return [...single.kvs, ...duals.kvs].filter((kv) => kv.key.toString() !== key && this.entryOf(kv) !== undefined);
  }

  /**
   * Many put-if-absent writes: one etcd lease shared by all of them (so they lapse together) and
   * one transaction per ETCD_TXN_KEYS keys, up to BULK_TXNS_IN_FLIGHT of them at once. A
   * transaction whose compare fails (some key taken) is retried key by key, so each entry still
   * gets its own verdict. A failure (store unreachable) rejects the whole call; transactions that
   * committed before it stay, as with the sequential writes before. Unlike writeSubnet, flanneld's
   * dual-stack keys are not looked for (a range read per key): bulk loads fill fresh ranges.
   */
  async writeSubnetsIfAbsent(
    items: readonly { readonly subnet: Cidr; readonly value: string }[],
    ttlSeconds: number | null,
  ): Promise<WriteResult[]> {
    if (items.length === 0) return [];
    let leaseId = '0';
    if (ttlSeconds !== null) {
      const g = await this.run('lease grant', this.client.leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlSeconds)), ID: 0 }));
      leaseId = String(g.ID);
    }
    const put = (key: string, value: string) => {
      const p = this.client.put(key).value(value);
      if (leaseId !== '0') p.lease(leaseId);
      return p;
    };
    const chunks: (typeof items)[] = [];
    for (let start = 0; start < items.length; start += ETCD_TXN_KEYS) chunks.push(items.slice(start, start + ETCD_TXN_KEYS));
    // Transactions in flight together: etcd folds concurrent proposals into one raft round and one
    // fsync, so 1000 keys take about as long as two transactions in a row rather than eight.
    const perChunk = await mapLimit(chunks, BULK_TXNS_IN_FLIGHT, async (chunk): Promise<WriteResult[]> => {
      const keys = chunk.map((it) => this.key(it.subnet));
      let txn = this.client.if(keys[0]!, 'Create', '==', 0);
      for (const k of keys.slice(1)) txn = txn.and(k, 'Create', '==', 0);
      const res = await this.run('bulk put-if-absent', txn.then(...chunk.map((it, i) => put(keys[i]!, it.value))).commit());
      const expiresAt = ttlSeconds === null ? null : Date.now() + ttlSeconds * 1000;
      if (res.succeeded) {
        const revision = BigInt(res.header.revision);
        return chunk.map((it) => ({ type: 'written' as const, held: { subnet: it.subnet, value: it.value, revision, token: leaseId, ttlSeconds, expiresAt } }));
      }
      const out: WriteResult[] = [];
      for (const [i, it] of chunk.entries()) {
        const one = await this.run('put-if-absent', this.client.if(keys[i]!, 'Create', '==', 0).then(put(keys[i]!, it.value)).commit());
        if (!one.succeeded) { out.push({ type: 'conflict' }); continue; }
        out.push({ type: 'written', held: { subnet: it.subnet, value: it.value, revision: BigInt(one.header.revision), token: leaseId, ttlSeconds, expiresAt } });
      }
      return out;
    });
    const results = perChunk.flat();
    const anyWritten = results.some((r) => r.type === 'written');
    if (!anyWritten && leaseId !== '0') this.revokeQuietly(leaseId);
    return results;
  }

  private revokeQuietly(id: string): void {
    this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => { /* it lapses by itself */ });
  }

  private async keepAliveOnce(id: string): Promise<number> {
    const stream = await this.client.leaseClient.leaseKeepAlive();
    try {
      const res = await new Promise<{ TTL: string }>((resolve, reject) => {
        stream.on('data', resolve);
        stream.on('error', reject);
        stream.write({ ID: id });
      });
      return Number(res.TTL);
    } finally {
      stream.end();
    }
  }

  async renewSubnet(held: HeldEntry): Promise<RenewResult> {
    const what = formatCidr(held.subnet);
    if (held.token !== '' && held.token !== '0') {
      const ttl = await this.run('lease keep-alive', this.keepAliveOnce(held.token));
      if (ttl <= 0) return { type: 'lost', reason: `etcd lease of ${what} expired before it was renewed` };
      const res = await this.run('get subnet', this.client.get(this.keyOf(held)).exec());
      const kv = res.kvs[0];
      if (!kv) return { type: 'lost', reason: `lease ${what} was removed from the store` };
      if (kv.lease !== held.token) return { type: 'lost', reason: `lease ${what} was taken over by another writer` };
      return { type: 'renewed', held: { ...held, revision: BigInt(kv.mod_revision), expiresAt: Date.now() + ttl * 1000 } };
    }
    const e = await this.getSubnet(held.subnet);
    return e ? { type: 'renewed', held } : { type: 'lost', reason: `reservation ${what} was removed` };
  }

  async releaseSubnet(held: HeldEntry): Promise<boolean> {
    const key = this.keyOf(held);
    const res = await this.run('release', this.client.if(key, 'Lease', '==', held.token === '' ? '0' : held.token)
      .then(this.client.delete().key(key)).commit());
    if (held.token !== '' && held.token !== '0') this.revokeQuietly(held.token);
    return res.succeeded;
  }

  async deleteSubnet(subnet: Cidr): Promise<boolean> {
    const res = await this.run('delete subnet', this.client.delete().key(this.key(subnet)).exec());
    if (Number(res.deleted) > 0) return true;
    const dual = await this.dualStackKv(subnet);
    if (!dual) return false;
    const d = await this.run('delete subnet', this.client.delete().key(dual.key.toString()).exec());
    return Number(d.deleted) > 0;
  }

  watchSubnets(afterRevision: bigint, onEvent: (ev: StoreEvent) => void, onState?: (s: WatchState) => void): RawWatch {
    const rel = this.subnetsPrefix.length - this.prefix.length - 1;
    return this.watch('subnets/', afterRevision, (ev) => {
      if (ev.type === 'resync') { onEvent(ev); return; }
      const subnets = parseLeaseKey((ev.type === 'put' ? ev.entry.key : ev.key).slice(rel));
      if (!subnets) return;
      if (ev.type === 'delete') { onEvent({ type: 'delete', subnet: subnets.subnet, revision: ev.revision }); return; }
      onEvent({ type: 'put', entry: { ...subnets, value: ev.entry.value, revision: ev.entry.revision, ...(ev.entry.owner !== undefined && { owner: ev.entry.owner }) } });
    }, onState);
  }

  async close(): Promise<void> {
    await Promise.all([...this.watches].map((w) => w.close()));
    this.client.close();
  }
}

class EtcdWatch implements KvWatch {
  private readonly watcher: Watcher;
  private closed = false;
  private wasDisconnected = false;

  constructor(
    client: Etcd3,
    prefix: string,
    afterRevision: bigint,
    entryOf: (kv: IKeyValue) => KvEntry,
    private readonly onEvent: (ev: KvEvent) => void,
    onState: (s: KvWatchState) => void,
    private readonly onClose: () => void,
  ) {
    this.watcher = client.watch().prefix(prefix).startRevision((afterRevision + 1n).toString()).watcher();
    this.watcher.on('put', (kv) => {
      if (!this.closed) onEvent({ type: 'put', entry: entryOf(kv) });
    });
    this.watcher.on('delete', (kv) => {
      if (!this.closed) onEvent({ type: 'delete', key: entryOf(kv).key, revision: BigInt(kv.mod_revision) });
    });
    this.watcher.on('connected', () => {
      if (this.closed) return;
      onState({ type: 'connected' });
      // The client resumes from its last revision by itself, but a removal must never be
      // missed, so after any gap the consumer re-lists and diffs anyway.
      if (this.wasDisconnected) this.endWithResync('etcd watch reconnected');
    });
    this.watcher.on('disconnected', (err: Error) => {
      if (this.closed) return;
      this.wasDisconnected = true;
      onState({ type: 'disconnected', reason: describeEtcdError(err) });
    });
    // Cancellation, e.g. the start revision was compacted away.
    this.watcher.on('error', (err: Error) => this.endWithResync(`etcd watch cancelled: ${describeEtcdError(err)}`));
  }

  private endWithResync(reason: string): void {
    if (this.closed) return;
    void this.close();
    this.onEvent({ type: 'resync', reason });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.onClose();
    // While disconnected the client waits for a reconnect to cancel; do not wait with it.
    await withTimeout(this.watcher.cancel(), 1000).catch(() => { /* the stream is gone already */ });
  }
}

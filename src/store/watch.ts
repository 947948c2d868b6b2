// A watch of all leases as the agent needs it: `added`/`removed` events (the node's own lease
// filtered out), garbage values skipped with a warning, and no missed removal: whenever the raw
// stream loses continuity (reconnect, compaction, log rotation) it re-lists and diffs against
// what it holds. Lapsed TTLs the store does not announce (file store) are timed here.
import { type Cidr, cidrEquals, formatCidr, subnetKey } from '../net/ip.js';
import { createLogger, type Logger } from '../log.js';
import { type Lease, parseLease, sameAttrs } from './lease.js';
import { storeReconnectBackoff } from './reconnect.js';
import type { RawEntry, RawWatch, StoreEvent, SubnetStore } from './types.js';

export type LeaseEvent =
  | { readonly type: 'added'; readonly lease: Lease }
  | { readonly type: 'removed'; readonly lease: Lease };

export type WatcherState =
  | { readonly type: 'ready' }
  | { readonly type: 'not-ready'; readonly reason: string };

export interface LeaseWatcherOptions {
  readonly store: SubnetStore;
  readonly onEvent: (ev: LeaseEvent) => void;
  /** The node's own subnet (asked each time: it may change on re-acquire). */
  readonly ownSubnet?: () => Cidr | undefined;
  /** Called when the own lease disappears from the store. */
  readonly onOwnRemoved?: (subnet: Cidr) => void;
  /**
   * Called with every write to the own key the watch delivers (and the own entry of every
   * listing): the node's own renewals, or someone else taking the subnet over — its owner tells.
   */
  readonly onOwnPut?: (entry: RawEntry) => void;
  readonly onState?: (s: WatcherState) => void;
  readonly log?: Logger;
  /** How often lapsed TTLs are checked (file store); default 50 ms. */
  readonly expiryCheckMs?: number;
  /**
   * A listing the caller just made (the lease manager lists every lease to pick its subnet):
   * start() takes it instead of listing again — a second listing of thousands of leases is most
   * of a restart's store time. Any change after its revision still arrives through the watch.
   */
  readonly initialListing?: { readonly revision: bigint; readonly entries: readonly RawEntry[] };
}

export class LeaseWatcher {
  private readonly held = new Map<string, Lease>();
  /** Keys whose value is garbage, so each is warned about once, not on every resync. */
  private readonly garbage = new Map<string, bigint>();
  private raw: RawWatch | undefined;
  private generation = 0;
  private closed = false;
  private resyncing: Promise<void> | undefined;
  private readonly log: Logger;
  private expiryTimer: NodeJS.Timeout | undefined;
  private nextExpiry = Infinity;
  private stateNow: WatcherState = { type: 'not-ready', reason: 'not started' };
  /** Count of re-lists after a lost stream, for tests and metrics. */
  resyncs = 0;

  constructor(private readonly opts: LeaseWatcherOptions) {
    this.log = opts.log ?? createLogger({ component: 'lease-watch' });
  }

  /** Lists once (delivering every lease as `added`) and starts following changes. */
  async start(): Promise<void> {
    const seed = this.opts.initialListing;
    const listing = seed ?? await this.opts.store.listSubnets();
    // A seed may predate the node's own lease write, so its lacking the own key proves nothing;
    // the watch from its revision delivers that write (and a later removal) in order.
    this.applyListing(listing.entries, seed === undefined);
    this.follow(listing.revision);
    this.expiryTimer = setInterval(() => this.checkExpiries(), this.opts.expiryCheckMs ?? 50);
    this.expiryTimer.unref?.();
  }

  get state(): WatcherState {
    return this.stateNow;
  }

  /** The leases currently known (own lease excluded). */
  leases(): Lease[] {
    return [...this.held.values()];
  }

  private setState(s: WatcherState): void {
    if (s.type === this.stateNow.type) { this.stateNow = s; return; }
    this.stateNow = s;
    this.opts.onState?.(s);
  }

  private isOwn(subnet: Cidr): boolean {
    const own = this.opts.ownSubnet?.();
    return own !== undefined && cidrEquals(own, subnet);
  }

  private follow(revision: bigint): void {
    const gen = ++this.generation;
    this.raw = this.opts.store.watchSubnets(
      revision,
      (ev) => { if (gen === this.generation && !this.closed) this.onRaw(ev); },
      (s) => {
        if (gen !== this.generation || this.closed) return;
        this.setState(s.type === 'connected' ? { type: 'ready' } : { type: 'not-ready', reason: s.reason });
      },
    );
    if (this.stateNow.type !== 'ready' && this.opts.store.kind === 'file') this.setState({ type: 'ready' });
  }

  private onRaw(ev: StoreEvent): void {
    switch (ev.type) {
      case 'put': this.upsert(ev.entry); break;
      case 'delete': this.remove(subnetKey(ev.subnet)); break;
      case 'resync': this.startResync(ev.reason); break;
    }
  }

  private upsert(entry: RawEntry): void {
    const key = subnetKey(entry.subnet);
    if (this.isOwn(entry.subnet)) {
      this.opts.onOwnPut?.(entry);
      return;
    }
    const parsed = parseLease(entry);
    if (!parsed.ok) {
      const warned = this.garbage.get(key) === entry.revision;
      // Whatever was valid at this key before is no longer what the store says. remove() forgets
      // the key's garbage mark (the key may be gone), so the mark is set after it.
      this.remove(key);
      this.garbage.set(key, entry.revision);
      if (!warned) this.log.warn('skipping unreadable lease in the store', { subnet: formatCidr(entry.subnet), reason: parsed.reason });
      return;
    }
    this.garbage.delete(key);
    const before = this.held.get(key);
    this.held.set(key, parsed.lease);
    if (typeof parsed.lease.expiresAt === 'number') this.nextExpiry = Math.min(this.nextExpiry, parsed.lease.expiresAt);
    // A lease of the same IPv4 subnet may come back with another IPv6 one (re-created dual-stack).
    const was6 = before?.ipv6Subnet;
    const now6 = parsed.lease.ipv6Subnet;
    const sameV6 = was6 === undefined ? now6 === undefined : now6 !== undefined && cidrEquals(was6, now6);
    if (!before || !sameV6 || !sameAttrs(before.attrs, parsed.lease.attrs)) this.opts.onEvent({ type: 'added', lease: parsed.lease });
  }

  private remove(key: string): void {
    this.garbage.delete(key);
    const own = this.opts.ownSubnet?.();
    if (own && subnetKey(own) === key) { this.opts.onOwnRemoved?.(own); return; }
    const before = this.held.get(key);
    if (!before) return;
    this.held.delete(key);
    this.opts.onEvent({ type: 'removed', lease: before });
  }

  /** Brings `held` in line with a full listing, emitting the difference. */
  private applyListing(entries: readonly RawEntry[], checkOwn = true): void {
    const seen = new Set<string>();
    for (const e of entries) {
      seen.add(subnetKey(e.subnet));
      this.upsert(e);
    }
    for (const key of [...this.held.keys()]) if (!seen.has(key)) this.remove(key);
    if (!checkOwn) return;
    const own = this.opts.ownSubnet?.();
    if (own && !seen.has(subnetKey(own))) this.opts.onOwnRemoved?.(own);
  }

  private startResync(reason: string): void {
    if (this.resyncing || this.closed) return;
    this.log.info('lease watch lost continuity; re-listing', { reason });
    this.resyncs++;
    this.generation++;
    this.raw = undefined;
    this.resyncing = this.resyncLoop().finally(() => { this.resyncing = undefined; });
  }

  private async resyncLoop(): Promise<void> {
    const backoff = storeReconnectBackoff();
    while (!this.closed) {
      try {
        const listing = await this.opts.store.listSubnets();
        if (this.closed) return;
        this.applyListing(listing.entries);
        this.follow(listing.revision);
        return;
      } catch (err) {
        this.setState({ type: 'not-ready', reason: `re-listing leases failed: ${err instanceof Error ? err.message : String(err)}` });
        await new Promise((r) => setTimeout(r, backoff.next()));
      }
    }
  }

  private checkExpiries(): void {
    const now = Date.now();
    if (now < this.nextExpiry || this.closed) return;
    let next = Infinity;
    const due: Lease[] = [];
    for (const lease of this.held.values()) {
      if (typeof lease.expiresAt !== 'number') continue;
      if (lease.expiresAt <= now) due.push(lease);
      else next = Math.min(next, lease.expiresAt);
    }
    this.nextExpiry = next;
    for (const lease of due) {
      const gen = this.generation;
      // Confirm with the store: the renewal's put may simply not have reached us yet.
      this.opts.store.getSubnet(lease.subnet).then((entry) => {
        if (gen !== this.generation || this.closed) return;
        const key = subnetKey(lease.subnet);
        if (this.held.get(key) !== lease) return;
        if (entry) this.upsert(entry);
        else this.remove(key);
      }, () => { this.nextExpiry = Math.min(this.nextExpiry, Date.now() + 500); });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.generation++;
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    await this.raw?.close();
    this.raw = undefined;
  }
}

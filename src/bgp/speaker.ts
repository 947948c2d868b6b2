// The BGP speaker: sessions to the configured neighbours, a listener for their connections, the
// RIBs, and the plumbing between them — received UPDATEs go through the decision process, changed
// best routes go out to every other neighbour (batched per shared attributes) and to the
// application as events it can turn into kernel routes.
import * as net from 'node:net';
import { z } from 'zod';
import { type Cidr, type IP, cidrContains, formatCidr, formatIP, ipEquals, networkOf, parseCidr, parseIPv4 } from '../net/ip.js';
import { CniCode, WeftError } from '../errors.js';
import { type Logger, createLogger } from '../log.js';
import { type Clock, type TimerHandle, systemClock } from '../clock.js';
import { type CodecContext, type PathAttributes, type UpdateMessage, encodeEndOfRib, encodeRouteRefresh, isEndOfRib, packAnnouncements, packWithdrawals } from './codec.js';
import { BGP_PORT, Origin } from './constants.js';
import { DEFAULT_TIMERS, type DownReason, type FsmStateName } from './fsm.js';
import { AddressSet, type ImportPolicy, type ImportRejection, checkImport, describeRejection } from './policy.js';
import { type BestChange, type PeerInfo, type RefusedRoute, Rib, type Route, attributesKey } from './rib.js';
import { type Negotiated, Session } from './session.js';

// ---------------------------------------------------------------- configuration (parsed at the edge)

const asnSchema = z.number().int().min(1).max(0xffffffff);
const ipv4Schema = z.string().refine((s) => { try { parseIPv4(s); return true; } catch { return false; } }, 'must be an IPv4 address');

export const peerSchema = z.object({
  address: ipv4Schema,
  asn: asnSchema,
  port: z.number().int().min(1).max(65535).optional(),
  passive: z.boolean().optional(),
  rrClient: z.boolean().optional(),
  localAddress: ipv4Schema.optional(),
}).strict();

export type PeerConfigInput = z.input<typeof peerSchema>;

export const speakerConfigSchema = z.object({
  asn: asnSchema,
  routerId: ipv4Schema,
  listen: z.union([z.literal(false), z.object({ address: z.string().default('0.0.0.0'), port: z.number().int().min(0).max(65535).default(BGP_PORT) })]).default({ address: '0.0.0.0', port: BGP_PORT }),
  peers: z.array(peerSchema).default([]),
  holdTime: z.number().int().refine((h) => h === 0 || (h >= 3 && h <= 65535), 'hold time must be 0 or 3..65535 seconds').default(90),
  connectRetrySeconds: z.number().positive().default(DEFAULT_TIMERS.connectRetrySeconds),
  gracefulRestart: z.object({
    restartTime: z.number().int().min(1).max(4095),
    /** Set when this speaker starts again after a restart (the R bit). */
    restarting: z.boolean().default(false),
  }).strict().optional(),
  clusterId: ipv4Schema.optional(),
}).strict();

export type SpeakerConfigInput = z.input<typeof speakerConfigSchema>;
export type SpeakerConfig = z.output<typeof speakerConfigSchema>;

function parseWith<T extends z.ZodTypeAny>(schema: T, input: unknown, what: string): z.output<T> {
  const r = schema.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid ${what} at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  return r.data as z.output<T>;
}

export function parseSpeakerConfig(input: unknown): SpeakerConfig {
  return parseWith(speakerConfigSchema, input, 'BGP config');
}

// ---------------------------------------------------------------- events and status

export type SpeakerEvent =
  /** A route learned from a peer is now the best for its prefix: program it. */
  | { type: 'route-installed'; prefix: Cidr; nextHop: IP; peer: string; route: Route }
  /** No learned route remains best for the prefix (withdrawn, or our own announcement took over). */
  | { type: 'route-removed'; prefix: Cidr }
  /** The import policy refused a learned route (newly, or for a new reason); it is not used or passed on. */
  | { type: 'route-rejected'; peer: string; prefix: Cidr; rejection: ImportRejection }
  | { type: 'session-state'; peer: string; state: FsmStateName }
  | { type: 'session-established'; peer: string; asn: number; holdTime: number; gracefulRestart: boolean }
  | { type: 'session-down'; peer: string; reason: DownReason; graceful: boolean }
  | { type: 'end-of-rib'; peer: string }
  | { type: 'stale-swept'; peer: string; removed: number };

export interface SessionStatus {
  peer: string;
  asn: number;
  state: FsmStateName;
  /** Seconds since the session reached Established (0 when it is not). */
  uptimeSeconds: number;
  prefixesReceived: number;
  /** Of prefixesReceived, those the import policy refuses. */
  prefixesRejected: number;
  prefixesSent: number;
  staleRoutes: number;
  gracefulRestart: boolean;
  /** UPDATE messages (End-of-RIB included) since the speaker started, across sessions. */
  updatesReceived: number;
  updatesSent: number;
  lastDown?: DownReason | undefined;
}

/** Attributes as advertised to one peer, with their identity for batching and Adj-RIB-Out comparison. */
interface Exported {
  attrs: PathAttributes;
  key: string;
}

interface LocalRoute {
  prefix: Cidr;
  nextHop: IP | undefined;
}

interface PeerState {
  info: PeerInfo;
  session: Session;
  /** What the peer currently holds from us: prefix key → attributes key. */
  adjOut: Map<string, string>;
  /** Changes waiting for the next flush: prefix → attributes, or null for a withdrawal. */
  pending: Map<string, { prefix: Cidr; out: Exported | null }>;
  /** A full table was queued after Established; End-of-RIB follows the flush. */
  owesEndOfRib: boolean;
  negotiated: Negotiated | undefined;
  staleTimer: TimerHandle | undefined;
  /** Graceful restart in progress: stale routes wait for End-of-RIB. */
  awaitingEndOfRib: boolean;
  updatesReceived: number;
  updatesSent: number;
}

export interface SpeakerOptions {
  clock?: Clock;
  logger?: Logger;
  /** Which learned prefixes may be used (see policy.ts); setImportPolicy() changes it later. */
  importPolicy?: ImportPolicy;
}

/** Bound on the memory of what was already logged, so a peer cycling through prefixes cannot grow it forever. */
const LOGGED_ONCE_LIMIT = 10_000;

export class Speaker {
  readonly cfg: SpeakerConfig;
  readonly routerId: IP;
  private readonly rib: Rib;
  private readonly peers = new Map<string, PeerState>();
  private readonly local = new Map<string, LocalRoute>();
  private readonly listeners: ((e: SpeakerEvent) => void)[] = [];
  private server: net.Server | undefined;
  private flushScheduled = false;
  private running = false;
  private readonly clock: Clock;
  private readonly log: Logger;
  /** Export results per (route attributes, peer), so 10,000 prefixes sharing attributes cost one export. */
  private exportCache = new WeakMap<PathAttributes, Map<string, Exported | null>>();
  private importPolicy: ImportPolicy;
  private readonly peerAddresses = new AddressSet();
  /** Refusals and malformed-UPDATE reports already logged: each is logged once, not per UPDATE. */
  private readonly loggedOnce = new Set<string>();

  constructor(config: SpeakerConfigInput, opts: SpeakerOptions = {}) {
    this.cfg = parseSpeakerConfig(config);
    this.routerId = parseIPv4(this.cfg.routerId);
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger ?? createLogger({ component: 'bgp' });
    this.importPolicy = opts.importPolicy ?? {};
    this.rib = new Rib({
      asn: this.cfg.asn, routerId: this.routerId, clusterId: this.cfg.clusterId ? parseIPv4(this.cfg.clusterId) : undefined,
      importCheck: (prefix, attributes) => checkImport(this.importPolicy, this.peerAddresses, prefix, attributes),
    });
    for (const p of this.cfg.peers) this.addPeerState(p);
  }

  private addPeerState(p: z.output<typeof peerSchema>): PeerState {
    const address = parseIPv4(p.address);
    const id = formatIP(address);
    if (this.peers.has(id)) throw new WeftError(CniCode.InvalidNetworkConfig, `BGP peer ${id} is configured twice`);
    const session = new Session({
      localAsn: this.cfg.asn, bgpId: this.routerId, peerAddress: address, peerAsn: p.asn, peerPort: p.port ?? BGP_PORT,
      localAddress: p.localAddress, passive: p.passive ?? false, holdTime: this.cfg.holdTime,
      connectRetrySeconds: this.cfg.connectRetrySeconds, openHoldSeconds: DEFAULT_TIMERS.openHoldSeconds,
      gracefulRestart: this.cfg.gracefulRestart
        ? { restartTime: this.cfg.gracefulRestart.restartTime, restarting: this.cfg.gracefulRestart.restarting } : undefined,
    }, this.clock, this.log.child({ peer: id }));
    const st: PeerState = {
      info: { id, address, asn: p.asn, bgpId: address, rrClient: p.rrClient ?? false },
      session, adjOut: new Map(), pending: new Map(), owesEndOfRib: false, negotiated: undefined, staleTimer: undefined, awaitingEndOfRib: false,
      updatesReceived: 0, updatesSent: 0,
    };
    session.on((e) => {
      switch (e.type) {
        case 'state': this.emit({ type: 'session-state', peer: id, state: e.state }); break;
        case 'established': this.onEstablished(st, e.negotiated); break;
        case 'down': this.onDown(st, e.reason, e.graceful, e.restartTime); break;
        case 'update': this.onUpdate(st, e.update); break;
        case 'route-refresh': this.requeueAll(st, false); break;
      }
    });
    this.peers.set(id, st);
    this.peerAddresses.add(address);
    // A route learned earlier may contain the new peer's address: it must not carry the session.
    this.reimport((r) => cidrContains(r.prefix, address));
    return st;
  }

  /** Adds a neighbour at run time (a host joined the cluster); it connects at once if we are running. */
  addPeer(peer: PeerConfigInput): void {
    const st = this.addPeerState(parseWith(peerSchema, peer, 'BGP peer'));
    if (this.running) st.session.start();
  }

  /** Removes a neighbour: Cease to it, and every route it gave us goes. */
  removePeer(address: string): boolean {
    const st = this.peers.get(formatIP(parseIPv4(address)));
    if (!st) return false;
    st.staleTimer?.cancel();
    st.session.stop();
    st.session.dispose();
    this.peers.delete(st.info.id);
    this.peerAddresses.delete(st.info.address);
    // Routes kept over a graceful restart have no session to be swept by any more.
    this.applyChanges(this.rib.dropPeer(st.info.id));
    this.reimport((r) => r.rejected?.reason === 'contains-peer-address' && ipEquals(r.rejected.peer, st.info.address));
    return true;
  }

  /**
   * Replaces the import policy and applies it to every route already learned: refused routes
   * are withdrawn from the kernel and from the other peers, routes now allowed are taken in.
   */
  setImportPolicy(policy: ImportPolicy): void {
    const key = (p: ImportPolicy): string => JSON.stringify([p.allow?.map(formatCidr), p.protect?.map(formatCidr)]);
    if (key(policy) === key(this.importPolicy)) return;
    this.importPolicy = policy;
    this.reimport();
  }

  private reimport(select?: (r: Route) => boolean): void {
    const refused: RefusedRoute[] = [];
    const changes = this.rib.reimport(select, refused);
    this.reportRefused(refused);
    this.applyChanges(changes);
  }

  private reportRefused(refused: readonly RefusedRoute[]): void {
    for (const r of refused) {
      const why = describeRejection(r.rejection);
      this.logOnce(`${r.peer.id}|${formatCidr(r.prefix)}|${why}`, () =>
        this.log.warn('bgp route refused by the import policy', { peer: r.peer.id, prefix: formatCidr(r.prefix), reason: r.rejection.reason, why }));
      this.emit({ type: 'route-rejected', peer: r.peer.id, prefix: r.prefix, rejection: r.rejection });
    }
  }

  private logOnce(key: string, log: () => void): void {
    if (this.loggedOnce.has(key)) return;
    if (this.loggedOnce.size >= LOGGED_ONCE_LIMIT) this.loggedOnce.clear();
    this.loggedOnce.add(key);
    log();
  }

  on(listener: (e: SpeakerEvent) => void): () => void {
    this.listeners.push(listener);
    return () => { const i = this.listeners.indexOf(listener); if (i >= 0) this.listeners.splice(i, 1); };
  }

  private emit(e: SpeakerEvent): void {
    for (const l of this.listeners) {
      try { l(e); } catch (err) { this.log.error('bgp event listener failed', { err: err instanceof Error ? err.message : String(err) }); }
    }
  }

  // ------------------------------------------------------------ lifecycle

  async start(): Promise<void> {
    if (this.cfg.listen !== false) {
      const { address, port } = this.cfg.listen;
      const server = net.createServer((sock) => this.onIncoming(sock));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address, port }, () => { server.off('error', reject); resolve(); });
      });
      this.server = server;
    }
    this.running = true;
    for (const p of this.peers.values()) p.session.start();
  }

  /** The TCP port actually listened on (useful with port 0). */
  get port(): number | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const p of this.peers.values()) {
      p.staleTimer?.cancel();
      p.session.stop();
    }
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Ends every session as a crash would (no NOTIFICATION), so peers that negotiated graceful
   * restart keep our routes. For an agent that is about to restart.
   */
  async abort(): Promise<void> {
    this.running = false;
    for (const p of this.peers.values()) {
      p.staleTimer?.cancel();
      p.session.dispose();
    }
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onIncoming(sock: net.Socket): void {
    const remote = (sock.remoteAddress ?? '').replace(/^::ffff:/, '');
    const peer = this.peers.get(remote);
    if (!peer) {
      this.log.warn('bgp connection from unconfigured address refused', { remote });
      sock.destroy();
      return;
    }
    peer.session.acceptIncoming(sock);
  }

  // ------------------------------------------------------------ local announcements

  announce(prefix: Cidr | string, nextHop?: IP | string): void {
    const p = networkOf(typeof prefix === 'string' ? parseCidr(prefix) : prefix);
    if (p.ip.family !== 4) throw new WeftError(CniCode.InvalidNetworkConfig, `BGP announces IPv4 prefixes only, got ${formatCidr(p)}`);
    const nh = nextHop === undefined ? undefined : typeof nextHop === 'string' ? parseIPv4(nextHop) : nextHop;
    this.local.set(formatCidr(p), { prefix: p, nextHop: nh });
    const attrs: PathAttributes = { origin: Origin.Igp, asPath: [], nextHop: nh, localPref: 100 };
    this.applyChanges(this.rib.addLocal(p, attrs));
  }

  withdraw(prefix: Cidr | string): void {
    const p = networkOf(typeof prefix === 'string' ? parseCidr(prefix) : prefix);
    if (!this.local.delete(formatCidr(p))) return;
    this.applyChanges(this.rib.removeLocal(p));
  }

  // ------------------------------------------------------------ session events

  private onEstablished(st: PeerState, n: Negotiated): void {
    st.negotiated = n;
    st.info = { ...st.info, bgpId: n.peerOpen.bgpId };
    this.exportCache = new WeakMap();
    st.staleTimer?.cancel();
    st.staleTimer = undefined;
    if (st.awaitingEndOfRib && (!n.gracefulRestart || !n.gracefulRestart.forwardingPreserved)) {
      // RFC 4724 §4.2: the peer did not keep forwarding state; its stale routes are worthless now.
      st.awaitingEndOfRib = false;
      this.applyChanges(this.rib.sweepStale(st.info.id));
    } else if (st.awaitingEndOfRib) {
      // Wait for End-of-RIB, but not forever: the restart time bounds the wait once more.
      st.staleTimer = this.clock.schedule(Math.max(n.gracefulRestart?.restartTime ?? 0, 1) * 1000, () => this.sweep(st));
    }
    this.emit({ type: 'session-established', peer: st.info.id, asn: st.info.asn, holdTime: n.holdTime, gracefulRestart: n.gracefulRestart !== undefined });
    this.requeueAll(st, true);
  }

  private onDown(st: PeerState, reason: DownReason, graceful: boolean, restartTime: number): void {
    st.negotiated = undefined;
    st.adjOut.clear();
    st.pending.clear();
    st.owesEndOfRib = false;
    this.emit({ type: 'session-down', peer: st.info.id, reason, graceful });
    if (graceful && restartTime > 0) {
      const n = this.rib.markStale(st.info.id);
      st.awaitingEndOfRib = n > 0;
      st.staleTimer?.cancel();
      if (n > 0) st.staleTimer = this.clock.schedule(restartTime * 1000, () => this.sweep(st));
      this.log.info('bgp peer restarting, routes kept as stale', { peer: st.info.id, routes: n, restartTime });
      return;
    }
    st.awaitingEndOfRib = false;
    st.staleTimer?.cancel();
    st.staleTimer = undefined;
    this.applyChanges(this.rib.dropPeer(st.info.id));
  }

  private sweep(st: PeerState): void {
    st.staleTimer?.cancel();
    st.staleTimer = undefined;
    st.awaitingEndOfRib = false;
    const changes = this.rib.sweepStale(st.info.id);
    this.emit({ type: 'stale-swept', peer: st.info.id, removed: changes.length });
    this.applyChanges(changes);
  }

  private onUpdate(st: PeerState, u: UpdateMessage): void {
    st.updatesReceived++;
    if (isEndOfRib(u)) {
      this.emit({ type: 'end-of-rib', peer: st.info.id });
      if (st.awaitingEndOfRib) this.sweep(st);
      return;
    }
    for (const e of u.errors ?? []) {
      // RFC 7606: the session stays up; what was done about the attribute is worth one line.
      this.logOnce(`${st.info.id}|${e.action}|${e.message}`, () =>
        this.log.warn('bgp malformed UPDATE handled without a session reset (RFC 7606)', { peer: st.info.id, action: e.action, subcode: e.subcode, error: e.message }));
    }
    const refused: RefusedRoute[] = [];
    const changes = this.rib.applyUpdate(st.info, u.withdrawn, u.attributes, u.nlri, refused);
    this.reportRefused(refused);
    this.applyChanges(changes);
  }

  // ------------------------------------------------------------ propagation

  private applyChanges(changes: BestChange | BestChange[] | undefined): void {
    if (!changes) return;
    const list = Array.isArray(changes) ? changes : [changes];
    if (list.length === 0) return;
    for (const c of list) {
      if (c.type === 'best-changed' && c.route.source.kind === 'peer' && c.route.attributes.nextHop) {
        this.emit({ type: 'route-installed', prefix: c.prefix, nextHop: c.route.attributes.nextHop, peer: c.route.source.peer.id, route: c.route });
      } else if (c.previous?.source.kind === 'peer') {
        this.emit({ type: 'route-removed', prefix: c.prefix });
      }
      for (const st of this.peers.values()) {
        if (!st.negotiated) continue;
        st.pending.set(c.key, { prefix: c.prefix, out: c.type === 'best-changed' ? this.exportAttrs(c.route, st) ?? null : null });
      }
    }
    this.scheduleFlush();
  }

  private exportAttrs(route: Route, st: PeerState): Exported | undefined {
    const n = st.negotiated;
    if (!n) return undefined;
    let perPeer = this.exportCache.get(route.attributes);
    if (!perPeer) this.exportCache.set(route.attributes, (perPeer = new Map()));
    // The source matters to split horizon and reflection, so it is part of the cache key.
    const cacheKey = `${st.info.id}|${route.source.kind === 'peer' ? route.source.peer.id : ''}`;
    const hit = perPeer.get(cacheKey);
    if (hit !== undefined) return hit ?? undefined;
    let attrs = this.rib.exportFor(route, st.info, n.localAddress);
    // Our own routes without an explicit next hop use our address on this session.
    if (attrs && !attrs.nextHop) attrs = { ...attrs, nextHop: n.localAddress };
    const out = attrs ? { attrs, key: attributesKey(attrs) } : null;
    perPeer.set(cacheKey, out);
    return out ?? undefined;
  }

  /**
   * Queues the whole Loc-RIB for a peer: after Established (followed by End-of-RIB, RFC 4724) or
   * when the peer asked with ROUTE-REFRESH (RFC 2918 has no end marker).
   */
  private requeueAll(st: PeerState, endOfRib: boolean): void {
    if (!st.negotiated) return;
    st.adjOut.clear();
    st.pending.clear();
    for (const r of this.rib.bestRoutes()) {
      const e = this.exportAttrs(r, st);
      if (e) st.pending.set(r.key, { prefix: r.prefix, out: e });
    }
    st.owesEndOfRib = endOfRib;
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // One flush per turn of the event loop: a burst of UPDATEs in becomes few, full UPDATEs out.
    setImmediate(() => { this.flushScheduled = false; this.flush(); });
  }

  private flush(): void {
    for (const st of this.peers.values()) {
      if (!st.negotiated || (st.pending.size === 0 && !st.owesEndOfRib)) continue;
      const ctx: CodecContext = st.session.codecContext;
      const withdrawals: Cidr[] = [];
      const groups = new Map<string, { attrs: PathAttributes; prefixes: Cidr[] }>();
      for (const [key, p] of st.pending) {
        if (p.out === null) {
          if (st.adjOut.delete(key)) withdrawals.push(p.prefix);
          continue;
        }
        if (st.adjOut.get(key) === p.out.key) continue;
        st.adjOut.set(key, p.out.key);
        let g = groups.get(p.out.key);
        if (!g) groups.set(p.out.key, (g = { attrs: p.out.attrs, prefixes: [] }));
        g.prefixes.push(p.prefix);
      }
      st.pending.clear();
      const messages: Buffer[] = [...packWithdrawals(withdrawals)];
      for (const g of groups.values()) messages.push(...packAnnouncements(g.attrs, g.prefixes, ctx));
      if (st.owesEndOfRib) { messages.push(encodeEndOfRib()); st.owesEndOfRib = false; }
      if (st.session.sendUpdates(messages)) st.updatesSent += messages.length;
    }
  }

  /** Asks a peer to send its routes again (RFC 2918). */
  requestRefresh(peer: string): boolean {
    const st = this.peers.get(peer);
    if (!st?.negotiated?.routeRefresh) return false;
    return st.session.sendUpdates([encodeRouteRefresh()]);
  }

  // ------------------------------------------------------------ views

  status(): SessionStatus[] {
    const now = this.clock.now();
    return [...this.peers.values()].map((st) => ({
      peer: st.info.id,
      asn: st.info.asn,
      state: st.session.state,
      uptimeSeconds: st.session.establishedAt === undefined ? 0 : Math.floor((now - st.session.establishedAt) / 1000),
      prefixesReceived: this.rib.receivedCount(st.info.id),
      prefixesRejected: this.rib.rejectedCount(st.info.id),
      prefixesSent: st.adjOut.size,
      staleRoutes: this.rib.staleCount(st.info.id),
      gracefulRestart: st.negotiated?.gracefulRestart !== undefined,
      updatesReceived: st.updatesReceived,
      updatesSent: st.updatesSent,
      lastDown: st.session.lastDown,
    }));
  }

  /** Best routes learned from peers: what the kernel should hold. */
  learnedRoutes(): { prefix: string; nextHop: string; peer: string; stale: boolean }[] {
    const out: { prefix: string; nextHop: string; peer: string; stale: boolean }[] = [];
    for (const r of this.rib.bestRoutes()) {
      if (r.source.kind !== 'peer' || !r.attributes.nextHop) continue;
      out.push({ prefix: r.key, nextHop: formatIP(r.attributes.nextHop), peer: r.source.peer.id, stale: r.stale });
    }
    return out;
  }

  get locRibSize(): number {
    return this.rib.size;
  }
}



// The BGP speaker: sessions to the configured neighbours, a listener for their connections, the
// RIBs, and the plumbing between them — received UPDATEs go through the decision process, changed
// best routes go out to every other neighbour (batched per shared attributes) and to the
// application as events it can turn into kernel routes. Routes are IPv4 or IPv6 unicast (RFC
// 4760): each session carries the families both OPENs offered, over TCP on IPv4 or IPv6.
import * as net from 'node:net';
import { z } from 'zod';
import { type Cidr, type IP, cidrContains, formatCidr, formatIP, ipEquals, networkOf, parseCidr, parseIP, parseIPv4, tryParseIP } from '../net/ip.js';
import { CniCode, WeftError } from '../errors.js';
import { type Logger, createLogger } from '../log.js';
import { type Clock, type TimerHandle, systemClock } from '../clock.js';
import {
  type CodecContext, type PathAttributes, type RouteRefreshMessage, type UpdateMessage, announcements, encodeEndOfRib, encodeRouteRefresh,
  nextHopProblem, packAnnouncements, packWithdrawals,
} from './codec.js';
import { BGP_PORT, Origin } from './constants.js';
import { ADDRESS_FAMILIES, type AddressFamily, afiSafiOf, familyOf, familyOfAfiSafi } from './family.js';
import { DEFAULT_TIMERS, type DownReason, type FsmStateName } from './fsm.js';
import { AddressSet, type ImportPolicy, type ImportRejection, checkImport, describeRejection } from './policy.js';
import { type BestChange, type PeerInfo, type RefusedRoute, Rib, type Route, attributesKey } from './rib.js';
import { type Negotiated, Session, socketAddress } from './session.js';

// ---------------------------------------------------------------- configuration (parsed at the edge)

const asnSchema = z.number().int().min(1).max(0xffffffff);
const ipv4Schema = z.string().refine((s) => tryParseIP(s)?.family === 4, 'must be an IPv4 address');
const ipSchema = z.string().refine((s) => tryParseIP(s) !== undefined, 'must be an IPv4 or IPv6 address');
const ipv6NextHopSchema = z.string().refine((s) => {
  const ip = tryParseIP(s);
  return ip?.family === 6 && nextHopProblem(ip) === undefined;
}, 'must be a global IPv6 unicast address');
/** Listed once each, in a fixed order, whatever order the caller wrote them in. */
const familiesSchema = z.array(z.enum(['ipv4', 'ipv6'])).min(1)
  .transform((fs): AddressFamily[] => ADDRESS_FAMILIES.filter((f) => fs.includes(f)));

export const peerSchema = z.object({
  /** IPv4 or IPv6: the TCP session's transport, independent of the families it carries. */
  address: ipSchema,
  asn: asnSchema,
  port: z.number().int().min(1).max(65535).optional(),
  passive: z.boolean().optional(),
  rrClient: z.boolean().optional(),
  localAddress: ipSchema.optional(),
  /** The families offered to this peer; the speaker's `families` when absent. */
  families: familiesSchema.optional(),
  /** Our IPv6 next hop towards this peer, over the speaker's `nextHopV6` and an IPv6 session's own address. */
  nextHopV6: ipv6NextHopSchema.optional(),
}).strict().refine((p) => p.localAddress === undefined || tryParseIP(p.localAddress)?.family === tryParseIP(p.address)?.family, {
  message: 'must be of the same address family as address', path: ['localAddress'],
});

export type PeerConfigInput = z.input<typeof peerSchema>;

export const speakerConfigSchema = z.object({
  asn: asnSchema,
  /** The 32-bit BGP identifier, also on an IPv6-only node: see routerIdFromIPv6(). */
  routerId: z.string().refine((s) => tryParseIP(s)?.family === 4,
    'must be a dotted-quad IPv4 address: the BGP identifier is 32 bits even on an IPv6-only node (routerIdFromIPv6() derives one from an IPv6 address)'),
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
  /** The families offered to every peer (a peer's own `families` overrides). */
  families: familiesSchema.default(['ipv4', 'ipv6']),
  /**
   * Our IPv6 next hop where a session has no IPv6 address of its own (IPv6 routes over an IPv4
   * session) and for our IPv6 announcements that name none.
   */
  nextHopV6: ipv6NextHopSchema.optional(),
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
  | { type: 'session-established'; peer: string; asn: number; holdTime: number; gracefulRestart: boolean; families: AddressFamily[] }
  | { type: 'session-down'; peer: string; reason: DownReason; graceful: boolean }
  /** The peer sent its whole table of `family`; `complete` once every negotiated family has. */
  | { type: 'end-of-rib'; peer: string; family: AddressFamily; complete: boolean }
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
  /** The families negotiated on the session (none when it is not Established). */
  families: AddressFamily[];
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
  /** Our IPv6 next hop configured for this peer. */
  nextHopV6: IP | undefined;
  /** What the peer currently holds from us: prefix key → attributes key. */
  adjOut: Map<string, string>;
  /** Changes waiting for the next flush: prefix → attributes, or null for a withdrawal. */
  pending: Map<string, { prefix: Cidr; out: Exported | null }>;
  /** Families whose full table was queued after Established; their End-of-RIB follows the flush. */
  owesEndOfRib: Set<AddressFamily>;
  negotiated: Negotiated | undefined;
  staleTimer: TimerHandle | undefined;
  /** Graceful restart in progress: the families whose stale routes wait for their End-of-RIB. */
  awaitingEndOfRib: Set<AddressFamily>;
  /** Families whose End-of-RIB arrived on the current session. */
  endOfRibSeen: Set<AddressFamily>;
  updatesReceived: number;
  updatesSent: number;
}

/** formatCidr writes every IPv6 prefix with a colon and no IPv4 one. */
function keyFamily(key: string): AddressFamily {
  return key.includes(':') ? 'ipv6' : 'ipv4';
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
  private readonly nextHopV6: IP | undefined;
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
    this.nextHopV6 = this.cfg.nextHopV6 === undefined ? undefined : parseIP(this.cfg.nextHopV6);
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
    const address = parseIP(p.address);
    const id = formatIP(address);
    if (this.peers.has(id)) throw new WeftError(CniCode.InvalidNetworkConfig, `BGP peer ${id} is configured twice`);
    const session = new Session({
      localAsn: this.cfg.asn, bgpId: this.routerId, peerAddress: address, peerAsn: p.asn, peerPort: p.port ?? BGP_PORT,
      localAddress: p.localAddress, passive: p.passive ?? false, holdTime: this.cfg.holdTime,
      connectRetrySeconds: this.cfg.connectRetrySeconds, openHoldSeconds: DEFAULT_TIMERS.openHoldSeconds,
      gracefulRestart: this.cfg.gracefulRestart
        ? { restartTime: this.cfg.gracefulRestart.restartTime, restarting: this.cfg.gracefulRestart.restarting } : undefined,
      families: p.families ?? this.cfg.families,
    }, this.clock, this.log.child({ peer: id }));
    const st: PeerState = {
      info: { id, address, asn: p.asn, bgpId: address, rrClient: p.rrClient ?? false },
      session, nextHopV6: p.nextHopV6 === undefined ? undefined : parseIP(p.nextHopV6),
      adjOut: new Map(), pending: new Map(), owesEndOfRib: new Set(), negotiated: undefined, staleTimer: undefined,
      awaitingEndOfRib: new Set(), endOfRibSeen: new Set(), updatesReceived: 0, updatesSent: 0,
    };
    session.on((e) => {
      switch (e.type) {
        case 'state': this.emit({ type: 'session-state', peer: id, state: e.state }); break;
        case 'established': this.onEstablished(st, e.negotiated); break;
        case 'down': this.onDown(st, e.reason, e.graceful, e.restartTime); break;
        case 'update': this.onUpdate(st, e.update); break;
        case 'route-refresh': this.onRouteRefresh(st, e.refresh); break;
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
    const st = this.peers.get(formatIP(parseIP(address)));
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
    let remote = sock.remoteAddress ?? '';
    // Peers are keyed by their canonical text; a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    try { remote = formatIP(socketAddress(remote)); } catch { /* not an address: refused below */ }
    const peer = this.peers.get(remote);
    if (!peer) {
      this.log.warn('bgp connection from unconfigured address refused', { remote });
      sock.destroy();
      return;
    }
    peer.session.acceptIncoming(sock);
  }

  // ------------------------------------------------------------ local announcements

  /**
   * Announces a prefix of either family. Without `nextHop`, peers get our address in the
   * prefix's family on their session — for IPv6 over an IPv4 session that is `nextHopV6`, so an
   * IPv6 prefix needs one of: `nextHop`, a `nextHopV6`, or a peer reached over IPv6.
   */
  announce(prefix: Cidr | string, nextHop?: IP | string): void {
    const p = networkOf(typeof prefix === 'string' ? parseCidr(prefix) : prefix);
    const nh = nextHop === undefined ? undefined : typeof nextHop === 'string' ? parseIP(nextHop) : nextHop;
    const bad = (why: string): WeftError => new WeftError(CniCode.InvalidNetworkConfig, `cannot announce ${formatCidr(p)}: ${why}`);
    if (nh && nh.family !== p.ip.family) throw bad(`its next hop ${formatIP(nh)} must be an IPv${p.ip.family} address`);
    if (p.ip.family === 6) {
      const why = nh && nextHopProblem(nh);
      if (nh && why) throw bad(`its next hop ${formatIP(nh)} is ${why}`);
      if (!nh && !this.ipv6NextHopAvailable()) {
        throw bad('no IPv6 next hop: pass one to announce(), set nextHopV6 in the speaker config, or peer over IPv6 (an IPv4 session has no IPv6 address to use)');
      }
    }
    this.local.set(formatCidr(p), { prefix: p, nextHop: nh });
    const attrs: PathAttributes = { origin: Origin.Igp, asPath: [], nextHop: nh, localPref: 100 };
    this.applyChanges(this.rib.addLocal(p, attrs));
  }

  private ipv6NextHopAvailable(): boolean {
    if (this.nextHopV6) return true;
    for (const st of this.peers.values()) if (st.nextHopV6 || st.info.address.family === 6) return true;
    return false;
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
    st.endOfRibSeen.clear();
    this.exportCache = new WeakMap();
    st.staleTimer?.cancel();
    st.staleTimer = undefined;
    const changes: BestChange[] = [];
    for (const f of [...st.awaitingEndOfRib]) {
      // RFC 4724 §4.2: a family whose forwarding state the peer did not keep (or no longer
      // carries) has worthless stale routes; the others wait for their End-of-RIB.
      if (n.gracefulRestart?.forwarding[f]) continue;
      st.awaitingEndOfRib.delete(f);
      changes.push(...this.rib.sweepStale(st.info.id, f));
    }
    // Wait for End-of-RIB, but not forever: the restart time bounds the wait once more.
    if (st.awaitingEndOfRib.size > 0) st.staleTimer = this.clock.schedule(Math.max(n.gracefulRestart?.restartTime ?? 0, 1) * 1000, () => this.sweep(st));
    this.applyChanges(changes);
    this.emit({ type: 'session-established', peer: st.info.id, asn: st.info.asn, holdTime: n.holdTime, gracefulRestart: n.gracefulRestart !== undefined, families: [...n.families] });
    this.requeueAll(st, true);
  }

  private onDown(st: PeerState, reason: DownReason, graceful: boolean, restartTime: number): void {
    const gr = st.negotiated?.gracefulRestart;
    st.negotiated = undefined;
    st.adjOut.clear();
    st.pending.clear();
    st.owesEndOfRib.clear();
    this.emit({ type: 'session-down', peer: st.info.id, reason, graceful });
    if (graceful && restartTime > 0 && gr) {
      // Only the families the peer's restart capability listed are kept; the rest go now.
      const changes: BestChange[] = [];
      let kept = 0;
      for (const f of ADDRESS_FAMILIES) {
        if (gr.forwarding[f] === undefined) { changes.push(...this.rib.dropPeer(st.info.id, f)); st.awaitingEndOfRib.delete(f); continue; }
        const n = this.rib.markStale(st.info.id, f);
        if (n > 0) st.awaitingEndOfRib.add(f);
        kept += n;
      }
      st.staleTimer?.cancel();
      st.staleTimer = st.awaitingEndOfRib.size > 0 ? this.clock.schedule(restartTime * 1000, () => this.sweep(st)) : undefined;
      this.log.info('bgp peer restarting, routes kept as stale', { peer: st.info.id, routes: kept, families: [...st.awaitingEndOfRib], restartTime });
      this.applyChanges(changes);
      return;
    }
    st.awaitingEndOfRib.clear();
    st.staleTimer?.cancel();
    st.staleTimer = undefined;
    this.applyChanges(this.rib.dropPeer(st.info.id));
  }

  /** Drops the peer's stale routes: of one family after its End-of-RIB, of all when the restart time ran out. */
  private sweep(st: PeerState, family?: AddressFamily): void {
    if (family) st.awaitingEndOfRib.delete(family);
    else st.awaitingEndOfRib.clear();
    if (st.awaitingEndOfRib.size === 0) {
      st.staleTimer?.cancel();
      st.staleTimer = undefined;
    }
    const changes = this.rib.sweepStale(st.info.id, family);
    this.emit({ type: 'stale-swept', peer: st.info.id, removed: changes.length });
    this.applyChanges(changes);
  }

  private onUpdate(st: PeerState, u: UpdateMessage): void {
    st.updatesReceived++;
    const families = st.negotiated?.families ?? [];
    if (u.endOfRib) {
      if (!families.includes(u.endOfRib)) return;
      st.endOfRibSeen.add(u.endOfRib);
      this.emit({ type: 'end-of-rib', peer: st.info.id, family: u.endOfRib, complete: families.every((f) => st.endOfRibSeen.has(f)) });
      if (st.awaitingEndOfRib.has(u.endOfRib)) this.sweep(st, u.endOfRib);
      return;
    }
    for (const e of u.errors ?? []) {
      // RFC 7606: the session stays up; what was done about the attribute is worth one line.
      this.logOnce(`${st.info.id}|${e.action}|${e.message}`, () =>
        this.log.warn('bgp malformed UPDATE handled without a session reset (RFC 7606)', { peer: st.info.id, action: e.action, subcode: e.subcode, error: e.message }));
    }
    // RFC 4760 §8: a family is exchanged only when both sides advertised it; anything else is ignored.
    const negotiated = (p: Cidr): boolean => families.includes(familyOf(p));
    const withdrawn = u.withdrawn.filter(negotiated);
    const all = announcements(u);
    const announced = all.filter((a) => families.includes(a.family));
    if (withdrawn.length < u.withdrawn.length || announced.length < all.length) {
      this.logOnce(`${st.info.id}|foreign-family`, () =>
        this.log.warn('bgp UPDATE for an address family not negotiated with the peer ignored', { peer: st.info.id, negotiated: families }));
    }
    const refused: RefusedRoute[] = [];
    const changes = this.rib.applyUpdate(st.info, withdrawn, undefined, [], refused);
    for (const a of announced) changes.push(...this.rib.applyUpdate(st.info, [], a.attributes, a.nlri, refused));
    this.reportRefused(refused);
    this.applyChanges(changes);
  }

  /** ROUTE-REFRESH (RFC 2918) asks for one family's table again. */
  private onRouteRefresh(st: PeerState, refresh: RouteRefreshMessage): void {
    const family = familyOfAfiSafi(refresh.afi, refresh.safi);
    if (family && st.negotiated?.families.includes(family)) this.requeueAll(st, false, family);
    else this.log.warn('bgp ROUTE-REFRESH for an address family not negotiated ignored', { peer: st.info.id, afi: refresh.afi, safi: refresh.safi });
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
      const family = familyOf(c.prefix);
      for (const st of this.peers.values()) {
        if (!st.negotiated?.families.includes(family)) continue;
        st.pending.set(c.key, { prefix: c.prefix, out: c.type === 'best-changed' ? this.exportAttrs(c.route, st) ?? null : null });
      }
    }
    this.scheduleFlush();
  }

  private exportAttrs(route: Route, st: PeerState): Exported | undefined {
    const n = st.negotiated;
    if (!n) return undefined;
    const family = familyOf(route.prefix);
    let perPeer = this.exportCache.get(route.attributes);
    if (!perPeer) this.exportCache.set(route.attributes, (perPeer = new Map()));
    // The source matters to split horizon and reflection, so it is part of the cache key.
    const cacheKey = `${st.info.id}|${route.source.kind === 'peer' ? route.source.peer.id : ''}|${family}`;
    const hit = perPeer.get(cacheKey);
    if (hit !== undefined) return hit ?? undefined;
    const self = this.nextHopSelf(st, family);
    let attrs = this.rib.exportFor(route, st.info, self);
    // eBGP always needs our own next hop; our own routes without an explicit one do too.
    let needsSelf = !this.rib.isIbgp(st.info);
    if (attrs && !attrs.nextHop) {
      needsSelf = true;
      attrs = self ? { ...attrs, nextHop: self } : undefined;
    }
    if (!self && needsSelf) {
      this.logOnce(`${st.info.id}|no-next-hop|${family}`, () => this.log.warn('bgp routes that need our own next hop are not sent to this peer: the session has no address of their family', {
        peer: st.info.id, family, fix: family === 'ipv6' ? 'set nextHopV6 (speaker or peer)' : 'peer over IPv4',
      }));
    }
    const out = attrs?.nextHop && familyOf(attrs.nextHop) === family ? { attrs, key: attributesKey(attrs) } : null;
    perPeer.set(cacheKey, out);
    return out ?? undefined;
  }

  /** Our next hop for `family` towards the peer: the session's own address when it is of that family. */
  private nextHopSelf(st: PeerState, family: AddressFamily): IP | undefined {
    if (family === 'ipv6' && st.nextHopV6) return st.nextHopV6;
    const local = st.negotiated?.localAddress;
    if (local && familyOf(local) === family) return local;
    return family === 'ipv6' ? this.nextHopV6 : undefined;
  }

  /**
   * Queues the whole Loc-RIB for a peer, in every negotiated family or just `only`: after
   * Established (followed by End-of-RIB, RFC 4724) or when the peer asked with ROUTE-REFRESH
   * (RFC 2918 has no end marker).
   */
  private requeueAll(st: PeerState, endOfRib: boolean, only?: AddressFamily): void {
    const families = st.negotiated?.families.filter((f) => !only || f === only) ?? [];
    if (families.length === 0) return;
    for (const k of [...st.adjOut.keys()]) if (families.includes(keyFamily(k))) st.adjOut.delete(k);
    for (const k of [...st.pending.keys()]) if (families.includes(keyFamily(k))) st.pending.delete(k);
    for (const r of this.rib.bestRoutes()) {
      if (!families.includes(familyOf(r.prefix))) continue;
      const e = this.exportAttrs(r, st);
      if (e) st.pending.set(r.key, { prefix: r.prefix, out: e });
    }
    if (endOfRib) for (const f of families) st.owesEndOfRib.add(f);
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
      if (!st.negotiated || (st.pending.size === 0 && st.owesEndOfRib.size === 0)) continue;
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
      for (const f of ADDRESS_FAMILIES) if (st.owesEndOfRib.has(f)) messages.push(encodeEndOfRib(f));
      st.owesEndOfRib.clear();
      if (st.session.sendUpdates(messages)) st.updatesSent += messages.length;
    }
  }

  /** Asks a peer to send its routes again (RFC 2918): of every negotiated family, or just `family`. */
  requestRefresh(peer: string, family?: AddressFamily): boolean {
    const st = this.peers.get(peer);
    if (!st?.negotiated?.routeRefresh) return false;
    const families = st.negotiated.families.filter((f) => !family || f === family);
    if (families.length === 0) return false;
    return st.session.sendUpdates(families.map((f) => { const { afi, safi } = afiSafiOf(f); return encodeRouteRefresh(afi, safi); }));
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
      families: [...(st.negotiated?.families ?? [])],
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



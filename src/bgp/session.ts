// One BGP neighbour: the TCP connections to it (ours and the peer's, each with its own FSM as in
// RFC 4271 §8), collision resolution between them (§6.8), and what both sides negotiated.
// The Session knows nothing of routes; it hands UPDATEs and state changes to its owner.
import * as net from 'node:net';
import { type IP, formatIP, ipCompare, parseIP } from '../net/ip.js';
import type { Logger } from '../log.js';
import type { Clock } from '../clock.js';
import {
  type Capability, type CodecContext, type OpenMessage, type RouteRefreshMessage, type UpdateMessage, MessageFramer,
  capabilitiesOf, decodeMessage, encodeKeepalive, encodeNotification, encodeOpen,
} from './codec.js';
import { BgpError } from './errors.js';
import { ADDRESS_FAMILIES, type AddressFamily, afiSafiOf, familyOfAfiSafi } from './family.js';
import { type DownReason, type FsmAction, type FsmConfig, type FsmEvent, FsmRunner, type FsmStateName } from './fsm.js';

export interface SessionConfig {
  localAsn: number;
  bgpId: IP;
  peerAddress: IP;
  peerAsn: number;
  peerPort: number;
  /** Source address for our outgoing connection (optional). */
  localAddress?: string | undefined;
  passive: boolean;
  holdTime: number;
  connectRetrySeconds: number;
  openHoldSeconds: number;
  /** Our graceful-restart offer; undefined disables RFC 4724 for this session. */
  gracefulRestart?: { restartTime: number; restarting: boolean } | undefined;
  /** The families we offer (one multiprotocol capability each). */
  families: readonly AddressFamily[];
}

export interface Negotiated {
  peerOpen: OpenMessage;
  holdTime: number;
  fourOctetAs: boolean;
  routeRefresh: boolean;
  /** The families both sides offered: the only ones routes are exchanged in. */
  families: AddressFamily[];
  /**
   * Present when both sides offered graceful restart and the peer's capability lists at least
   * one negotiated family. `forwarding` holds exactly the families the peer keeps over its
   * restart, each with its F bit (forwarding state preserved); other families' routes go at once.
   */
  gracefulRestart: { restartTime: number; peerRestarting: boolean; forwarding: Partial<Record<AddressFamily, boolean>> } | undefined;
  /** Our address on the TCP connection (IPv4 or IPv6, whichever carries the session). */
  localAddress: IP;
}

export type SessionEvent =
  | { type: 'established'; negotiated: Negotiated }
  | { type: 'down'; reason: DownReason; graceful: boolean; restartTime: number }
  | { type: 'update'; update: UpdateMessage }
  | { type: 'route-refresh'; refresh: RouteRefreshMessage }
  | { type: 'state'; state: FsmStateName };

const STATE_RANK: Record<FsmStateName, number> = { Idle: 0, Connect: 1, Active: 1, OpenSent: 2, OpenConfirm: 3, Established: 4 };

function ourCapabilities(cfg: SessionConfig): Capability[] {
  const caps: Capability[] = [
    ...cfg.families.map((f): Capability => ({ kind: 'multiprotocol', ...afiSafiOf(f) })),
    { kind: 'route-refresh' },
    { kind: 'four-octet-asn', asn: cfg.localAsn },
  ];
  if (cfg.gracefulRestart) {
    caps.push({
      kind: 'graceful-restart',
      restarting: cfg.gracefulRestart.restarting,
      restartTime: cfg.gracefulRestart.restartTime,
      families: cfg.families.map((f) => ({ ...afiSafiOf(f), forwardingPreserved: true })),
    });
  }
  return caps;
}

/**
 * What the peer's OPEN offers. A peer with no multiprotocol capability at all is a plain BGP-4
 * speaker (RFC 4271), which carries IPv4 unicast; one that sends any offers just what it lists.
 */
export function offeredFamilies(open: OpenMessage): AddressFamily[] {
  const mp = capabilitiesOf(open, 'multiprotocol');
  if (mp.length === 0) return ['ipv4'];
  const offered = new Set(mp.map((c) => familyOfAfiSafi(c.afi, c.safi)));
  return ADDRESS_FAMILIES.filter((f) => offered.has(f));
}

/** A socket's address as an IP: IPv4-mapped addresses as IPv4, without an IPv6 zone. */
export function socketAddress(s: string): IP {
  const bare = s.replace(/%.*$/, '');
  return parseIP(/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(bare) ? bare.slice(7) : bare);
}

/** One TCP connection to the peer and the FSM that governs it. */
class Connection {
  readonly runner: FsmRunner;
  socket: net.Socket | undefined;
  private framer = new MessageFramer();
  ctx: CodecContext = { fourOctetAs: false };
  negotiated: Negotiated | undefined;
  disposed = false;

  constructor(readonly session: Session, readonly direction: 'outbound' | 'inbound', fsmCfg: FsmConfig, clock: Clock) {
    this.runner = new FsmRunner(fsmCfg, clock, (a) => this.perform(a), (from, to, ev) => session.onTransition(this, from, to, ev));
  }

  get state(): FsmStateName {
    return this.runner.state.name;
  }

  dispatch(e: FsmEvent): void {
    if (!this.disposed) this.runner.dispatch(e);
  }

  adopt(socket: net.Socket): void {
    this.socket = socket;
    this.framer = new MessageFramer();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => { if (this.socket === socket) this.onData(chunk); });
    socket.on('error', (err) => this.session.log.debug('bgp socket error', { err: err.message, direction: this.direction }));
    socket.on('close', () => { if (this.socket === socket) this.dispatch({ type: 'TcpConnectionFails' }); });
  }

  write(buf: Buffer): void {
    const s = this.socket;
    if (s && !s.destroyed && s.writable) s.write(buf);
  }

  private perform(a: FsmAction): void {
    switch (a.type) {
      case 'connect': this.connect(); break;
      case 'disconnect': this.closeSocket(); break;
      case 'send-open': this.write(encodeOpen({ asn: this.session.cfg.localAsn, holdTime: this.session.cfg.holdTime, bgpId: this.session.cfg.bgpId, capabilities: ourCapabilities(this.session.cfg) })); break;
      case 'send-keepalive': this.write(encodeKeepalive()); break;
      case 'send-notification': this.write(encodeNotification(a.code, a.subcode, a.data)); break;
      case 'established': this.session.onEstablished(this, a.open, a.holdTime); break;
      case 'down': this.session.onConnectionDown(this, a.reason, a.wasEstablished); break;
      case 'deliver-update': this.session.emit({ type: 'update', update: a.update }); break;
      case 'deliver-route-refresh': this.session.emit({ type: 'route-refresh', refresh: a.refresh }); break;
      case 'timer': break; // the runner owns timers
    }
  }

  private connect(): void {
    this.closeSocket();
    const cfg = this.session.cfg;
    const opts: net.NetConnectOpts = { host: formatIP(cfg.peerAddress), port: cfg.peerPort };
    if (cfg.localAddress) opts.localAddress = cfg.localAddress;
    const socket = net.connect(opts);
    this.adopt(socket);
    socket.once('connect', () => { if (this.socket === socket) this.dispatch({ type: 'TcpConnected' }); });
  }

  private closeSocket(): void {
    const s = this.socket;
    this.socket = undefined;
    if (!s) return;
    // Flush what the FSM just queued (a NOTIFICATION, typically), then make sure the socket dies.
    s.end();
    setTimeout(() => s.destroy(), 1000).unref();
  }

  private onData(chunk: Buffer): void {
    let raw: Buffer[];
    try {
      raw = this.framer.push(chunk);
    } catch (err) {
      if (err instanceof BgpError) { this.dispatch({ type: 'MessageError', error: err }); return; }
      throw err;
    }
    for (const m of raw) {
      if (this.disposed || !this.socket) return;
      const d = decodeMessage(m, this.ctx);
      if (!d.ok) {
        this.session.log.warn('bgp malformed message', { peer: formatIP(this.session.cfg.peerAddress), error: d.error.message });
        this.dispatch({ type: 'MessageError', error: d.error });
        return;
      }
      const msg = d.value;
      switch (msg.type) {
        case 'open':
          this.ctx = { fourOctetAs: capabilitiesOf(msg, 'four-octet-asn').length > 0 };
          this.dispatch({ type: 'OpenReceived', open: msg });
          break;
        case 'keepalive': this.dispatch({ type: 'KeepaliveReceived' }); break;
        case 'update': this.dispatch({ type: 'UpdateReceived', update: msg }); break;
        case 'route-refresh': this.dispatch({ type: 'RouteRefreshReceived', refresh: msg }); break;
        case 'notification':
          this.session.log.info('bgp notification received', { peer: formatIP(this.session.cfg.peerAddress), code: msg.code, subcode: msg.subcode });
          this.dispatch({ type: 'NotificationReceived', notification: msg });
          break;
      }
    }
  }

  dispose(): void {
    this.disposed = true;
    this.runner.dispose();
    this.closeSocket();
  }
}

export class Session {
  /** Our own connection attempt; it lives as long as the session is started and not passive. */
  private outbound: Connection | undefined;
  /** Every live connection: the outbound one and any the peer opened. */
  private readonly conns = new Set<Connection>();
  private established: Connection | undefined;
  private started = false;
  private readonly listeners: ((e: SessionEvent) => void)[] = [];
  private lastState: FsmStateName = 'Idle';
  establishedAt: number | undefined;
  lastDown: DownReason | undefined;

  constructor(readonly cfg: SessionConfig, private readonly clock: Clock, readonly log: Logger) {}

  get peerId(): string {
    return formatIP(this.cfg.peerAddress);
  }

  on(listener: (e: SessionEvent) => void): void {
    this.listeners.push(listener);
  }

  emit(e: SessionEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** The most advanced state among this peer's connections. */
  get state(): FsmStateName {
    let best: FsmStateName = 'Idle';
    for (const c of this.conns) if (STATE_RANK[c.state] > STATE_RANK[best]) best = c.state;
    return best;
  }

  get negotiated(): Negotiated | undefined {
    return this.established?.negotiated;
  }

  private fsmConfig(passive: boolean): FsmConfig {
    return {
      localAsn: this.cfg.localAsn, peerAsn: this.cfg.peerAsn, bgpId: this.cfg.bgpId, holdTime: this.cfg.holdTime,
      passive, connectRetrySeconds: this.cfg.connectRetrySeconds, openHoldSeconds: this.cfg.openHoldSeconds,
    };
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    if (!this.cfg.passive) {
      if (!this.outbound) {
        this.outbound = new Connection(this, 'outbound', this.fsmConfig(false), this.clock);
        this.conns.add(this.outbound);
      }
      this.outbound.dispatch({ type: 'ManualStart' });
    }
  }

  /** Administrative stop: Cease to the peer, no automatic restart. */
  stop(): void {
    this.started = false;
    for (const c of [...this.conns]) c.dispatch({ type: 'ManualStop' });
    for (const c of [...this.conns]) this.retire(c);
    this.reportState();
  }

  /** A connection from the peer's address arrived at the Speaker's listener. */
  acceptIncoming(socket: net.Socket): void {
    if (!this.started) { socket.destroy(); return; }
    const est = this.established;
    if (est?.negotiated?.gracefulRestart) {
      // RFC 4724 §4.2: a new connection from a peer we are Established with means it restarted;
      // the old session ends as if the TCP connection had failed, keeping its routes.
      est.dispatch({ type: 'TcpConnectionFails' });
    }
    // An older incoming connection that never got established is superseded by the new one.
    for (const c of [...this.conns]) if (c.direction === 'inbound' && c !== this.established) this.retire(c);
    const conn = new Connection(this, 'inbound', this.fsmConfig(true), this.clock);
    this.conns.add(conn);
    conn.adopt(socket);
    conn.dispatch({ type: 'ManualStart' });
    conn.dispatch({ type: 'TcpIncoming' });
  }

  private retire(conn: Connection): void {
    conn.dispose();
    this.conns.delete(conn);
    if (this.outbound === conn) this.outbound = undefined;
    if (this.established === conn) this.established = undefined;
  }

  private others(conn: Connection): Connection[] {
    return [...this.conns].filter((c) => c !== conn);
  }

  onTransition(conn: Connection, from: FsmStateName, to: FsmStateName, _ev: FsmEvent): void {
    if (to === 'OpenConfirm') this.resolveCollision(conn);
    if ((to === 'Idle' || to === 'Active') && from !== 'Idle' && conn.direction === 'inbound') {
      // An incoming connection is not retried by us; the peer will connect again.
      queueMicrotask(() => { if (this.conns.has(conn)) this.retire(conn); this.reportState(); });
    }
    this.reportState();
  }

  private reportState(): void {
    const s = this.state;
    if (s !== this.lastState) {
      this.lastState = s;
      this.emit({ type: 'state', state: s });
    }
  }

  /**
   * RFC 4271 §6.8: of two connections that both reached OPEN, keep the one opened by the speaker
   * with the higher BGP identifier. A connection that arrives while another is Established loses.
   */
  private resolveCollision(conn: Connection): void {
    const remoteId = conn.runner.state.peerOpen?.bgpId;
    if (!remoteId) return;
    for (const other of this.others(conn)) {
      if (other.state === 'Established') { conn.dispatch({ type: 'CollisionDump' }); return; }
      if (other.state !== 'OpenSent' && other.state !== 'OpenConfirm') continue;
      const keepInbound = ipCompare(this.cfg.bgpId, remoteId) < 0;
      const keptDirection = keepInbound ? 'inbound' : 'outbound';
      // Two connections in the same direction cannot be told apart by identifier: the newer wins.
      const loser = other.direction === conn.direction ? other : conn.direction === keptDirection ? other : conn;
      this.log.info('bgp connection collision', { peer: this.peerId, keep: keptDirection });
      loser.dispatch({ type: 'CollisionDump' });
      if (loser === conn) return;
    }
  }

  onEstablished(conn: Connection, open: OpenMessage, holdTime: number): void {
    // The outbound FSM idles while another connection carries the session.
    const out = this.outbound;
    if (out && out !== conn && out.state !== 'Established') out.dispatch({ type: 'ManualStop' });
    const offered = new Set(offeredFamilies(open));
    const families = this.cfg.families.filter((f) => offered.has(f));
    const ours = this.cfg.gracefulRestart;
    const theirs = capabilitiesOf(open, 'graceful-restart')[0];
    const forwarding: Partial<Record<AddressFamily, boolean>> = {};
    for (const f of theirs?.families ?? []) {
      const family = familyOfAfiSafi(f.afi, f.safi);
      if (family && families.includes(family)) forwarding[family] = f.forwardingPreserved;
    }
    const localAddress = conn.socket?.localAddress ? socketAddress(conn.socket.localAddress) : this.cfg.bgpId;
    conn.negotiated = {
      peerOpen: open,
      holdTime,
      fourOctetAs: conn.ctx.fourOctetAs,
      routeRefresh: capabilitiesOf(open, 'route-refresh').length > 0,
      families,
      gracefulRestart: ours && theirs && Object.keys(forwarding).length > 0
        ? { restartTime: theirs.restartTime, peerRestarting: theirs.restarting, forwarding }
        : undefined,
      localAddress,
    };
    if (families.length === 0) this.log.warn('bgp session shares no address family with the peer', { peer: this.peerId, ours: this.cfg.families, theirs: [...offered] });
    this.established = conn;
    this.establishedAt = this.clock.now();
    this.log.info('bgp session established', { peer: this.peerId, holdTime, direction: conn.direction, families });
    this.emit({ type: 'established', negotiated: conn.negotiated });
  }

  onConnectionDown(conn: Connection, reason: DownReason, wasEstablished: boolean): void {
    this.lastDown = reason;
    if (!wasEstablished || this.established !== conn) return;
    const gr = conn.negotiated?.gracefulRestart;
    // RFC 4724: only a silent loss of the connection is graceful; a NOTIFICATION ends the session for good.
    const graceful = gr !== undefined && reason.kind === 'connection-lost';
    this.established = undefined;
    this.establishedAt = undefined;
    this.log.info('bgp session down', { peer: this.peerId, reason, graceful });
    this.emit({ type: 'down', reason, graceful, restartTime: gr?.restartTime ?? 0 });
    if (this.started && !this.cfg.passive && this.outbound && this.outbound !== conn && !this.outbound.runner.state.started) {
      this.outbound.dispatch({ type: 'ManualStart' });
    }
  }

  /** Writes pre-encoded UPDATEs on the established connection; false when there is none. */
  sendUpdates(messages: readonly Buffer[]): boolean {
    const conn = this.established;
    if (!conn || conn.state !== 'Established') return false;
    for (const m of messages) conn.write(m);
    if (messages.length > 0) conn.dispatch({ type: 'UpdateSent' });
    return true;
  }

  get codecContext(): CodecContext {
    return this.established?.ctx ?? { fourOctetAs: false };
  }

  dispose(): void {
    this.started = false;
    for (const c of [...this.conns]) this.retire(c);
  }
}

// The RFC 4271 §8 finite state machine for one BGP connection, as a pure function from (state,
// event) to (state, actions). Everything with side effects — sockets, timers, events to the
// application — is an action the caller carries out, which is what lets the tests drive the FSM
// through every transition with a fake clock and no network.
import { type IP, ipEquals } from '../net/ip.js';
import type { Clock, TimerHandle } from '../clock.js';
import type { NotificationMessage, OpenMessage, RouteRefreshMessage, UpdateMessage } from './codec.js';
import { AS_TRANS, CeaseSubcode, ErrorCode, FsmSubcode, OpenSubcode } from './constants.js';
import type { BgpError } from './errors.js';

export type FsmStateName = 'Idle' | 'Connect' | 'Active' | 'OpenSent' | 'OpenConfirm' | 'Established';

export interface FsmConfig {
  localAsn: number;
  /** The AS the peer must announce in its OPEN. */
  peerAsn: number;
  bgpId: IP;
  /** Our proposed hold time (0 or ≥ 3 seconds). */
  holdTime: number;
  /** Passive connections wait in Active for the peer to connect instead of connecting out. */
  passive: boolean;
  connectRetrySeconds: number;
  /** RFC 4271 suggests 4 minutes for the hold timer while waiting for the peer's OPEN. */
  openHoldSeconds: number;
}

export const DEFAULT_TIMERS = { connectRetrySeconds: 120, openHoldSeconds: 240 } as const;

export interface FsmState {
  name: FsmStateName;
  /** False after ManualStop: no automatic restart until the next ManualStart. */
  started: boolean;
  connectRetryCounter: number;
  /** Negotiated hold time once an OPEN was accepted (0 = no keepalives, no hold timer). */
  holdTime: number;
  keepaliveTime: number;
  peerOpen: OpenMessage | undefined;
}

export const initialFsmState: FsmState = {
  name: 'Idle', started: false, connectRetryCounter: 0, holdTime: 0, keepaliveTime: 0, peerOpen: undefined,
};

export type FsmEvent =
  | { type: 'ManualStart' }
  | { type: 'ManualStop' }
  | { type: 'ConnectRetryTimerExpires' }
  | { type: 'HoldTimerExpires' }
  | { type: 'KeepaliveTimerExpires' }
  /** Our outgoing connection completed. */
  | { type: 'TcpConnected' }
  /** The peer connected to us and the connection was handed to this FSM. */
  | { type: 'TcpIncoming' }
  | { type: 'TcpConnectionFails' }
  | { type: 'OpenReceived'; open: OpenMessage }
  | { type: 'KeepaliveReceived' }
  | { type: 'UpdateReceived'; update: UpdateMessage }
  | { type: 'RouteRefreshReceived'; refresh: RouteRefreshMessage }
  | { type: 'NotificationReceived'; notification: NotificationMessage }
  /** A received message failed to decode; the error names the NOTIFICATION to send. */
  | { type: 'MessageError'; error: BgpError }
  /** Collision resolution (RFC 4271 §6.8) chose the other connection. */
  | { type: 'CollisionDump' }
  /** We sent an UPDATE, which counts as a keepalive for the peer's hold timer. */
  | { type: 'UpdateSent' };

export type TimerName = 'connectRetry' | 'hold' | 'keepalive';

export type DownReason =
  | { kind: 'stopped' }
  | { kind: 'notification-sent'; code: number; subcode: number; message: string }
  | { kind: 'notification-received'; code: number; subcode: number }
  | { kind: 'connection-lost' }
  | { kind: 'collision' };

export type FsmAction =
  | { type: 'connect' }
  | { type: 'disconnect' }
  | { type: 'send-open' }
  | { type: 'send-keepalive' }
  | { type: 'send-notification'; code: number; subcode: number; data: Buffer }
  /** Start (or restart) a timer; 0 seconds stops it. */
  | { type: 'timer'; timer: TimerName; seconds: number }
  | { type: 'established'; open: OpenMessage; holdTime: number }
  /** The connection left a synchronised state; wasEstablished says whether routes were exchanged. */
  | { type: 'down'; reason: DownReason; wasEstablished: boolean }
  | { type: 'deliver-update'; update: UpdateMessage }
  | { type: 'deliver-route-refresh'; refresh: RouteRefreshMessage };

export interface FsmResult {
  state: FsmState;
  actions: FsmAction[];
}

/** RFC 4271 §4.2: the smaller of the two proposals; 0 on either side turns keepalives off. */
export function negotiateHoldTime(local: number, peer: number): number {
  return Math.min(local, peer);
}

const stopAll: FsmAction[] = [
  { type: 'timer', timer: 'connectRetry', seconds: 0 },
  { type: 'timer', timer: 'hold', seconds: 0 },
  { type: 'timer', timer: 'keepalive', seconds: 0 },
];

/** Checks a received OPEN against what we expect of this peer; returns the NOTIFICATION to send if it is unacceptable. */
export function checkOpen(cfg: FsmConfig, open: OpenMessage): { code: number; subcode: number; data: Buffer; message: string } | undefined {
  if (open.asn !== cfg.peerAsn) {
    // The AS as the peer sent it: 4 octets from a speaker that announced the 4-octet capability.
    const four = open.capabilities.some((c) => c.kind === 'four-octet-asn');
    const data = Buffer.alloc(four ? 4 : 2);
    if (four) data.writeUInt32BE(open.asn);
    else data.writeUInt16BE(open.asn > 0xffff ? AS_TRANS : open.asn);
    return { code: ErrorCode.Open, subcode: OpenSubcode.BadPeerAs, data, message: `peer announced AS ${open.asn}, expected ${cfg.peerAsn}` };
  }
  // RFC 6286: the identifier must differ from ours inside one AS.
  if (cfg.localAsn === cfg.peerAsn && ipEquals(open.bgpId, cfg.bgpId)) {
    return { code: ErrorCode.Open, subcode: OpenSubcode.BadBgpIdentifier, data: Buffer.alloc(0), message: 'peer uses our own BGP identifier' };
  }
  if (open.holdTime !== 0 && open.holdTime < 3) {
    const data = Buffer.alloc(2);
    data.writeUInt16BE(open.holdTime);
    return { code: ErrorCode.Open, subcode: OpenSubcode.UnacceptableHoldTime, data, message: `hold time ${open.holdTime}` };
  }
  return undefined;
}

/**
 * Leaves for Idle after a failure. A started FSM keeps the ConnectRetry timer running in Idle and
 * treats its expiry as the automatic start event, which damps reconnect storms to one try per period.
 */
function toIdle(s: FsmState, cfg: FsmConfig, pre: FsmAction[], reason: DownReason): FsmResult {
  const wasEstablished = s.name === 'Established';
  const actions: FsmAction[] = [...pre, { type: 'disconnect' }, ...stopAll];
  if (s.started) actions.push({ type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds });
  if (s.name === 'OpenSent' || s.name === 'OpenConfirm' || s.name === 'Established') {
    actions.push({ type: 'down', reason, wasEstablished });
  }
  return {
    state: { ...s, name: 'Idle', connectRetryCounter: s.connectRetryCounter + 1, holdTime: 0, keepaliveTime: 0, peerOpen: undefined },
    actions,
  };
}

function notifyAndIdle(s: FsmState, cfg: FsmConfig, code: number, subcode: number, message: string, data: Buffer = Buffer.alloc(0)): FsmResult {
  return toIdle(s, cfg, [{ type: 'send-notification', code, subcode, data }], { kind: 'notification-sent', code, subcode, message });
}

function fsmError(s: FsmState, cfg: FsmConfig, event: FsmEvent): FsmResult {
  const sub = s.name === 'OpenSent' ? FsmSubcode.UnexpectedInOpenSent
    : s.name === 'OpenConfirm' ? FsmSubcode.UnexpectedInOpenConfirm
      : s.name === 'Established' ? FsmSubcode.UnexpectedInEstablished : FsmSubcode.Unspecified;
  return notifyAndIdle(s, cfg, ErrorCode.Fsm, sub, `unexpected ${event.type} in ${s.name}`);
}

function openSent(s: FsmState, cfg: FsmConfig, extra: FsmAction[]): FsmResult {
  return {
    state: { ...s, name: 'OpenSent' },
    actions: [...extra, { type: 'timer', timer: 'connectRetry', seconds: 0 }, { type: 'send-open' }, { type: 'timer', timer: 'hold', seconds: cfg.openHoldSeconds }],
  };
}

function start(s: FsmState, cfg: FsmConfig): FsmResult {
  const st: FsmState = { ...s, started: true };
  if (cfg.passive) {
    return { state: { ...st, name: 'Active' }, actions: [{ type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds }] };
  }
  return {
    state: { ...st, name: 'Connect' },
    actions: [{ type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds }, { type: 'connect' }],
  };
}

export function fsmStep(s: FsmState, event: FsmEvent, cfg: FsmConfig): FsmResult {
  const same = (actions: FsmAction[] = []): FsmResult => ({ state: s, actions });

  if (event.type === 'ManualStop') {
    if (s.name === 'Idle') return { state: { ...s, started: false }, actions: [...stopAll] };
    const stopped: FsmState = { ...s, started: false, connectRetryCounter: 0 };
    const pre: FsmAction[] = s.name === 'OpenSent' || s.name === 'OpenConfirm' || s.name === 'Established'
      ? [{ type: 'send-notification', code: ErrorCode.Cease, subcode: CeaseSubcode.AdministrativeShutdown, data: Buffer.alloc(0) }]
      : [];
    const r = toIdle(stopped, cfg, pre, { kind: 'stopped' });
    return { state: { ...r.state, connectRetryCounter: 0 }, actions: r.actions };
  }

  switch (s.name) {
    case 'Idle':
      if (event.type === 'ManualStart') return start({ ...s, connectRetryCounter: 0 }, cfg);
      if (event.type === 'ConnectRetryTimerExpires' && s.started) return start(s, cfg);
      if (event.type === 'TcpIncoming' && s.started) return openSent(s, cfg, []);
      // RFC 4271: any other event in Idle is ignored (an incoming connection is refused by the caller).
      return same();

    case 'Connect':
      switch (event.type) {
        case 'ConnectRetryTimerExpires':
          return same([{ type: 'disconnect' }, { type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds }, { type: 'connect' }]);
        case 'TcpConnected':
        case 'TcpIncoming':
          return openSent(s, cfg, []);
        case 'TcpConnectionFails':
          return { state: { ...s, name: 'Active' }, actions: [{ type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds }] };
        case 'ManualStart':
        case 'UpdateSent':
          return same();
        default:
          return toIdle(s, cfg, [], { kind: 'connection-lost' });
      }

    case 'Active':
      switch (event.type) {
        case 'ConnectRetryTimerExpires':
          if (cfg.passive) return same([{ type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds }]);
          return { state: { ...s, name: 'Connect' }, actions: [{ type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds }, { type: 'connect' }] };
        case 'TcpConnected':
        case 'TcpIncoming':
          return openSent(s, cfg, []);
        case 'TcpConnectionFails':
          return toIdle(s, cfg, [], { kind: 'connection-lost' });
        case 'ManualStart':
        case 'UpdateSent':
          return same();
        default:
          return toIdle(s, cfg, [], { kind: 'connection-lost' });
      }

    case 'OpenSent':
      switch (event.type) {
        case 'ManualStart':
        case 'UpdateSent':
        case 'TcpIncoming':
          return same();
        case 'HoldTimerExpires':
          return notifyAndIdle(s, cfg, ErrorCode.HoldTimerExpired, 0, 'no OPEN before the hold timer expired');
        case 'TcpConnectionFails':
          // RFC 4271: back to Active, listening, with the ConnectRetry timer running.
          return {
            state: { ...s, name: 'Active' },
            actions: [{ type: 'disconnect' }, { type: 'timer', timer: 'hold', seconds: 0 }, { type: 'timer', timer: 'connectRetry', seconds: cfg.connectRetrySeconds },
              { type: 'down', reason: { kind: 'connection-lost' }, wasEstablished: false }],
          };
        case 'OpenReceived': {
          const bad = checkOpen(cfg, event.open);
          if (bad) return notifyAndIdle(s, cfg, bad.code, bad.subcode, bad.message, bad.data);
          const holdTime = negotiateHoldTime(cfg.holdTime, event.open.holdTime);
          const keepaliveTime = Math.floor(holdTime / 3);
          return {
            state: { ...s, name: 'OpenConfirm', holdTime, keepaliveTime, peerOpen: event.open },
            actions: [
              { type: 'timer', timer: 'connectRetry', seconds: 0 },
              { type: 'send-keepalive' },
              { type: 'timer', timer: 'keepalive', seconds: keepaliveTime },
              { type: 'timer', timer: 'hold', seconds: holdTime },
            ],
          };
        }
        case 'MessageError':
          return notifyAndIdle(s, cfg, event.error.notification.code, event.error.notification.subcode, event.error.message, event.error.notification.data);
        case 'NotificationReceived':
          return toIdle(s, cfg, [], { kind: 'notification-received', code: event.notification.code, subcode: event.notification.subcode });
        case 'CollisionDump':
          return notifyAndIdle(s, cfg, ErrorCode.Cease, CeaseSubcode.ConnectionCollisionResolution, 'connection collision');
        default:
          return fsmError(s, cfg, event);
      }

    case 'OpenConfirm':
      switch (event.type) {
        case 'ManualStart':
        case 'UpdateSent':
        case 'TcpIncoming':
          return same();
        case 'HoldTimerExpires':
          return notifyAndIdle(s, cfg, ErrorCode.HoldTimerExpired, 0, 'hold timer expired in OpenConfirm');
        case 'KeepaliveTimerExpires':
          return same([{ type: 'send-keepalive' }, { type: 'timer', timer: 'keepalive', seconds: s.keepaliveTime }]);
        case 'TcpConnectionFails':
          return toIdle(s, cfg, [], { kind: 'connection-lost' });
        case 'NotificationReceived':
          return toIdle(s, cfg, [], { kind: 'notification-received', code: event.notification.code, subcode: event.notification.subcode });
        case 'KeepaliveReceived': {
          const open = s.peerOpen;
          if (!open) return fsmError(s, cfg, event);
          return {
            state: { ...s, name: 'Established' },
            actions: [{ type: 'timer', timer: 'hold', seconds: s.holdTime }, { type: 'established', open, holdTime: s.holdTime }],
          };
        }
        case 'MessageError':
          return notifyAndIdle(s, cfg, event.error.notification.code, event.error.notification.subcode, event.error.message, event.error.notification.data);
        case 'CollisionDump':
          return notifyAndIdle(s, cfg, ErrorCode.Cease, CeaseSubcode.ConnectionCollisionResolution, 'connection collision');
        default:
          return fsmError(s, cfg, event);
      }

    case 'Established':
      switch (event.type) {
        case 'ManualStart':
        case 'TcpIncoming':
          return same();
        case 'HoldTimerExpires':
          return notifyAndIdle(s, cfg, ErrorCode.HoldTimerExpired, 0, 'hold timer expired');
        case 'KeepaliveTimerExpires':
          return same([{ type: 'send-keepalive' }, { type: 'timer', timer: 'keepalive', seconds: s.keepaliveTime }]);
        case 'UpdateSent':
          return same([{ type: 'timer', timer: 'keepalive', seconds: s.keepaliveTime }]);
        case 'KeepaliveReceived':
          return same([{ type: 'timer', timer: 'hold', seconds: s.holdTime }]);
        case 'UpdateReceived':
          return same([{ type: 'timer', timer: 'hold', seconds: s.holdTime }, { type: 'deliver-update', update: event.update }]);
        case 'RouteRefreshReceived':
          return same([{ type: 'timer', timer: 'hold', seconds: s.holdTime }, { type: 'deliver-route-refresh', refresh: event.refresh }]);
        case 'TcpConnectionFails':
          return toIdle(s, cfg, [], { kind: 'connection-lost' });
        case 'NotificationReceived':
          return toIdle(s, cfg, [], { kind: 'notification-received', code: event.notification.code, subcode: event.notification.subcode });
        case 'MessageError':
          return notifyAndIdle(s, cfg, event.error.notification.code, event.error.notification.subcode, event.error.message, event.error.notification.data);
        case 'CollisionDump':
          return notifyAndIdle(s, cfg, ErrorCode.Cease, CeaseSubcode.ConnectionCollisionResolution, 'connection collision');
        default:
          return fsmError(s, cfg, event);
      }
  }
}

/**
 * Runs an FSM: owns its state and timers, turns timer expiry into events and hands every other
 * action to the caller. Events raised while an earlier one is being handled are queued, so
 * actions always run in the order the FSM produced them.
 */
export class FsmRunner {
  private current: FsmState = initialFsmState;
  private readonly timers = new Map<TimerName, TimerHandle>();
  private readonly queue: FsmEvent[] = [];
  private busy = false;

  constructor(
    private readonly cfg: FsmConfig,
    private readonly clock: Clock,
    private readonly perform: (action: FsmAction, state: FsmState) => void,
    private readonly onTransition?: (from: FsmStateName, to: FsmStateName, event: FsmEvent) => void,
  ) {}

  get state(): FsmState {
    return this.current;
  }

  dispatch(event: FsmEvent): void {
    this.queue.push(event);
    if (this.busy) return;
    this.busy = true;
    try {
      for (let e = this.queue.shift(); e; e = this.queue.shift()) this.apply(e);
    } finally {
      this.busy = false;
    }
  }

  private apply(event: FsmEvent): void {
    const from = this.current.name;
    const { state, actions } = fsmStep(this.current, event, this.cfg);
    this.current = state;
    if (from !== state.name) this.onTransition?.(from, state.name, event);
    for (const a of actions) {
      if (a.type === 'timer') this.setTimer(a.timer, a.seconds);
      else this.perform(a, state);
    }
  }

  private setTimer(name: TimerName, seconds: number): void {
    this.timers.get(name)?.cancel();
    this.timers.delete(name);
    if (seconds <= 0) return;
    const event: FsmEvent = name === 'connectRetry' ? { type: 'ConnectRetryTimerExpires' }
      : name === 'hold' ? { type: 'HoldTimerExpires' } : { type: 'KeepaliveTimerExpires' };
    this.timers.set(name, this.clock.schedule(seconds * 1000, () => {
      this.timers.delete(name);
      this.dispatch(event);
    }));
  }

  activeTimers(): TimerName[] {
    return [...this.timers.keys()];
  }

  /** Cancels all timers; the runner must not be used afterwards. */
  dispose(): void {
    for (const t of this.timers.values()) t.cancel();
    this.timers.clear();
  }
}

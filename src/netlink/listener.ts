// An event socket: a netlink socket the kernel writes to on its own — multicast groups such as
// conntrack events, or a unicast stream such as NFLOG packets. Unlike NetlinkSocket (blocking
// request/reply, fine for microsecond answers) it must never block the JS thread, so the event
// loop watches the fd and the socket is drained without waiting whenever it is readable.
//
// A reader that falls behind loses messages: the kernel drops what does not fit the receive
// buffer and reports it once as ENOBUFS. That is surfaced as an 'overrun' so the consumer can
// resynchronise (re-dump conntrack); the socket keeps working afterwards.

import { WeftError, CniCode } from '../errors.js';
import { native, isNativeError } from './native.js';
import { decodeError, decodeMessages, encodeMessage, type NlMessage, type RequestSpec } from './message.js';
import { NetlinkError } from './error.js';
import { NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NETLINK_ADD_MEMBERSHIP, SOL_NETLINK, SOL_SOCKET, SO_RCVBUF, SO_RCVBUFFORCE } from './constants.js';

/** Bigger than any datagram nfnetlink builds (NFLOG batches stay below its 128 KiB nlbufsiz cap). */
const RECV_BUFFER_BYTES = 256 * 1024;
/** Kernel-side queue for events not yet read; the kernel doubles the value asked for. */
export const DEFAULT_EVENT_BUFFER_BYTES = 8 * 1024 * 1024;
/**
 * Datagrams read per readiness callback. The fd stays readable when more is queued, so the loop
 * calls back again next turn; in between, timers and I/O get their turn under an event storm.
 */
const DATAGRAMS_PER_WAKE = 256;

/** What the listener needs from the socket; the addon in production, a script in unit tests. */
export interface ListenerIo {
  send(datagram: Buffer): void;
  /** Blocking receive (up to the socket's timeout); only before start(). */
  recv(buf: Buffer): number;
  /** Non-blocking receive: the datagram's full length, or -1 when nothing is queued. */
  recvNow(buf: Buffer): number;
  /** Calls onReadable(errno) whenever data or a socket error is pending; returns the stopper. */
  watch(onReadable: (errno: number) => void): () => void;
  close(): void;
}

/** Something other than a message: lost messages, or a failure (fatal ones close the listener). */
export type ListenerProblem =
  | { readonly type: 'overrun' }
  | { readonly type: 'error'; readonly error: WeftError; readonly fatal: boolean };

export interface NetlinkListenerOptions {
  /** Namespace to listen in (/run/netns/NAME or /proc/PID/ns/net); default: ours. */
  readonly nsPath?: string;
  readonly protocol: number;
  /** Multicast groups to join (NETLINK_ADD_MEMBERSHIP), e.g. NFNLGRP_CONNTRACK_NEW. */
  readonly groups?: readonly number[];
  readonly receiveBufferBytes?: number;
  /** How long a request() before start() may wait for its ACK. */
  readonly timeoutMs?: number;
}

function nativeIo(fd: number): ListenerIo {
  const n = native();
  return {
    send: (d) => void n.send(fd, d),
    recv: (b) => n.recv(fd, b),
    recvNow: (b) => n.recv(fd, b, true),
    watch: (cb) => {
      const w = n.watchReadable(fd, cb);
      return () => n.unwatchReadable(w);
    },
    close: () => n.close(fd),
  };
}

export class NetlinkListener {
  /** Names the listener in errors, e.g. "conntrack events in /run/netns/x". */
  readonly what: string;
  private io: ListenerIo | undefined;
  private stopWatch: (() => void) | undefined;
  private readonly rbuf = Buffer.allocUnsafe(RECV_BUFFER_BYTES);
  private seq = (Date.now() & 0x3fffffff) >>> 0;
  /** Messages that arrived while request() waited for its ACK, delivered first by start(). */
  private held: NlMessage[] = [];
  private onMessage: ((msg: NlMessage) => void) | undefined;
  private onProblem: ((p: ListenerProblem) => void) | undefined;

  constructor(io: ListenerIo, what: string) {
    this.io = io;
    this.what = what;
  }

  static open(opts: NetlinkListenerOptions, what: string): NetlinkListener {
    const where = opts.nsPath ? ` in ${opts.nsPath}` : '';
    let fd: number;
    try {
      fd = native().openNetlinkSocket(opts.nsPath ?? null, opts.protocol, opts.timeoutMs ?? 5000);
    } catch (err) {
      if (isNativeError(err) && err.code === 'ENOENT') {
        throw new WeftError(CniCode.Namespace, `cannot open ${what}${where}: namespace does not exist`, '', { cause: err });
      }
      throw WeftError.wrap(err, isNativeError(err) && err.syscall.startsWith('setns') ? CniCode.Namespace : CniCode.Netlink, `cannot open ${what}${where}`);
    }
    const n = native();
    try {
      const bytes = opts.receiveBufferBytes ?? DEFAULT_EVENT_BUFFER_BYTES;
      try {
        n.setSockOptInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, bytes);
      } catch {
        // Without CAP_NET_ADMIN the kernel caps the request at net.core.rmem_max instead.
        n.setSockOptInt(fd, SOL_SOCKET, SO_RCVBUF, bytes);
      }
      for (const g of opts.groups ?? []) {
        try {
          n.setSockOptInt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g);
        } catch (err) {
          if (isNativeError(err)) throw new NetlinkError(`${what}${where}: joining multicast group ${g}`, err.errno);
          throw err;
        }
      }
    } catch (err) {
      n.close(fd);
      throw WeftError.wrap(err, CniCode.Netlink, `cannot set up ${what}${where}`);
    }
    return new NetlinkListener(nativeIo(fd), `${what}${where}`);
  }

  get closed(): boolean {
    return this.io === undefined;
  }

  private open(): ListenerIo {
    if (!this.io) throw new WeftError(CniCode.Netlink, `${this.what}: listener is closed`);
    return this.io;
  }

  /**
   * Sends a request with NLM_F_ACK and waits for the kernel's verdict (configuration such as an
   * NFLOG bind). Blocking, so only before start(): the watch makes the socket non-blocking.
   */
  request(req: RequestSpec, operation: string): void {
    if (this.stopWatch) throw new WeftError(CniCode.Internal, `${this.what}: ${operation}: requests must come before start()`);
    const io = this.open();
    this.seq = (this.seq + 1) >>> 0 || 1;
    const seq = this.seq;
    try {
      io.send(encodeMessage({ ...req, flags: req.flags | NLM_F_ACK, seq }));
    } catch (err) {
      if (isNativeError(err)) throw new NetlinkError(`${operation}: sending the request`, err.errno);
      throw err;
    }
    for (;;) {
      let n: number;
      try {
        n = io.recv(this.rbuf);
      } catch (err) {
        if (isNativeError(err) && err.code === 'ENOBUFS') continue; // events overflowed; start() is not yet listening
        if (isNativeError(err)) throw new NetlinkError(`${operation}: waiting for the kernel's reply`, err.errno);
        throw err;
      }
      if (n > this.rbuf.length) throw new WeftError(CniCode.Netlink, `${operation}: reply of ${n} bytes truncated to ${this.rbuf.length}`);
      for (const msg of decodeMessages(Buffer.from(this.rbuf.subarray(0, n)))) {
        if (msg.type === NLMSG_ERROR && msg.seq === seq) {
          const e = decodeError(msg);
          if (e.errno !== 0) throw new NetlinkError(operation, e.errno, e.extackMessage);
          return;
        }
        if (msg.type !== NLMSG_ERROR) this.held.push(msg);
      }
    }
  }

  /** Starts delivering messages (on the JS thread, from the event loop) until close(). */
  start(onMessage: (msg: NlMessage) => void, onProblem: (p: ListenerProblem) => void): void {
    const io = this.open();
    if (this.stopWatch) throw new WeftError(CniCode.Internal, `${this.what}: already started`);
    this.onMessage = onMessage;
    this.onProblem = onProblem;
    this.stopWatch = io.watch(() => this.drain());
    const held = this.held;
    this.held = [];
    for (const m of held) {
      if (this.closed) return;
      this.dispatch(m);
    }
  }

  /** Stops the watch, then closes the socket (the kernel drops what was still queued). Idempotent. */
  close(): void {
    const io = this.io;
    if (!io) return;
    this.io = undefined;
    const stop = this.stopWatch;
    this.stopWatch = undefined;
    try {
      stop?.();
    } finally {
      io.close();
    }
  }

  /** Reads what is queued, up to DATAGRAMS_PER_WAKE datagrams. */
  private drain(): void {
    for (let i = 0; i < DATAGRAMS_PER_WAKE && this.io; i++) {
      let n: number;
      try {
        n = this.io.recvNow(this.rbuf);
      } catch (err) {
        // recv reports the overrun once and clears it; the next read returns data again.
        if (isNativeError(err) && err.code === 'ENOBUFS') {
          this.onProblem?.({ type: 'overrun' });
          continue;
        }
        const error = isNativeError(err) ? new NetlinkError(`${this.what}: receiving`, err.errno) : WeftError.wrap(err, CniCode.Netlink, `${this.what}: receiving`);
        this.close();
        this.onProblem?.({ type: 'error', error, fatal: true });
        return;
      }
      if (n < 0) return;
      if (n > this.rbuf.length) {
        this.onProblem?.({ type: 'error', error: new WeftError(CniCode.Netlink, `${this.what}: datagram of ${n} bytes truncated to ${this.rbuf.length}, dropped`), fatal: false });
        continue;
      }
      let msgs: NlMessage[];
      try {
        // Copied out: the receive buffer is reused, and decoded values may keep slices of it.
        msgs = decodeMessages(Buffer.from(this.rbuf.subarray(0, n)));
      } catch (err) {
        this.onProblem?.({ type: 'error', error: WeftError.wrap(err, CniCode.Netlink, this.what), fatal: false });
        continue;
      }
      for (const m of msgs) {
        if (!this.io) return; // a handler closed us
        this.dispatch(m);
      }
    }
  }

  private dispatch(m: NlMessage): void {
    switch (m.type) {
      case NLMSG_NOOP:
      case NLMSG_DONE:
        return;
      case NLMSG_OVERRUN:
        this.onProblem?.({ type: 'overrun' });
        return;
      case NLMSG_ERROR: {
        // Unsolicited errors (ACKs of requests are consumed by request()).
        const e = decodeError(m);
        if (e.errno !== 0) this.onProblem?.({ type: 'error', error: new NetlinkError(this.what, e.errno, e.extackMessage), fatal: false });
        return;
      }
      default:
        // A handler's throw would reach the addon's callback and end the process: report it.
        try {
          this.onMessage?.(m);
        } catch (err) {
          this.onProblem?.({ type: 'error', error: WeftError.wrap(err, CniCode.Netlink, `${this.what}: handling a message`), fatal: false });
        }
    }
  }
}

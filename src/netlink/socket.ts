// A netlink socket bound inside one network namespace, with synchronous request/ACK and dump.
// The kernel answers rtnetlink requests in microseconds, so blocking keeps callers (CNI plugins,
// the agent's reconcile loop) simple. Every request gets a fresh sequence number; replies with
// another number (left over from an earlier timed-out request) are skipped.

import { WeftError, CniCode } from '../errors.js';
import { native, isNativeError } from './native.js';
import { decodeError, decodeMessages, encodeMessage, encodeMessageInto, encodedMessageLength, type NlMessage, type RequestSpec } from './message.js';
import { NetlinkError } from './error.js';
import { zeroFill } from './attrs.js';
import { NETLINK_ROUTE, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP_INTR } from './constants.js';

const RECV_BUFFER_BYTES = 256 * 1024;
const DUMP_ATTEMPTS = 5;
/** Requests in flight per batch round: their error replies (with skb overhead) must fit the receive queue. */
const BATCH_CHUNK = 1024;
/** Netlink messages packed into one sendmsg; the kernel walks them in order. */
const BATCH_DATAGRAM_BYTES = 32 * 1024;

export interface NetlinkSocketOptions {
  /** Namespace to open the socket in (/run/netns/NAME or /proc/PID/ns/net); default: ours. */
  readonly nsPath?: string;
  readonly protocol?: number;
  /** How long one recv may block before the request fails with a timeout. */
  readonly timeoutMs?: number;
}

/** Moves datagrams; the kernel socket in production, a scripted fake in unit tests. */
export interface NetlinkTransport {
  send(datagram: Buffer): void;
  /** Fills buf with one datagram and returns its full length (more than buf.length if truncated). */
  recv(buf: Buffer): number;
  close(): void;
}

function nativeTransport(fd: number): NetlinkTransport {
  return {
    send: (d) => void native().send(fd, d),
    recv: (b) => native().recv(fd, b),
    close: () => native().close(fd),
  };
}

export class NetlinkSocket {
  readonly nsPath: string | undefined;
  private transport: NetlinkTransport | undefined;
  private seq: number;
  private readonly rbuf = Buffer.allocUnsafe(RECV_BUFFER_BYTES);
  /** requestBatch's datagram, made on first use. */
  private batchBuffer: Buffer | undefined;

  constructor(transport: NetlinkTransport, nsPath?: string, firstSeq?: number) {
    this.transport = transport;
    this.nsPath = nsPath;
    // Start somewhere arbitrary so replies meant for an earlier socket can't match.
    this.seq = firstSeq ?? (Date.now() & 0x3fffffff) >>> 0;
  }

  static open(opts: NetlinkSocketOptions = {}): NetlinkSocket {
    try {
      const fd = native().openNetlinkSocket(opts.nsPath ?? null, opts.protocol ?? NETLINK_ROUTE, opts.timeoutMs ?? 5000);
      return new NetlinkSocket(nativeTransport(fd), opts.nsPath);
    } catch (err) {
      const where = opts.nsPath ? ` in ${opts.nsPath}` : '';
      if (isNativeError(err) && err.code === 'ENOENT') {
        throw new WeftError(CniCode.Namespace, `cannot open netlink socket${where}: namespace does not exist`, '', { cause: err });
      }
      throw WeftError.wrap(err, isNativeError(err) && err.syscall.startsWith('setns') ? CniCode.Namespace : CniCode.Netlink, `cannot open netlink socket${where}`);
    }
  }

  close(): void {
    const t = this.transport;
    this.transport = undefined;
    t?.close();
  }

  get closed(): boolean {
    return this.transport === undefined;
  }

  private open(): NetlinkTransport {
    if (!this.transport) throw new WeftError(CniCode.Netlink, 'netlink socket is closed');
    return this.transport;
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0;
    if (this.seq === 0) this.seq = 1;
    return this.seq;
  }

  private send(req: RequestSpec, seq: number, operation: string): void {
    try {
      this.open().send(encodeMessage({ ...req, seq }));
    } catch (err) {
      if (isNativeError(err)) throw new NetlinkError(`${operation}: sending the request`, err.errno);
      throw err;
    }
  }

  /** `operation` may be a function: batches name their request only when something fails. */
  private receive(operation: string | (() => string)): NlMessage[] {
    const name = () => (typeof operation === 'string' ? operation : operation());
    let n: number;
    try {
      n = this.open().recv(this.rbuf);
    } catch (err) {
      if (isNativeError(err)) throw new NetlinkError(`${name()}: waiting for the kernel's reply`, err.errno);
      throw err;
    }
    if (n > this.rbuf.length) throw new WeftError(CniCode.Netlink, `${name()}: reply of ${n} bytes truncated to ${this.rbuf.length}`);
    // Copy out: the receive buffer is reused by the next call.
    return decodeMessages(Buffer.from(this.rbuf.subarray(0, n)));
  }

  /** Sends a request with NLM_F_ACK and waits for the kernel's verdict; throws NetlinkError on refusal. */
  request(req: RequestSpec, operation: string): void {
    const seq = this.nextSeq();
    this.send({ ...req, flags: req.flags | NLM_F_ACK }, seq, operation);
    for (;;) {
      for (const msg of this.receive(operation)) {
        if (msg.seq !== seq) continue;
        if (msg.type === NLMSG_ERROR) {
          const e = decodeError(msg);
          if (e.errno !== 0) throw new NetlinkError(operation, e.errno, e.extackMessage);
          return;
        }
        // NLM_F_ECHO replies or others for our seq: nothing to do until the ACK arrives.
      }
    }
  }

  /**
   * Sends many requests with few round trips and returns one verdict per request (undefined =
   * done). Requests are packed into datagrams of up to BATCH_DATAGRAM_BYTES, written straight
   * into one buffer. Only the last request of each chunk asks for an ACK: the kernel handles a
   * socket's messages in order and always answers a failure, so once that ACK arrives every
   * failure before it has too — and thousands of ACKs the caller would only count are neither
   * allocated by the kernel nor read here.
   */
  requestBatch(reqs: readonly RequestSpec[], operation: (i: number) => string, chunk = BATCH_CHUNK): (NetlinkError | undefined)[] {
    const results: (NetlinkError | undefined)[] = new Array<NetlinkError | undefined>(reqs.length).fill(undefined);
    const datagram = (this.batchBuffer ??= Buffer.alloc(BATCH_DATAGRAM_BYTES));
    for (let start = 0; start < reqs.length; start += chunk) {
      const end = Math.min(reqs.length, start + chunk);
      const bySeq = new Map<number, number>();
      let bytes = 0;
      const flush = (): void => {
        if (bytes === 0) return;
        try {
          this.open().send(datagram.subarray(0, bytes));
        } catch (err) {
          if (isNativeError(err)) throw new NetlinkError(`${operation(start)}: sending a batch`, err.errno);
          throw err;
        }
        bytes = 0;
      };
      let lastSeq = 0;
      for (let i = start; i < end; i++) {
        const seq = this.nextSeq();
        bySeq.set(seq, i);
        lastSeq = seq;
        const req = reqs[i]!;
        const flags = i === end - 1 ? req.flags | NLM_F_ACK : req.flags & ~NLM_F_ACK;
        const len = encodedMessageLength(req);
        if (bytes > 0 && bytes + len > datagram.length) flush();
        if (len > datagram.length) {
          this.open().send(encodeMessage({ ...req, flags, seq }));
          continue;
        }
        zeroFill(datagram, bytes, bytes + len);
        bytes = encodeMessageInto(req, datagram, bytes, flags, seq, len);
      }
      flush();
      let acked = false;
      while (!acked) {
        for (const msg of this.receive(() => operation(start))) {
          if (msg.type !== NLMSG_ERROR) continue;
          const i = bySeq.get(msg.seq);
          if (i === undefined) continue;
          bySeq.delete(msg.seq);
          const e = decodeError(msg);
          if (e.errno !== 0) results[i] = new NetlinkError(operation(i), e.errno, e.extackMessage);
          if (msg.seq === lastSeq) acked = true;
        }
      }
    }
    return results;
  }

  /** A request answered by exactly one message (e.g. RTM_GETLINK for one device). */
  query(req: RequestSpec, operation: string, expectType: number): NlMessage {
    const seq = this.nextSeq();
    this.send(req, seq, operation);
    for (;;) {
      for (const msg of this.receive(operation)) {
        if (msg.seq !== seq) continue;
        if (msg.type === NLMSG_ERROR) {
          const e = decodeError(msg);
          throw new NetlinkError(operation, e.errno === 0 ? 61 /* ENODATA */ : e.errno, e.extackMessage);
        }
        if (msg.type === expectType) return msg;
      }
    }
  }

  /**
   * Runs a dump (NLM_F_DUMP must be in req.flags) and returns all messages of expectType. When the
   * kernel flags the dump as interrupted (the table changed under it), the whole dump is redone.
   */
  dump(req: RequestSpec, operation: string, expectType: number): NlMessage[] {
    for (let attempt = 1; ; attempt++) {
      const { messages, interrupted } = this.dumpOnce(req, operation, expectType);
      if (!interrupted) return messages;
      if (attempt >= DUMP_ATTEMPTS) {
        throw new WeftError(CniCode.TryAgainLater, `${operation}: dump interrupted by concurrent changes ${attempt} times`);
      }
    }
  }

  private dumpOnce(req: RequestSpec, operation: string, expectType: number): { messages: NlMessage[]; interrupted: boolean } {
    const seq = this.nextSeq();
    this.send(req, seq, operation);
    const messages: NlMessage[] = [];
    let interrupted = false;
    for (;;) {
      for (const msg of this.receive(operation)) {
        if (msg.seq !== seq) continue;
        if (msg.flags & NLM_F_DUMP_INTR) interrupted = true;
        switch (msg.type) {
          case NLMSG_DONE: {
            // NLMSG_DONE carries an int error (negative) for dumps that fail part way.
            const err = msg.payload.length >= 4 ? msg.payload.readInt32LE(0) : 0;
            if (err < 0) throw new NetlinkError(operation, -err);
            return { messages, interrupted };
          }
          case NLMSG_ERROR: {
            const e = decodeError(msg);
            if (e.errno !== 0) throw new NetlinkError(operation, e.errno, e.extackMessage);
            return { messages, interrupted };
          }
          case NLMSG_NOOP:
            break;
          case NLMSG_OVERRUN:
            throw new WeftError(CniCode.Netlink, `${operation}: netlink overrun`);
          default:
            if (msg.type === expectType) messages.push(msg);
        }
      }
    }
  }
}

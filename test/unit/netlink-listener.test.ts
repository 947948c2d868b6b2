// NetlinkListener against scripted I/O: draining on readiness, overruns (ENOBUFS) reported and
// survived, fatal errors closing it, requests before start, and the order of close.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetlinkListener, type ListenerIo, type ListenerProblem } from '../../src/netlink/listener.js';
import { encodeMessage, type NlMessage } from '../../src/netlink/message.js';
import { NetlinkError } from '../../src/netlink/error.js';
import * as C from '../../src/netlink/constants.js';

type Queued = Buffer | { code: string; errno: number };

function nativeError(code: string, errno: number): Error {
  return Object.assign(new Error(`recv: ${code}`), { code, errno, syscall: 'recv' });
}

class ScriptedIo implements ListenerIo {
  readonly queue: Queued[] = [];
  readonly sent: Buffer[] = [];
  readonly log: string[] = [];
  onReadable: ((errno: number) => void) | undefined;
  reply: ((req: Buffer) => Queued[]) | undefined;

  send(d: Buffer): void {
    this.sent.push(Buffer.from(d));
    this.queue.push(...(this.reply?.(d) ?? []));
  }
  recv(buf: Buffer): number {
    const n = this.recvNow(buf);
    if (n < 0) throw nativeError('ETIMEDOUT', 110);
    return n;
  }
  recvNow(buf: Buffer): number {
    const next = this.queue.shift();
    if (!next) return -1;
    if (!Buffer.isBuffer(next)) throw nativeError(next.code, next.errno);
    next.copy(buf, 0, 0, Math.min(next.length, buf.length));
    return next.length;
  }
  watch(cb: (errno: number) => void): () => void {
    this.log.push('watch');
    this.onReadable = cb;
    return () => {
      this.log.push('unwatch');
      this.onReadable = undefined;
    };
  }
  close(): void {
    this.log.push('close');
  }
  /** What the event loop does when data is queued. */
  readable(errno = 0): void {
    assert.ok(this.onReadable, 'watching');
    this.onReadable(errno);
  }
}

const event = (type: number, seq = 0, body = 'ab'): Buffer => encodeMessage({ type, flags: 0, seq, fixed: Buffer.from(body) });
const ack = (seq: number, errno = 0): Buffer => {
  const p = Buffer.alloc(20);
  p.writeInt32LE(-errno, 0);
  p.writeUInt32LE(16, 4);
  p.writeUInt32LE(seq, 12);
  return encodeMessage({ type: C.NLMSG_ERROR, flags: 0, seq, fixed: p });
};

function started(io: ScriptedIo): { listener: NetlinkListener; got: NlMessage[]; problems: ListenerProblem[] } {
  const listener = new NetlinkListener(io, 'test events');
  const got: NlMessage[] = [];
  const problems: ListenerProblem[] = [];
  listener.start((m) => got.push(m), (p) => problems.push(p));
  return { listener, got, problems };
}

describe('NetlinkListener', () => {
  it('drains every queued datagram (several messages each) when the socket is readable', () => {
    const io = new ScriptedIo();
    const { got, problems } = started(io);
    io.queue.push(Buffer.concat([event(0x100), event(0x102)]), event(0x100), event(C.NLMSG_NOOP));
    io.readable();
    assert.deepEqual(got.map((m) => m.type), [0x100, 0x102, 0x100]);
    assert.deepEqual(problems, []);
    assert.equal(io.queue.length, 0);
  });

  it('reports ENOBUFS as an overrun and keeps reading', () => {
    const io = new ScriptedIo();
    const { listener, got, problems } = started(io);
    io.queue.push(event(0x100), { code: 'ENOBUFS', errno: 105 }, event(0x102));
    io.readable(9); // libuv's poll error (EBADF) after the kernel flagged the socket
    assert.deepEqual(got.map((m) => m.type), [0x100, 0x102]);
    assert.deepEqual(problems, [{ type: 'overrun' }]);
    assert.equal(listener.closed, false);
  });

  it('a receive failure other than ENOBUFS closes the listener and says so once', () => {
    const io = new ScriptedIo();
    const { listener, problems } = started(io);
    io.queue.push({ code: 'EBADF', errno: 9 }, event(0x100));
    io.readable();
    assert.equal(listener.closed, true);
    assert.equal(problems.length, 1);
    const p = problems[0]!;
    assert.ok(p.type === 'error' && p.fatal && p.error instanceof NetlinkError && p.error.errnoCode === 'EBADF');
    assert.deepEqual(io.log, ['watch', 'unwatch', 'close']);
  });

  it('skips a truncated datagram and unsolicited errors with a non-fatal report', () => {
    const io = new ScriptedIo();
    const { got, problems } = started(io);
    io.queue.push(Buffer.alloc(300 * 1024), ack(5, 1), event(0x100));
    io.readable();
    assert.deepEqual(got.map((m) => m.type), [0x100]);
    assert.deepEqual(problems.map((p) => p.type === 'error' && !p.fatal), [true, true]);
    assert.match((problems[0] as { error: Error }).error.message, /truncated/);
  });

  it('reads at most 256 datagrams per wake-up, the rest on the next', () => {
    const io = new ScriptedIo();
    const { got } = started(io);
    for (let i = 0; i < 300; i++) io.queue.push(event(0x100));
    io.readable();
    assert.equal(got.length, 256);
    io.readable();
    assert.equal(got.length, 300);
  });

  it('stops delivering as soon as a handler closes it', () => {
    const io = new ScriptedIo();
    const listener = new NetlinkListener(io, 'test');
    const got: number[] = [];
    listener.start((m) => {
      got.push(m.type);
      listener.close();
    }, () => assert.fail('no problem expected'));
    io.queue.push(Buffer.concat([event(0x100), event(0x101)]), event(0x102));
    io.readable();
    assert.deepEqual(got, [0x100]);
    assert.deepEqual(io.log, ['watch', 'unwatch', 'close']);
    listener.close();
    assert.deepEqual(io.log, ['watch', 'unwatch', 'close'], 'close is idempotent');
  });

  it('request() waits for its ACK and holds messages that arrive meanwhile for start()', () => {
    const io = new ScriptedIo();
    io.reply = (req) => [event(0x400, 0, 'pkt1'), ack(req.readUInt32LE(8) + 1000), ack(req.readUInt32LE(8))];
    const listener = new NetlinkListener(io, 'nflog');
    listener.request({ type: 0x401, flags: C.NLM_F_REQUEST, fixed: Buffer.alloc(4) }, 'bind');
    assert.equal(io.sent[0]!.readUInt16LE(6) & C.NLM_F_ACK, C.NLM_F_ACK);
    const got: string[] = [];
    listener.start((m) => got.push(m.payload.toString()), () => {});
    assert.deepEqual(got, ['pkt1']);
    assert.throws(() => listener.request({ type: 0x401, flags: 0, fixed: Buffer.alloc(4) }, 'again'), /before start/);
  });

  it('request() throws the kernel\'s refusal', () => {
    const io = new ScriptedIo();
    io.reply = (req) => [ack(req.readUInt32LE(8), 1)];
    const listener = new NetlinkListener(io, 'nflog');
    assert.throws(() => listener.request({ type: 0x401, flags: C.NLM_F_REQUEST, fixed: Buffer.alloc(4) }, 'bind group 7'), (e: unknown) => e instanceof NetlinkError && e.errnoCode === 'EPERM' && /bind group 7/.test(e.message));
  });
});

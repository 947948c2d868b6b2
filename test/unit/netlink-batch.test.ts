// NetlinkSocket.requestBatch (under Netlink.applyBatch): requests go out in chunks whose replies
// must fit the receive queue, several messages per datagram, only the chunk's last request asks
// for an ACK (the kernel answers every failure anyway, in order), and every verdict lands at its
// own request's index — past stale replies and replies split over datagrams.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetlinkSocket, type NetlinkTransport } from '../../src/netlink/socket.js';
import { decodeMessages, encodeMessage, type RequestSpec } from '../../src/netlink/message.js';
import { nla } from '../../src/netlink/attrs.js';
import { NetlinkError } from '../../src/netlink/error.js';
import * as C from '../../src/netlink/constants.js';

function ack(seq: number, errno: number): Buffer {
  const body = Buffer.alloc(4 + 16);
  body.writeInt32LE(-errno, 0);
  body.writeUInt32LE(16, 4);
  body.writeUInt32LE(seq, 12);
  return encodeMessage({ type: C.NLMSG_ERROR, flags: C.NLM_F_CAPPED, seq, fixed: body });
}

/**
 * A kernel stand-in, as rtnetlink behaves: handles messages in order and answers one when it
 * fails (errno picked by `verdict` from the request number) or when it asks for an ACK.
 */
class AckingTransport implements NetlinkTransport {
  readonly datagrams: Buffer[] = [];
  /** Request numbers (0-based, in send order) → seq. */
  readonly seqs: number[] = [];
  private inbox: Buffer[] = [];
  /** Requests sent whose ACK has not been received yet; its peak is what the chunk bounds. */
  private inFlight = 0;
  maxInFlight = 0;
  sendError: (NodeJS.ErrnoException & { syscall: string }) | undefined;

  /** Requests that asked for an ACK, by request number. */
  readonly acked: number[] = [];

  constructor(private readonly verdict: (n: number) => number, private readonly ackPerDatagram = 3) {}

  send(d: Buffer): void {
    if (this.sendError) throw this.sendError;
    this.datagrams.push(Buffer.from(d));
    const acks: Buffer[] = [];
    for (const m of decodeMessages(Buffer.from(d))) {
      const n = this.seqs.length;
      this.seqs.push(m.seq);
      const errno = this.verdict(n);
      if (m.flags & C.NLM_F_ACK) this.acked.push(n);
      if (errno !== 0 || m.flags & C.NLM_F_ACK) acks.push(ack(m.seq, errno));
    }
    this.inFlight += decodeMessages(Buffer.from(d)).length;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    // A reply to some earlier, abandoned request: must be skipped, not counted.
    this.inbox.push(ack(12345, 0));
    // The kernel packs several ACKs into one datagram.
    for (let i = 0; i < acks.length; i += this.ackPerDatagram) this.inbox.push(Buffer.concat(acks.slice(i, i + this.ackPerDatagram)));
  }

  recv(buf: Buffer): number {
    const d = this.inbox.shift();
    if (!d) throw Object.assign(new Error('recv: timed out'), { code: 'EAGAIN', errno: 11, syscall: 'recv' });
    d.copy(buf);
    // Everything sent before an ACK has been handled once the ACK is read.
    const last = decodeMessages(d).filter((m) => m.seq !== 12345).at(-1);
    if (last) this.inFlight = this.seqs.length - 1 - this.seqs.indexOf(last.seq);
    return d.length;
  }

  close(): void {}
}

function requests(n: number, attrBytes = 8): RequestSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    type: C.RTM_NEWROUTE,
    flags: C.NLM_F_REQUEST | C.NLM_F_CREATE | C.NLM_F_REPLACE,
    fixed: Buffer.alloc(12, i & 255),
    attrs: [nla.str(C.RTA_TABLE, 'x'.repeat(attrBytes))],
  }));
}

describe('NetlinkSocket.requestBatch', () => {
  it('keeps at most one chunk of requests unacknowledged and answers every request once', () => {
    const t = new AckingTransport(() => 0);
    const sock = new NetlinkSocket(t, undefined, 100);
    const results = sock.requestBatch(requests(10), (i) => `op ${i}`, 4);
    assert.equal(results.length, 10);
    assert.deepEqual(results, new Array(10).fill(undefined));
    assert.equal(t.seqs.length, 10, 'each request sent exactly once');
    assert.equal(new Set(t.seqs).size, 10, 'each with its own sequence number');
    assert.equal(t.maxInFlight, 4);
    assert.equal(t.datagrams.length, 3, 'chunks of 4, 4, 2: one datagram each');
    assert.deepEqual(t.acked, [3, 7, 9], 'only the last request of each chunk asks for an ACK');
  });

  it('puts each refusal at its own index, including the ACKed last one of a chunk', () => {
    const failing = new Map([[1, 17], [6, 2], [7, 22], [9, 19]]); // EEXIST, ENOENT, EINVAL (last of chunk 2), ENODEV
    const t = new AckingTransport((n) => failing.get(n) ?? 0, 1);
    const sock = new NetlinkSocket(t, undefined, 5);
    const results = sock.requestBatch(requests(10), (i) => `replace route #${i}`, 4);
    for (let i = 0; i < 10; i++) {
      const err = results[i];
      if (!failing.has(i)) { assert.equal(err, undefined, `request ${i} succeeded`); continue; }
      assert.ok(err instanceof NetlinkError, `request ${i} refused`);
      assert.equal(err.errno, failing.get(i));
      assert.match(err.message, new RegExp(`replace route #${i}\\b`), 'the message names the refused request');
    }
  });

  it('packs many messages per datagram, never over 32 KiB', () => {
    const t = new AckingTransport(() => 0);
    const sock = new NetlinkSocket(t, undefined, 1);
    // ~228-byte messages: 256 per chunk is ~58 KiB, so each chunk needs two datagrams.
    const results = sock.requestBatch(requests(600, 200), () => 'batch', 256);
    assert.equal(results.filter((r) => r === undefined).length, 600);
    assert.equal(t.seqs.length, 600);
    for (const d of t.datagrams) assert.ok(d.length <= 32 * 1024, `datagram of ${d.length} bytes`);
    assert.ok(t.datagrams.length >= 5 && t.datagrams.length <= 8, `${t.datagrams.length} datagrams for 600 requests`);
    assert.ok(t.maxInFlight <= 256);
  });

  it('sends a request bigger than a datagram on its own, in order with the rest', () => {
    const failing = new Map([[1, 90]]); // EMSGSIZE on the big one
    const t = new AckingTransport((n) => failing.get(n) ?? 0);
    const sock = new NetlinkSocket(t, undefined, 1);
    const reqs = [...requests(1), ...requests(1, 40_000), ...requests(2)];
    const results = sock.requestBatch(reqs, (i) => `op ${i}`);
    assert.deepEqual(results.map((r) => r?.errno), [undefined, 90, undefined, undefined]);
    assert.deepEqual(t.datagrams.map((d) => decodeMessages(d).length), [1, 1, 2]);
  });

  it('wraps a failed send in a NetlinkError naming the chunk', () => {
    const t = new AckingTransport(() => 0);
    t.sendError = Object.assign(new Error('sendmsg: no buffer space'), { code: 'ENOBUFS', errno: 105, syscall: 'sendmsg' });
    const sock = new NetlinkSocket(t, undefined, 1);
    assert.throws(() => sock.requestBatch(requests(3), (i) => `delete fdb #${i}`), (err: unknown) =>
      err instanceof NetlinkError && err.errno === 105 && /delete fdb #0: sending a batch/.test(err.message));
  });

  it('sends nothing for an empty batch', () => {
    const t = new AckingTransport(() => 0);
    assert.deepEqual(new NetlinkSocket(t).requestBatch([], () => 'none'), []);
    assert.equal(t.datagrams.length, 0);
  });
});

// The request/dump protocol of NetlinkSocket against a scripted transport: sequence matching,
// multi-part dumps, NLM_F_DUMP_INTR retries, errors in NLMSG_DONE and NLMSG_ERROR, truncation.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetlinkSocket, type NetlinkTransport } from '../../src/netlink/socket.js';
import { encodeMessage } from '../../src/netlink/message.js';
import { encodeAttrs, nla } from '../../src/netlink/attrs.js';
import { NetlinkError } from '../../src/netlink/error.js';
import { linkDumpRequest, linkGetRequest, ifinfomsg, decodeLink } from '../../src/netlink/link.js';
import { CniCode, WeftError } from '../../src/errors.js';
import * as C from '../../src/netlink/constants.js';

type Responder = (request: Buffer, seq: number, count: number) => Buffer[];

class ScriptedTransport implements NetlinkTransport {
  readonly sent: Buffer[] = [];
  private readonly inbox: Buffer[] = [];
  closed = false;
  constructor(private readonly respond: Responder) {}
  send(d: Buffer): void {
    this.sent.push(Buffer.from(d));
    this.inbox.push(...this.respond(d, d.readUInt32LE(8), this.sent.length));
  }
  recv(buf: Buffer): number {
    const d = this.inbox.shift();
    if (!d) throw Object.assign(new Error('recv: timed out'), { code: 'ETIMEDOUT', errno: 110, syscall: 'recv' });
    d.copy(buf, 0, 0, Math.min(d.length, buf.length));
    return d.length;
  }
  close(): void {
    this.closed = true;
  }
}

function link(seq: number, index: number, name: string, flags = C.NLM_F_MULTI): Buffer {
  return encodeMessage({ type: C.RTM_NEWLINK, flags, seq, fixed: ifinfomsg({ index }), attrs: [nla.str(C.IFLA_IFNAME, name), nla.u32(C.IFLA_MTU, 1500)] });
}

function done(seq: number, error = 0, flags = C.NLM_F_MULTI): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(error);
  return encodeMessage({ type: C.NLMSG_DONE, flags, seq, fixed: b });
}

function nlerr(seq: number, errno: number, extack?: string): Buffer {
  const body = Buffer.alloc(4 + 16);
  body.writeInt32LE(-errno, 0);
  body.writeUInt32LE(16, 4);
  body.writeUInt32LE(seq, 12);
  const tlv = extack ? encodeAttrs([nla.str(C.NLMSGERR_ATTR_MSG, extack)]) : Buffer.alloc(0);
  return encodeMessage({ type: C.NLMSG_ERROR, flags: C.NLM_F_CAPPED | (extack ? C.NLM_F_ACK_TLVS : 0), seq, fixed: Buffer.concat([body, tlv]) });
}

describe('NetlinkSocket protocol', () => {
  it('adds NLM_F_ACK, skips replies to other sequence numbers, returns on the ACK', () => {
    const t = new ScriptedTransport((_req, seq) => [Buffer.concat([link(seq - 1, 9, 'stale'), nlerr(seq - 1, 0)]), nlerr(seq, 0)]);
    const s = new NetlinkSocket(t, undefined, 100);
    s.request(linkGetRequest(1), 'op');
    assert.equal(t.sent.length, 1);
    assert.equal(t.sent[0]!.readUInt32LE(8), 101, 'fresh sequence number');
    assert.equal(t.sent[0]!.readUInt16LE(6) & C.NLM_F_ACK, C.NLM_F_ACK);
  });

  it('turns an NLMSG_ERROR into a NetlinkError carrying errno and extack', () => {
    const t = new ScriptedTransport((_req, seq) => [nlerr(seq, 17, 'File exists here')]);
    const s = new NetlinkSocket(t);
    assert.throws(
      () => s.request(linkGetRequest(1), 'create thing'),
      (e: unknown) => e instanceof NetlinkError && e.errno === 17 && e.errnoCode === 'EEXIST' && e.code === CniCode.Netlink && /^create thing: .*\(EEXIST\): File exists here$/.test(e.message),
    );
  });

  it('collects a multi-part dump across datagrams until NLMSG_DONE', () => {
    const t = new ScriptedTransport((_req, seq) => [
      Buffer.concat([link(seq, 1, 'lo'), link(seq, 2, 'eth0')]),
      Buffer.concat([link(seq, 3, 'eth1'), done(seq)]),
    ]);
    const s = new NetlinkSocket(t);
    const msgs = s.dump(linkDumpRequest(), 'list', C.RTM_NEWLINK);
    assert.deepEqual(msgs.map(decodeLink).map((l) => [l.index, l.name]), [[1, 'lo'], [2, 'eth0'], [3, 'eth1']]);
  });

  it('redoes a dump the kernel marked as interrupted, keeping only the clean run', () => {
    const t = new ScriptedTransport((_req, seq, count) =>
      count === 1
        ? [Buffer.concat([link(seq, 1, 'lo', C.NLM_F_MULTI | C.NLM_F_DUMP_INTR), done(seq, 0, C.NLM_F_MULTI | C.NLM_F_DUMP_INTR)])]
        : [Buffer.concat([link(seq, 1, 'lo'), link(seq, 5, 'new0'), done(seq)])],
    );
    const s = new NetlinkSocket(t);
    const names = s.dump(linkDumpRequest(), 'list', C.RTM_NEWLINK).map((m) => decodeLink(m).name);
    assert.deepEqual(names, ['lo', 'new0']);
    assert.equal(t.sent.length, 2);
    assert.notEqual(t.sent[0]!.readUInt32LE(8), t.sent[1]!.readUInt32LE(8), 'the retry has its own sequence number');
  });

  it('gives up with TryAgainLater when every dump attempt is interrupted', () => {
    const t = new ScriptedTransport((_req, seq) => [done(seq, 0, C.NLM_F_MULTI | C.NLM_F_DUMP_INTR)]);
    const s = new NetlinkSocket(t);
    assert.throws(() => s.dump(linkDumpRequest(), 'list links', C.RTM_NEWLINK), (e: unknown) => e instanceof WeftError && e.code === CniCode.TryAgainLater && /interrupted/.test(e.message));
    assert.equal(t.sent.length, 5);
  });

  it('reports an error carried in NLMSG_DONE and in an NLMSG_ERROR answering a dump', () => {
    const s1 = new NetlinkSocket(new ScriptedTransport((_r, seq) => [done(seq, -16)]));
    assert.throws(() => s1.dump(linkDumpRequest(), 'list', C.RTM_NEWLINK), (e: unknown) => e instanceof NetlinkError && e.errnoCode === 'EBUSY');
    const s2 = new NetlinkSocket(new ScriptedTransport((_r, seq) => [nlerr(seq, 22, 'Invalid header for dump')]));
    assert.throws(() => s2.dump(linkDumpRequest(), 'list', C.RTM_NEWLINK), /EINVAL.*Invalid header for dump/);
  });

  it('answers a query with the one reply of the expected type', () => {
    const s = new NetlinkSocket(new ScriptedTransport((_r, seq) => [link(seq, 7, 'eth7', 0)]));
    assert.equal(decodeLink(s.query(linkGetRequest(7), 'get', C.RTM_NEWLINK)).name, 'eth7');
    const missing = new NetlinkSocket(new ScriptedTransport((_r, seq) => [nlerr(seq, 19)]));
    assert.throws(() => missing.query(linkGetRequest(7), 'get link 7', C.RTM_NEWLINK), (e: unknown) => e instanceof NetlinkError && e.errnoCode === 'ENODEV');
  });

  it('refuses a truncated datagram, maps a timeout, and fails once closed', () => {
    const big = Buffer.alloc(300 * 1024);
    const s1 = new NetlinkSocket(new ScriptedTransport(() => [big]));
    assert.throws(() => s1.request(linkGetRequest(1), 'op'), /reply of 307200 bytes truncated/);
    const s2 = new NetlinkSocket(new ScriptedTransport(() => []));
    assert.throws(() => s2.request(linkGetRequest(1), 'slow op'), (e: unknown) => e instanceof NetlinkError && e.errnoCode === 'ETIMEDOUT' && /slow op: waiting for the kernel's reply/.test(e.message));
    const t = new ScriptedTransport((_r, seq) => [nlerr(seq, 0)]);
    const s3 = new NetlinkSocket(t);
    s3.close();
    assert.equal(t.closed, true);
    assert.equal(s3.closed, true);
    assert.throws(() => s3.request(linkGetRequest(1), 'op'), /netlink socket is closed/);
    s3.close();
  });
});

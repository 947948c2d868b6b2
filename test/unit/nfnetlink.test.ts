// ctnetlink events and NFLOG packets: decoding real kernel bytes (nfnetlink-fixtures.ts), the
// requests weft sends (golden bytes from the uapi structs), and the edge cases fixtures do not
// cover, built with the attribute encoder.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nfCaptured } from './nfnetlink-fixtures.js';
import { decodeMessages, encodeMessage, type NlMessage, type RequestSpec } from '../../src/netlink/message.js';
import { encodeAttrs, nla, type Attr } from '../../src/netlink/attrs.js';
import { conntrackDumpRequest, decodeConntrackEvent, decodeConntrackFlow } from '../../src/netlink/conntrack.js';
import { decodeNflogPacket, nflogBindRequest, nflogFamilyRequest, nflogUnbindRequest } from '../../src/netlink/nflog.js';
import { nfgenmsg } from '../../src/netlink/nfnetlink.js';
import { formatIP, parseIP } from '../../src/net/ip.js';
import { WeftError } from '../../src/errors.js';
import * as C from '../../src/netlink/constants.js';

function hex(s: string): string {
  return s.split('\n').map((l) => l.replace(/#.*$/, '')).join('').replace(/\s+/g, '');
}

function one(h: string): NlMessage {
  const msgs = decodeMessages(Buffer.from(h, 'hex'));
  assert.equal(msgs.length, 1);
  return msgs[0]!;
}

/** Values with IPs as strings and payloads as hex, for deepEqual against literals. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (k, x: unknown) => {
    if (x && typeof x === 'object' && 'value' in x && 'family' in x && typeof (x as { value: unknown }).value === 'bigint') return formatIP(x as Parameters<typeof formatIP>[0]);
    if (k === 'payload' && x && typeof x === 'object' && (x as { type?: string }).type === 'Buffer') return Buffer.from((x as { data: number[] }).data).toString('hex');
    return x;
  }));
}

function encode(req: RequestSpec, seq = 1): string {
  return encodeMessage({ ...req, seq }).toString('hex');
}

const CT_NEW = (C.NFNL_SUBSYS_CTNETLINK << 8) | C.IPCTNL_MSG_CT_NEW;

function ctMessage(attrs: readonly Attr[], opts: { family?: number; flags?: number; type?: number } = {}): NlMessage {
  return { type: opts.type ?? CT_NEW, flags: opts.flags ?? 0, seq: 0, pid: 0, payload: Buffer.concat([nfgenmsg(opts.family ?? C.AF_INET), encodeAttrs(attrs)]) };
}

function tuple(type: number, src: string, dst: string, proto: number, ports?: [number, number], zone?: number): Attr {
  const v6 = parseIP(src).family === 6;
  const protoAttrs: Attr[] = [nla.u8(C.CTA_PROTO_NUM, proto)];
  if (ports) protoAttrs.push(nla.be16(C.CTA_PROTO_SRC_PORT, ports[0]), nla.be16(C.CTA_PROTO_DST_PORT, ports[1]));
  const children: Attr[] = [
    nla.nest(C.CTA_TUPLE_IP, [nla.ip(v6 ? C.CTA_IP_V6_SRC : C.CTA_IP_V4_SRC, parseIP(src)), nla.ip(v6 ? C.CTA_IP_V6_DST : C.CTA_IP_V4_DST, parseIP(dst))], true),
    nla.nest(C.CTA_TUPLE_PROTO, protoAttrs, true),
  ];
  if (zone !== undefined) children.push(nla.be16(C.CTA_TUPLE_ZONE, zone));
  return nla.nest(type, children, true);
}

const be64 = (type: number, n: bigint): Attr => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return nla.bytes(type, b);
};

describe('ctnetlink decoding (captured events)', () => {
  const tcp = {
    original: { src: '10.77.0.1', dst: '10.77.0.2', proto: 6, srcPort: 40001, dstPort: 5001 },
    reply: { src: '10.77.0.2', dst: '10.77.0.1', proto: 6, srcPort: 5001, dstPort: 40001 },
  };

  it('a new TCP connection: CT_NEW with NLM_F_CREATE|NLM_F_EXCL, tuples, state, id, timeout', () => {
    assert.deepEqual(plain(decodeConntrackEvent(one(nfCaptured.ctNewTcp4))), {
      type: 'new',
      flow: { family: 4, ...tcp, status: C.IPS_CONFIRMED, id: 3350257964, timeoutSec: 120, tcpState: 'syn-sent', eventMs: 1796684886680.775 },
    });
  });

  it('its destroy: CT_DELETE with per-direction counters and start/stop times', () => {
    const ev = decodeConntrackEvent(one(nfCaptured.ctDestroyTcp4));
    assert.deepEqual(plain(ev), {
      type: 'destroy',
      flow: {
        family: 4,
        ...tcp,
        status: C.IPS_SEEN_REPLY | C.IPS_ASSURED | C.IPS_CONFIRMED | C.IPS_DYING,
        id: 3350257964,
        timeoutSec: 119,
        tcpState: 'time-wait',
        // 1000 bytes of payload + 4 packets of IP/TCP headers (a SYN with options, then 52-byte headers)
        counters: { original: { packets: 4, bytes: 1216 }, reply: { packets: 4, bytes: 216 } },
        startMs: 1796684886680.781,
        stopMs: 1796684887061.503,
        eventMs: 1796684887061.504,
      },
    });
  });

  it('ICMPv6 echo: addresses from CTA_IP_V6_*, type/code/id from the ICMPv6 attributes; an update is CT_NEW without CREATE', () => {
    const original = { src: 'fd77::1', dst: 'fd77::2', proto: 58, icmp: { type: 128, code: 0, id: 13768 } };
    const reply = { src: 'fd77::2', dst: 'fd77::1', proto: 58, icmp: { type: 129, code: 0, id: 13768 } };
    assert.deepEqual(plain(decodeConntrackEvent(one(nfCaptured.ctNewIcmp6))), {
      type: 'new',
      flow: { family: 6, original, reply, status: C.IPS_CONFIRMED, id: 1446031711, timeoutSec: 30, eventMs: 1796684888100.968 },
    });
    const update = decodeConntrackEvent(one(nfCaptured.ctUpdateIcmp6));
    assert.equal(update?.type, 'update');
    assert.equal(update.flow.status, C.IPS_CONFIRMED | C.IPS_SEEN_REPLY);
  });

  it('ICMP echo over IPv4', () => {
    const ev = decodeConntrackEvent(one(nfCaptured.ctNewIcmp4));
    assert.deepEqual(plain(ev?.flow.original), { src: '10.77.0.1', dst: '10.77.0.2', proto: 1, icmp: { type: 8, code: 0, id: 13769 } });
    assert.deepEqual(plain(ev?.flow.reply), { src: '10.77.0.2', dst: '10.77.0.1', proto: 1, icmp: { type: 0, code: 0, id: 13769 } });
  });
});

describe('ctnetlink decoding (edge cases)', () => {
  const udp = [tuple(C.CTA_TUPLE_ORIG, '10.0.0.1', '10.0.0.2', 17, [1000, 53]), tuple(C.CTA_TUPLE_REPLY, '10.0.0.2', '10.0.0.1', 17, [53, 1000])];

  it('zones, mark, the 32-bit counters of old kernels; a zero start time (timestamps switched on later) is left out', () => {
    const flow = decodeConntrackFlow(ctMessage([
      tuple(C.CTA_TUPLE_ORIG, '10.0.0.1', '10.0.0.2', 17, [1000, 53], 4),
      tuple(C.CTA_TUPLE_REPLY, '10.0.0.2', '10.0.0.1', 17, [53, 1000]),
      nla.be32(C.CTA_STATUS, C.IPS_CONFIRMED),
      nla.be32(C.CTA_MARK, 0xdeadbeef),
      nla.be16(C.CTA_ZONE, 9),
      nla.nest(C.CTA_COUNTERS_ORIG, [nla.be32(C.CTA_COUNTERS32_PACKETS, 3), nla.be32(C.CTA_COUNTERS32_BYTES, 300)], true),
      nla.nest(C.CTA_COUNTERS_REPLY, [be64(C.CTA_COUNTERS_PACKETS, 2n), be64(C.CTA_COUNTERS_BYTES, 2n ** 40n)], true),
      nla.nest(C.CTA_TIMESTAMP, [be64(C.CTA_TIMESTAMP_START, 0n)], true),
    ]));
    assert.equal(flow.original.zone, 4);
    assert.equal(flow.reply.zone, undefined);
    assert.equal(flow.zone, 9);
    assert.equal(flow.mark, 0xdeadbeef);
    assert.deepEqual(flow.counters, { original: { packets: 3, bytes: 300 }, reply: { packets: 2, bytes: 2 ** 40 } });
    assert.equal('startMs' in flow, false);
  });

  it('timestamps keep sub-millisecond precision', () => {
    const flow = decodeConntrackFlow(ctMessage([...udp, nla.nest(C.CTA_TIMESTAMP, [be64(C.CTA_TIMESTAMP_START, 1_700_000_000_123_456_789n), be64(C.CTA_TIMESTAMP_STOP, 1_700_000_001_000_000_000n)], true)]));
    assert.equal(flow.startMs, 1_700_000_000_123.456);
    assert.equal(flow.stopMs, 1_700_000_001_000);
  });

  it('kinds: CT_NEW with CREATE|EXCL is new, without is update, CT_DELETE is destroy, others are not events', () => {
    assert.equal(decodeConntrackEvent(ctMessage(udp, { flags: C.NLM_F_CREATE | C.NLM_F_EXCL }))?.type, 'new');
    assert.equal(decodeConntrackEvent(ctMessage(udp))?.type, 'update');
    assert.equal(decodeConntrackEvent(ctMessage(udp, { type: (C.NFNL_SUBSYS_CTNETLINK << 8) | C.IPCTNL_MSG_CT_DELETE }))?.type, 'destroy');
    assert.equal(decodeConntrackEvent(ctMessage(udp, { type: (C.NFNL_SUBSYS_ULOG << 8) | 0 })), undefined);
    assert.equal(decodeConntrackEvent(ctMessage(udp, { type: C.NLMSG_DONE })), undefined);
  });

  it('malformed messages throw a WeftError naming what is missing', () => {
    assert.throws(() => decodeConntrackFlow(ctMessage([udp[0]!])), (e: unknown) => e instanceof WeftError && /no reply tuple/.test(e.message));
    assert.throws(() => decodeConntrackFlow(ctMessage(udp, { family: 7 })), /address family 7/);
    assert.throws(
      () => decodeConntrackFlow(ctMessage([nla.nest(C.CTA_TUPLE_ORIG, [nla.nest(C.CTA_TUPLE_PROTO, [nla.u8(C.CTA_PROTO_NUM, 6)])]), udp[1]!])),
      /original tuple without CTA_TUPLE_IP/,
    );
    assert.throws(() => decodeConntrackFlow({ type: CT_NEW, flags: 0, seq: 0, pid: 0, payload: Buffer.alloc(2) }), /payload of 2 bytes/);
  });

  it('asks for a dump with IPCTNL_MSG_CT_GET, NLM_F_DUMP and the family in nfgenmsg', () => {
    assert.equal(
      encode(conntrackDumpRequest()),
      hex(`
        14000000 0101 0103 01000000 00000000   # len 20, CTNETLINK<<8 | CT_GET, REQUEST|DUMP
        00 00 0000                             # nfgenmsg: AF_UNSPEC (every family), v0, res_id 0
      `),
    );
    assert.equal(encode(conntrackDumpRequest(6)).slice(32, 40), '0a000000');
  });
});

describe('NFLOG configuration', () => {
  it('binds a group with copy mode, flush timeout and queue threshold in one message', () => {
    assert.equal(
      encode(nflogBindRequest({ group: 7 })),
      hex(`
        38000000 0104 0500 01000000 00000000   # len 56, ULOG<<8 | CONFIG, REQUEST|ACK
        00 00 0007                             # nfgenmsg: AF_UNSPEC, v0, res_id = group 7 (be16)
        05000100 01000000                      # NFULA_CFG_CMD: BIND
        0a000200 00000080 0200 0000            # NFULA_CFG_MODE: range 128 (be32), COPY_PACKET, pad
        08000400 00000001                      # NFULA_CFG_TIMEOUT: 1 (1/100 s)
        08000500 00000001                      # NFULA_CFG_QTHRESH: 1
      `),
    );
  });

  it('takes mode, range, flush time (rounded up to 10 ms) and buffer size', () => {
    const h = encode(nflogBindRequest({ group: 0x1234, copyMode: 'meta', copyRange: 0, flushMs: 25, qthreshold: 20, nlbufsiz: 65536 }));
    assert.ok(h.includes(hex('00 00 1234')));
    assert.ok(h.includes(hex('0a000200 00000000 0100 0000')));
    assert.ok(h.includes(hex('08000400 00000003')));
    assert.ok(h.includes(hex('08000500 00000014')));
    assert.ok(h.endsWith(hex('08000300 00010000')));
  });

  it('unbinds, and binds a family\'s default logger with that family in nfgenmsg', () => {
    assert.equal(encode(nflogUnbindRequest(7)), hex('1c000000 0104 0500 01000000 00000000  00000007  05000100 02000000'));
    assert.equal(encode(nflogFamilyRequest('bind', 4)), hex('1c000000 0104 0500 01000000 00000000  02000000  05000100 03000000'));
    assert.equal(encode(nflogFamilyRequest('unbind', 6)), hex('1c000000 0104 0500 01000000 00000000  0a000000  05000100 04000000'));
  });

  it('refuses groups outside 0–65535 and nonsense numbers', () => {
    for (const group of [-1, 65536, 1.5, NaN]) assert.throws(() => nflogBindRequest({ group }), /group must be an integer 0–65535/);
    assert.throws(() => nflogBindRequest({ group: 1, copyRange: -1 }), /copy range/);
    assert.throws(() => nflogBindRequest({ group: 1, qthreshold: 2 ** 32 }), /queue threshold/);
  });
});

describe('NFLOG packets', () => {
  it('decodes a dropped IPv4 SYN: prefix, group, hook, interface, sender MAC, timestamp and the parsed headers', () => {
    const p = decodeNflogPacket(one(nfCaptured.nflogTcp4));
    assert.ok(p);
    assert.equal(p.payload.length, 60); // the whole SYN: shorter than the 128-byte copy range
    assert.deepEqual(plain({ ...p, payload: undefined }), {
      group: 7,
      family: C.AF_INET,
      prefix: 'weft-deny:test/p',
      hwProtocol: 0x0800,
      hook: 1,
      inIfindex: 2,
      hwAddr: '46:42:e8:b3:5c:af',
      timestampMs: 1796684888180.703,
      ip: { family: 4, src: '10.77.0.1', dst: '10.77.0.2', proto: 6, length: 60, srcPort: 43260, dstPort: 9, tcpFlags: 0x02 },
    });
  });

  it('decodes a dropped IPv6 SYN', () => {
    const p = decodeNflogPacket(one(nfCaptured.nflogTcp6));
    assert.equal(p?.family, C.AF_INET6);
    assert.equal(p.hwProtocol, 0x86dd);
    assert.equal(p.prefix, 'weft-deny:test/p');
    assert.deepEqual(plain(p.ip), { family: 6, src: 'fd77::1', dst: 'fd77::2', length: 80, proto: 6, srcPort: 33522, dstPort: 9, tcpFlags: 0x02 });
  });

  it('copies the payload out of the datagram, and leaves out what the kernel did not send', () => {
    const datagram = Buffer.from(nfCaptured.nflogTcp4, 'hex');
    const p = decodeNflogPacket(decodeMessages(datagram)[0]!);
    datagram.fill(0);
    assert.equal(p?.payload[0], 0x45);
    const bare: NlMessage = { type: C.NFNL_SUBSYS_ULOG << 8, flags: 0, seq: 0, pid: 0, payload: Buffer.concat([nfgenmsg(C.AF_INET, 3), encodeAttrs([nla.be32(C.NFULA_MARK, 42), nla.be32(C.NFULA_IFINDEX_OUTDEV, 5)])]) };
    assert.deepEqual(plain(decodeNflogPacket(bare)), { group: 3, family: 2, mark: 42, outIfindex: 5, payload: '' });
    assert.equal(decodeNflogPacket({ ...bare, type: CT_NEW }), undefined);
  });
});

// The udp backend's packet logic without a kernel: which peer table the leases make (each inner
// family to the peer's underlay address of the same family), where the pump sends an inner IPv4
// or IPv6 packet, which datagrams it takes, and how it cuts TSO super-packets and merges received
// segments — the last three through the native pump's own code, run on bytes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, formatIP, ipToBytes, parseCidr, parseIP, type IP } from '../../src/net/ip.js';
import type { Lease } from '../../src/store/lease.js';
import { peerTable } from '../../src/backends/udp/peers.js';
import {
  encodeRoutes, pumpCoalesce, pumpRouteFor, pumpSegment, pumpTakesDatagram, ROUTE_RECORD_BYTES, type PumpRoute,
} from '../../src/backends/udp/pump.js';

// ---- packets -------------------------------------------------------------------------------

/** One's-complement sum of the bytes as 16-bit big-endian words, folded (not complemented). */
function sum16(parts: readonly Uint8Array[]): number {
  let sum = 0;
  for (const p of parts) {
    for (let i = 0; i < p.length; i += 2) sum += (p[i]! << 8) + (i + 1 < p.length ? p[i + 1]! : 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function pseudoHeader(src: IP, dst: IP, tcpLength: number): Buffer {
  if (src.family === 4) {
    const b = Buffer.alloc(12);
    ipToBytes(src).copy(b, 0);
    ipToBytes(dst).copy(b, 4);
    b[9] = 6;
    b.writeUInt16BE(tcpLength, 10);
    return b;
  }
  const b = Buffer.alloc(40);
  ipToBytes(src).copy(b, 0);
  ipToBytes(dst).copy(b, 16);
  b.writeUInt32BE(tcpLength, 32);
  b[39] = 6;
  return b;
}

interface TcpOpts {
  readonly src: string;
  readonly dst: string;
  readonly sport?: number;
  readonly dport?: number;
  readonly seq?: number;
  readonly ack?: number;
  /** TCP flags; default ACK. */
  readonly flags?: number;
  readonly payload?: Uint8Array;
  /** IPv6 hop limit / IPv4 TTL. */
  readonly hops?: number;
  readonly flowLabel?: number;
}

const ACK = 0x10;
const PSH = 0x08;
const SYN = 0x02;
const FIN = 0x01;

/** A TCP packet over IPv4 or IPv6 (by the addresses) with correct lengths and checksums. */
function tcpPacket(o: TcpOpts): Buffer {
  const src = parseIP(o.src);
  const dst = parseIP(o.dst);
  const payload = Buffer.from(o.payload ?? new Uint8Array());
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(o.sport ?? 40000, 0);
  tcp.writeUInt16BE(o.dport ?? 7000, 2);
  tcp.writeUInt32BE((o.seq ?? 1000) >>> 0, 4);
  tcp.writeUInt32BE((o.ack ?? 5000) >>> 0, 8);
  tcp[12] = 5 << 4;
  tcp[13] = o.flags ?? ACK;
  tcp.writeUInt16BE(65000, 14);
  const check = ~sum16([pseudoHeader(src, dst, 20 + payload.length), tcp, payload]) & 0xffff;
  tcp.writeUInt16BE(check, 16);
  let ip: Buffer;
  if (src.family === 4) {
    ip = Buffer.alloc(20);
    ip[0] = 0x45;
    ip.writeUInt16BE(20 + 20 + payload.length, 2);
    ip.writeUInt16BE(0x1234, 4);
    ip.writeUInt16BE(0x4000, 6); // DF
    ip[8] = o.hops ?? 64;
    ip[9] = 6;
    ipToBytes(src).copy(ip, 12);
    ipToBytes(dst).copy(ip, 16);
    ip.writeUInt16BE(~sum16([ip]) & 0xffff, 10);
  } else {
    ip = Buffer.alloc(40);
    ip.writeUInt32BE(((6 << 28) | (o.flowLabel ?? 0)) >>> 0, 0);
    ip.writeUInt16BE(20 + payload.length, 4);
    ip[6] = 6;
    ip[7] = o.hops ?? 64;
    ipToBytes(src).copy(ip, 8);
    ipToBytes(dst).copy(ip, 24);
  }
  return Buffer.concat([ip, tcp, payload]);
}

/** An IPv6 packet of any next header (not checksummed: only routing and framing look at it). */
function ipv6Packet(src: string, dst: string, nextHeader: number, payload: number): Buffer {
  const b = Buffer.alloc(40 + payload);
  b.writeUInt32BE(0x60000000, 0);
  b.writeUInt16BE(payload, 4);
  b[6] = nextHeader;
  b[7] = 64;
  ipToBytes(parseIP(src)).copy(b, 8);
  ipToBytes(parseIP(dst)).copy(b, 24);
  return b;
}

function ipv4Packet(src: string, dst: string, payload: number): Buffer {
  const b = Buffer.alloc(20 + payload);
  b[0] = 0x45;
  b.writeUInt16BE(20 + payload, 2);
  b[8] = 64;
  b[9] = 17;
  ipToBytes(parseIP(src)).copy(b, 12);
  ipToBytes(parseIP(dst)).copy(b, 16);
  return b;
}

interface ParsedTcp {
  readonly family: 4 | 6;
  /** IPv4 total length or IPv6 payload length, as the header says. */
  readonly ipLength: number;
  readonly hops: number;
  readonly seq: number;
  readonly flags: number;
  readonly payload: Buffer;
  /** The TCP checksum verifies (with the pseudo-header). */
  readonly checksumOk: boolean;
  /** IPv4 only: the header checksum verifies. */
  readonly ipChecksumOk: boolean;
}

function parseTcp(bytes: Uint8Array): ParsedTcp {
  const b = Buffer.from(bytes);
  const family = (b[0]! >> 4) as 4 | 6;
  const ihl = family === 4 ? (b[0]! & 15) * 4 : 40;
  const src = family === 4 ? parseIP(ipString(b.subarray(12, 16))) : parseIP(ipString(b.subarray(8, 24)));
  const dst = family === 4 ? parseIP(ipString(b.subarray(16, 20))) : parseIP(ipString(b.subarray(24, 40)));
  const tcp = b.subarray(ihl);
  const thl = (tcp[12]! >> 4) * 4;
  return {
    family,
    ipLength: family === 4 ? b.readUInt16BE(2) : b.readUInt16BE(4),
    hops: family === 4 ? b[8]! : b[7]!,
    seq: tcp.readUInt32BE(4),
    flags: tcp[13]!,
    payload: Buffer.from(tcp.subarray(thl)),
    checksumOk: sum16([pseudoHeader(src, dst, tcp.length), tcp]) === 0xffff,
    ipChecksumOk: family === 6 || sum16([b.subarray(0, ihl)]) === 0xffff,
  };
}

function ipString(b: Uint8Array): string {
  if (b.length === 4) return [...b].join('.');
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return words.join(':');
}

function pattern(n: number, seed = 7): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

// ---- leases --------------------------------------------------------------------------------

function lease(o: { subnet: string; ipv6Subnet?: string; publicIP: string; publicIPv6?: string; backendType?: string }): Lease {
  return {
    subnet: parseCidr(o.subnet),
    ...(o.ipv6Subnet !== undefined && { ipv6Subnet: parseCidr(o.ipv6Subnet) }),
    attrs: {
      publicIP: parseIP(o.publicIP),
      publicIPv6: o.publicIPv6 !== undefined ? parseIP(o.publicIPv6) : undefined,
      backendType: o.backendType ?? 'udp',
      backendData: null,
    },
    expiresAt: null,
    revision: 1n,
  };
}

const describeRoutes = (routes: readonly PumpRoute[]): string[] => routes.map((r) => `${formatCidr(r.subnet)} > ${formatIP(r.peerIP)} ${r.peerPort}`);

const DUAL = { ipv4: true, ipv6: true };
const ONLY6 = { ipv4: false, ipv6: true };

describe('udp peer table: each inner family to the peer\'s underlay address of that family', () => {
  it('a dual-stack peer gets its IPv4 subnet to PublicIP and its IPv6 subnet to PublicIPv6', () => {
    const t = peerTable([
      lease({ subnet: '10.244.2.0/24', ipv6Subnet: 'fd10:244:0:2::/64', publicIP: '198.18.0.2', publicIPv6: '2001:2::2' }),
      lease({ subnet: '10.244.3.0/24', ipv6Subnet: 'fd10:244:0:3::/64', publicIP: '198.18.0.3', publicIPv6: '2001:2::3' }),
    ], 8285, DUAL);
    assert.deepEqual(describeRoutes(t.routes), [
      '10.244.2.0/24 > 198.18.0.2 8285', 'fd10:244:0:2::/64 > 2001:2::2 8285',
      '10.244.3.0/24 > 198.18.0.3 8285', 'fd10:244:0:3::/64 > 2001:2::3 8285',
    ]);
    assert.deepEqual(t.problems, []);
    assert.deepEqual(t.skipped, []);
  });

  it('an IPv6-only lease (IPv6 subnet and PublicIP) gets one IPv6 route', () => {
    const t = peerTable([lease({ subnet: 'fd10:244:0:2::/64', ipv6Subnet: 'fd10:244:0:2::/64', publicIP: '2001:2::2', publicIPv6: '2001:2::2' })], 8285, ONLY6);
    assert.deepEqual(describeRoutes(t.routes), ['fd10:244:0:2::/64 > 2001:2::2 8285']);
    // As the store may hand it: subnet IPv6, no separate ipv6Subnet, the address only in publicIP.
    const bare = peerTable([lease({ subnet: 'fd10:244:0:4::/64', publicIP: '2001:2::4' })], 9000, ONLY6);
    assert.deepEqual(describeRoutes(bare.routes), ['fd10:244:0:4::/64 > 2001:2::4 9000']);
  });

  it('a dual-stack peer without PublicIPv6 keeps its IPv4 route; its IPv6 subnet is a problem, the peer not skipped', () => {
    const t = peerTable([lease({ subnet: '10.244.2.0/24', ipv6Subnet: 'fd10:244:0:2::/64', publicIP: '198.18.0.2' })], 8285, DUAL);
    assert.deepEqual(describeRoutes(t.routes), ['10.244.2.0/24 > 198.18.0.2 8285']);
    assert.equal(t.problems.length, 1);
    assert.match(t.problems[0] ?? '', /fd10:244:0:2::\/64 publishes no IPv6 address \(PublicIPv6\)/);
    assert.deepEqual(t.skipped, []);
  });

  it('only the families the network carries: IPv4-only ignores an IPv6 subnet; a lease without an IPv6 subnet keeps IPv4', () => {
    const dual = lease({ subnet: '10.244.2.0/24', ipv6Subnet: 'fd10:244:0:2::/64', publicIP: '198.18.0.2', publicIPv6: '2001:2::2' });
    assert.deepEqual(describeRoutes(peerTable([dual], 8285).routes), ['10.244.2.0/24 > 198.18.0.2 8285']);
    const old = lease({ subnet: '10.244.5.0/24', publicIP: '198.18.0.5' });
    const t = peerTable([old], 8285, DUAL);
    assert.deepEqual(describeRoutes(t.routes), ['10.244.5.0/24 > 198.18.0.5 8285']);
    assert.deepEqual(t.problems, []);
  });

  it('skips peers it cannot route at all, naming why', () => {
    const t = peerTable([
      lease({ subnet: '10.244.2.0/24', ipv6Subnet: 'fd10:244:0:2::/64', publicIP: '198.18.0.2', publicIPv6: '2001:2::2', backendType: 'vxlan' }),
      lease({ subnet: 'fd10:244:0:3::/64', publicIP: '2001:2::3' }),
    ], 8285, { ipv4: true, ipv6: false });
    assert.deepEqual(t.routes, []);
    assert.deepEqual(t.skipped.map((s) => s.subnet), ['10.244.2.0/24', 'fd10:244:0:3::/64']);
    assert.match(t.skipped[0]?.reason ?? '', /runs backend "vxlan", not udp/);
    assert.match(t.skipped[1]?.reason ?? '', /no subnet of this network's address families/);
    assert.deepEqual(t.problems, t.skipped.map((s) => s.reason));
  });
});

describe('udp pump route records', () => {
  it('encodes one 40-byte record per route: families, prefix, port, network and peer', () => {
    const buf = Buffer.from(encodeRoutes([
      { subnet: parseCidr('fd10:244:0:2::/64'), peerIP: parseIP('2001:2::2'), peerPort: 8285 },
      { subnet: parseCidr('10.244.3.0/24'), peerIP: parseIP('198.18.0.3'), peerPort: 8285 },
    ]));
    assert.equal(ROUTE_RECORD_BYTES, 40);
    assert.equal(buf.length, 80);
    assert.deepEqual([...buf.subarray(0, 8)], [6, 64, 0x20, 0x5d, 6, 0, 0, 0]);
    assert.equal(buf.subarray(8, 24).toString('hex'), 'fd100244000000020000000000000000');
    assert.equal(buf.subarray(24, 40).toString('hex'), '20010002000000000000000000000002');
    assert.deepEqual([...buf.subarray(40, 48)], [4, 24, 0x20, 0x5d, 4, 0, 0, 0]);
    assert.equal(buf.subarray(48, 64).toString('hex'), '0af40300' + '00'.repeat(12));
    assert.equal(buf.subarray(64, 80).toString('hex'), 'c6120003' + '00'.repeat(12));
  });
});

describe('udp pump tx lookup (native): where an inner packet goes', () => {
  const routes: PumpRoute[] = [
    { subnet: parseCidr('10.244.2.0/24'), peerIP: parseIP('198.18.0.2'), peerPort: 8285 },
    { subnet: parseCidr('fd10:244:0:2::/64'), peerIP: parseIP('2001:2::2'), peerPort: 8285 },
    { subnet: parseCidr('fd10:244:0:3::/64'), peerIP: parseIP('2001:2::3'), peerPort: 8285 },
    // A covering prefix: the longer one above wins for its own addresses.
    { subnet: parseCidr('fd10:244:0:200::/56'), peerIP: parseIP('2001:2::9'), peerPort: 9999 },
  ];
  const tcp6 = (dst: string) => tcpPacket({ src: 'fd10:244:0:1::2', dst, payload: pattern(10) });

  it('an IPv6 packet goes to the PublicIPv6 of the peer owning its destination, over IPv6', () => {
    assert.deepEqual(pumpRouteFor(routes, tcp6('fd10:244:0:2::2'), true), { address: '2001:2::2', port: 8285 });
    assert.deepEqual(pumpRouteFor(routes, tcp6('fd10:244:0:3:ffff:ffff:ffff:ffff'), true), { address: '2001:2::3', port: 8285 });
    assert.deepEqual(pumpRouteFor(routes, ipv6Packet('fd10:244:0:1::2', 'fd10:244:0:2::7', 58, 8), true), { address: '2001:2::2', port: 8285 });
  });

  it('takes the longest matching IPv6 prefix', () => {
    assert.deepEqual(pumpRouteFor(routes, tcp6('fd10:244:0:2ff::1'), true), { address: '2001:2::9', port: 9999 });
  });

  it('an IPv4 packet behind the dual-stack socket goes to the v4-mapped PublicIP; behind an IPv4 socket to the PublicIP', () => {
    const p = tcpPacket({ src: '10.244.1.2', dst: '10.244.2.9', payload: pattern(10) });
    assert.deepEqual(pumpRouteFor(routes.slice(0, 1), p, false), { address: '198.18.0.2', port: 8285 });
    assert.deepEqual(pumpRouteFor(routes, p, true), { address: '::ffff:198.18.0.2', port: 8285 });
  });

  it('no peer: unowned IPv6 destinations, link-local multicast (the kernel\'s MLD reports), the other family\'s table', () => {
    assert.equal(pumpRouteFor(routes, tcp6('fd10:244:0:4::2'), true), 'noRoute');
    assert.equal(pumpRouteFor(routes, ipv6Packet('fe80::1', 'ff02::16', 0, 36), true), 'noRoute');
    // The IPv6 address 0a f4 02 00 … must not match the IPv4 subnet 10.244.2.0/24.
    assert.equal(pumpRouteFor(routes, tcp6('af4:200::1'), true), 'noRoute');
    assert.equal(pumpRouteFor(routes.slice(1), tcpPacket({ src: '10.244.1.2', dst: '10.244.2.9' }), true), 'noRoute');
  });

  it('malformed: shorter than its family\'s header, or neither IPv4 nor IPv6', () => {
    assert.equal(pumpRouteFor(routes, tcp6('fd10:244:0:2::2').subarray(0, 39), true), 'malformed');
    const v5 = tcp6('fd10:244:0:2::2');
    v5[0] = 0x50;
    assert.equal(pumpRouteFor(routes, v5, true), 'malformed');
    assert.equal(pumpRouteFor(routes, new Uint8Array(), true), 'malformed');
  });

  it('refuses a table the pump cannot use', () => {
    assert.throws(() => pumpRouteFor(routes, tcp6('fd10:244:0:2::2'), false), /an IPv6 peer needs a pump started with IPv6/);
    assert.throws(() => pumpRouteFor([{ subnet: { ip: parseIP('fd10::'), prefix: 129 }, peerIP: parseIP('2001:2::2'), peerPort: 1 }], tcp6('fd10::1'), true), /IPv6 route prefix length must be 0..128/);
    assert.throws(() => pumpRouteFor([{ subnet: parseCidr('fd10::/64'), peerIP: parseIP('2001:2::2'), peerPort: 0 }], tcp6('fd10::1'), true), /port must not be 0/);
  });
});

describe('udp pump rx check (native): one datagram, exactly one IP packet', () => {
  it('takes a whole IPv4 or IPv6 packet', () => {
    assert.equal(pumpTakesDatagram(tcpPacket({ src: 'fd10:244:0:1::2', dst: 'fd10:244:0:2::2', payload: pattern(100) })), true);
    assert.equal(pumpTakesDatagram(ipv6Packet('fd10:244:0:1::2', 'fd10:244:0:2::2', 58, 0)), true);
    assert.equal(pumpTakesDatagram(ipv4Packet('10.244.1.2', '10.244.2.2', 30)), true);
  });

  it('drops an IPv6 datagram whose payload length disagrees with its size, or too short for the header', () => {
    const p = tcpPacket({ src: 'fd10:244:0:1::2', dst: 'fd10:244:0:2::2', payload: pattern(100) });
    assert.equal(pumpTakesDatagram(Buffer.concat([p, Buffer.alloc(1)])), false, 'trailing byte');
    assert.equal(pumpTakesDatagram(p.subarray(0, p.length - 1)), false, 'truncated');
    assert.equal(pumpTakesDatagram(p.subarray(0, 39)), false, 'shorter than the header');
    const jumbo = Buffer.from(p);
    jumbo.writeUInt16BE(0, 4);
    assert.equal(pumpTakesDatagram(jumbo), false, 'payload length 0 (jumbogram)');
    const v7 = Buffer.from(p);
    v7[0] = 0x70;
    assert.equal(pumpTakesDatagram(v7), false, 'version 7');
  });
});

describe('udp pump TSO segmentation (native): a super-packet becomes MSS-sized datagrams', () => {
  const MSS6 = 1500 - 48 - 40 - 20;
  for (const family of [6, 4] as const) {
    it(`TCP over IPv${family}: lengths, sequence numbers, flags and checksums of every segment`, () => {
      const payload = pattern(10_000);
      const [src, dst] = family === 6 ? ['fd10:244:0:1::2', 'fd10:244:0:2::2'] : ['10.244.1.2', '10.244.2.2'];
      const superPacket = tcpPacket({ src, dst, seq: 0xfffff000, flags: ACK | PSH | FIN, payload, hops: 63 });
      const mss = family === 6 ? MSS6 : 1500 - 28 - 20 - 20;
      const segs = pumpSegment(superPacket, mss);
      assert.ok(segs);
      assert.equal(segs.length, Math.ceil(payload.length / mss));
      const parsed = segs.map(parseTcp);
      parsed.forEach((s, i) => {
        const last = i === parsed.length - 1;
        assert.equal(s.family, family);
        assert.equal(s.payload.length, last ? payload.length - mss * i : mss);
        assert.equal(segs[i]!.length, (family === 6 ? 40 : 20) + 20 + s.payload.length);
        assert.equal(s.ipLength, family === 6 ? 20 + s.payload.length : 40 + s.payload.length);
        assert.equal(s.seq, (0xfffff000 + mss * i) >>> 0, 'sequence numbers continue (and wrap)');
        assert.equal(s.flags, last ? ACK | PSH | FIN : ACK, 'PSH and FIN only on the last');
        assert.equal(s.hops, 63);
        assert.ok(s.checksumOk, `segment ${i}: TCP checksum`);
        assert.ok(s.ipChecksumOk, `segment ${i}: IPv4 header checksum`);
      });
      assert.ok(Buffer.concat(parsed.map((s) => s.payload)).equals(payload), 'payload intact, in order');
      if (family === 6) assert.ok(segs.every((s) => s.length + 48 <= 1500), 'every datagram fits the IPv6 underlay');
    });
  }

  it('refuses what is not a well-formed TCP/IPv6 super-packet', () => {
    const p = tcpPacket({ src: 'fd10:244:0:1::2', dst: 'fd10:244:0:2::2', payload: pattern(5000) });
    const hopByHop = Buffer.from(p);
    hopByHop[6] = 0; // an extension header first: TSO never hands one over, and it is not parsed
    assert.equal(pumpSegment(hopByHop, 1392), null);
    assert.equal(pumpSegment(p.subarray(0, p.length - 10), 1392), null, 'payload length disagrees');
    assert.equal(pumpSegment(p, 0), null, 'MSS 0');
    assert.equal(pumpSegment(ipv6Packet('fd10:244:0:1::2', 'fd10:244:0:2::2', 17, 100), 1392), null, 'UDP');
  });
});

describe('udp pump receive coalescing (native): in-order TCP segments merged into one TUN write', () => {
  const MSS = 1392;
  const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
  const VIRTIO_NET_HDR_F_DATA_VALID = 2;
  const GSO_NONE = 0;
  const GSO_TCPV4 = 1;
  const GSO_TCPV6 = 4;
  const flow6 = { src: 'fd10:244:0:1::2', dst: 'fd10:244:0:2::2', sport: 40000, dport: 7000 };
  const run = (n: number, o: Partial<TcpOpts> & { src: string; dst: string }, seq0 = 1000, size = MSS): Buffer[] =>
    Array.from({ length: n }, (_, i) => tcpPacket({ ...o, seq: seq0 + i * size, payload: pattern(size, i) }));

  it('merges one IPv6 flow into a GSO_TCPV6 super-packet with a CHECKSUM_PARTIAL pseudo-header sum', () => {
    const segs = run(5, flow6);
    const writes = pumpCoalesce(segs);
    assert.equal(writes.length, 1);
    const w = writes[0]!;
    assert.equal(w.gsoType, GSO_TCPV6);
    assert.equal(w.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
    assert.equal(w.gsoSize, MSS);
    assert.equal(w.hdrLen, 60);
    assert.equal(w.csumStart, 40);
    assert.equal(w.csumOffset, 16);
    const b = Buffer.from(w.packet);
    assert.equal(b.length, 60 + 5 * MSS);
    assert.equal(b.readUInt16BE(4), 20 + 5 * MSS, 'IPv6 payload length covers the merged payload');
    const payload = Buffer.concat(segs.map((s) => s.subarray(60)));
    assert.ok(b.subarray(60).equals(payload), 'payload intact, in order');
    // The checksum field holds the folded pseudo-header sum, to be finished over the TCP bytes.
    const pseudo = sum16([pseudoHeader(parseIP(flow6.src), parseIP(flow6.dst), 20 + 5 * MSS)]);
    assert.equal(b.readUInt16BE(40 + 16), pseudo);
  });

  it('keeps IPv4 and IPv6 flows apart, even with the same ports', () => {
    const v4 = run(3, { src: '10.244.1.2', dst: '10.244.2.2', sport: 40000, dport: 7000 });
    const v6 = run(3, flow6);
    const writes = pumpCoalesce([v4[0]!, v6[0]!, v4[1]!, v6[1]!, v4[2]!, v6[2]!]);
    assert.deepEqual(writes.map((w) => [w.gsoType, w.packet.length]), [[GSO_TCPV4, 40 + 3 * MSS], [GSO_TCPV6, 60 + 3 * MSS]]);
    assert.ok(parseTcp(writes[0]!.packet).ipChecksumOk, 'merged IPv4 header checksum');
  });

  it('does not merge across an IPv6 hop limit or flow label change, a sequence gap, or another flow', () => {
    const [a, b] = run(2, flow6);
    const hop = tcpPacket({ ...flow6, seq: 1000 + MSS, payload: pattern(MSS, 1), hops: 1 });
    assert.equal(pumpCoalesce([a!, hop]).length, 2, 'hop limit');
    const label = tcpPacket({ ...flow6, seq: 1000 + MSS, payload: pattern(MSS, 1), flowLabel: 0x12345 });
    assert.equal(pumpCoalesce([a!, label]).length, 2, 'flow label');
    const gap = tcpPacket({ ...flow6, seq: 1000 + 2 * MSS, payload: pattern(MSS, 1) });
    assert.equal(pumpCoalesce([a!, gap]).length, 2, 'sequence gap');
    const other = tcpPacket({ ...flow6, dst: 'fd10:244:0:2::3', seq: 1000 + MSS, payload: pattern(MSS, 1) });
    assert.equal(pumpCoalesce([a!, other]).length, 2, 'another destination');
    assert.equal(pumpCoalesce([a!, b!]).length, 1, 'the same two, unchanged, do merge');
  });

  it('a segment that cannot merge (FIN) goes after its flow\'s run; lone packets are written as they are', () => {
    const segs = run(3, flow6);
    const fin = tcpPacket({ ...flow6, seq: 1000 + 3 * MSS, flags: ACK | FIN });
    const icmp = ipv6Packet('fd10:244:0:1::2', 'fd10:244:0:2::2', 58, 8);
    const writes = pumpCoalesce([...segs, fin, icmp]);
    assert.deepEqual(writes.map((w) => w.gsoType), [GSO_TCPV6, GSO_NONE, GSO_NONE]);
    assert.ok(Buffer.from(writes[1]!.packet).equals(fin));
    assert.equal(writes[1]!.flags, VIRTIO_NET_HDR_F_DATA_VALID);
    assert.ok(Buffer.from(writes[2]!.packet).equals(icmp));
  });

  it('writes nothing for a datagram that is not one whole packet', () => {
    const p = tcpPacket({ ...flow6, payload: pattern(100) });
    assert.deepEqual(pumpCoalesce([Buffer.concat([p, Buffer.alloc(3)]), p.subarray(0, 50)]), []);
  });

  it('a SYN between data segments of another flow leaves that flow\'s merge alone', () => {
    const segs = run(4, flow6);
    const syn = tcpPacket({ ...flow6, sport: 40001, seq: 1, flags: SYN });
    const writes = pumpCoalesce([segs[0]!, segs[1]!, syn, segs[2]!, segs[3]!]);
    assert.deepEqual(writes.map((w) => [w.gsoType, w.packet.length]), [[GSO_NONE, syn.length], [GSO_TCPV6, 60 + 4 * MSS]]);
  });
});

// The header parser NFLOG payloads go through: IPv4/IPv6, ports, TCP flags, ICMP, IPv6 extension
// headers, fragments and truncated copies.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseIpPacket, IPPROTO_UDP, TCP_SYN, TCP_ACK } from '../../src/net/packet.js';
import { formatIP } from '../../src/net/ip.js';

const bytes = (h: string): Buffer => Buffer.from(h.replace(/#.*$/gm, '').replace(/\s+/g, ''), 'hex');

function view(h: string): unknown {
  const p = parseIpPacket(bytes(h));
  return p && { ...p, src: formatIP(p.src), dst: formatIP(p.dst) };
}

// IPv4 header: 20 bytes, proto at 9, 10.0.0.1 → 10.0.0.2.
const v4 = (proto: string, totalLen: string, frag = '4000') => `45 00 ${totalLen} 0001 ${frag} 40 ${proto} 0000 0a000001 0a000002`;
// IPv6 header: 40 bytes, next header nh, fd00::1 → fd00::2.
const v6 = (nh: string, payloadLen: string) => `60000000 ${payloadLen} ${nh} 40 fd000000000000000000000000000001 fd000000000000000000000000000002`;

describe('parseIpPacket', () => {
  it('IPv4 TCP: ports and flags', () => {
    assert.deepEqual(view(`${v4('06', '0028')} 1f90 0050 00000001 00000000 50 12 ffff 0000 0000`), {
      family: 4, src: '10.0.0.1', dst: '10.0.0.2', proto: 6, length: 40, srcPort: 8080, dstPort: 80, tcpFlags: TCP_SYN | TCP_ACK,
    });
  });

  it('IPv4 with options: the transport header starts after IHL words', () => {
    const h = `46 00 0020 0001 0000 40 11 0000 0a000001 0a000002 01010100 0035 d431 000c 0000`;
    assert.deepEqual(view(h), { family: 4, src: '10.0.0.1', dst: '10.0.0.2', proto: IPPROTO_UDP, length: 32, srcPort: 53, dstPort: 54321 });
  });

  it('ICMP echo carries its id; other ICMP types only type and code', () => {
    assert.deepEqual((view(`${v4('01', '001c')} 08 00 0000 1234 0001`) as { icmp: unknown }).icmp, { type: 8, code: 0, id: 0x1234 });
    assert.deepEqual((view(`${v4('01', '001c')} 03 03 0000 00000000`) as { icmp: unknown }).icmp, { type: 3, code: 3 });
  });

  it('a later IPv4 fragment has no transport header', () => {
    const p = view(`${v4('06', '0028', '2001')} 1f90 0050`) as Record<string, unknown>;
    assert.equal(p.laterFragment, true);
    assert.equal(p.srcPort, undefined);
  });

  it('IPv6 UDP behind a hop-by-hop header', () => {
    const h = `${v6('00', '0010')} 11 00 0000 00000000   0222 0035 0008 0000`;
    assert.deepEqual(view(h), { family: 6, src: 'fd00::1', dst: 'fd00::2', length: 56, proto: 17, srcPort: 546, dstPort: 53 });
  });

  it('IPv6 first fragment is parsed through the fragment header; later fragments stop there', () => {
    assert.equal((view(`${v6('2c', '0010')} 06 00 0001 00000001  0050 1f90`) as { dstPort: number }).dstPort, 8080);
    const later = view(`${v6('2c', '0010')} 06 00 0011 00000001  0050 1f90`) as Record<string, unknown>;
    assert.equal(later.laterFragment, true);
    assert.equal(later.proto, 6);
    assert.equal(later.dstPort, undefined);
  });

  it('ICMPv6 echo', () => {
    assert.deepEqual((view(`${v6('3a', '0008')} 80 00 0000 abcd 0001`) as { icmp: unknown }).icmp, { type: 128, code: 0, id: 0xabcd });
  });

  it('a copy cut short keeps the addresses and drops what is missing; non-IP input gives undefined', () => {
    assert.deepEqual(view(`${v4('06', '05dc')} 1f`), { family: 4, src: '10.0.0.1', dst: '10.0.0.2', proto: 6, length: 1500 });
    assert.deepEqual(view(`${v4('06', '05dc')} 1f90 0050 0000`), { family: 4, src: '10.0.0.1', dst: '10.0.0.2', proto: 6, length: 1500, srcPort: 8080, dstPort: 80 });
    assert.equal(parseIpPacket(bytes('4500')), undefined);
    assert.equal(parseIpPacket(bytes(v6('06', '0000').slice(0, 40))), undefined);
    assert.equal(parseIpPacket(bytes('0800 4500')), undefined);
    assert.equal(parseIpPacket(Buffer.alloc(0)), undefined);
    assert.equal(parseIpPacket(bytes('41 00 0028 0001 0000 40 06 0000 0a000001 0a000002')), undefined); // IHL 1
  });
});

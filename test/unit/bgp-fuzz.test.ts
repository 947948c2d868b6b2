// Fuzzed decoding: random mutations of valid messages must decode or fail with a BgpError that
// names a NOTIFICATION with a code the RFCs define — never another exception, never a hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MessageFramer, decodeMessage, encodeEndOfRib, encodeKeepalive, encodeNotification, encodeOpen, encodeRouteRefresh, encodeUpdate,
} from '../../src/bgp/codec.js';
import { BgpError } from '../../src/bgp/errors.js';
import { parseCidr, parseIP, parseIPv4 } from '../../src/net/ip.js';

/** mulberry32: small, seeded, reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const seeds: Buffer[] = [
  encodeKeepalive(),
  encodeOpen({
    asn: 65001, holdTime: 90, bgpId: parseIPv4('10.0.0.1'),
    capabilities: [
      { kind: 'multiprotocol', afi: 1, safi: 1 }, { kind: 'multiprotocol', afi: 2, safi: 1 }, { kind: 'route-refresh' }, { kind: 'four-octet-asn', asn: 65001 },
      { kind: 'graceful-restart', restarting: false, restartTime: 120, families: [{ afi: 1, safi: 1, forwardingPreserved: true }, { afi: 2, safi: 1, forwardingPreserved: true }] },
    ],
  }),
  encodeUpdate({
    withdrawn: [parseCidr('10.9.0.0/16')],
    nlri: [parseCidr('10.244.1.0/24'), parseCidr('10.244.2.0/24'), parseCidr('10.0.0.1/32'), parseCidr('0.0.0.0/0')],
    attributes: {
      origin: 0, asPath: [{ type: 'sequence', asns: [65001, 4200000000] }, { type: 'set', asns: [1, 2] }],
      nextHop: parseIPv4('198.18.0.1'), med: 5, localPref: 100, atomicAggregate: true,
      aggregator: { asn: 65001, address: parseIPv4('10.0.0.1') }, communities: [1, 2, 3],
      originatorId: parseIPv4('10.0.0.2'), clusterList: [parseIPv4('10.0.0.3')],
      unknown: [{ flags: 0xc0, code: 99, value: Buffer.from('abcd', 'hex') }],
    },
  }, { fourOctetAs: true }),
  // IPv6 in the multiprotocol attributes: announcements with a 32-byte next hop, withdrawals.
  encodeUpdate({
    withdrawn: [parseCidr('fd00:9::/32'), parseCidr('10.9.0.0/16')],
    nlri: [parseCidr('10.244.1.0/24')],
    ipv6: { nextHop: parseIP('2001:2::1'), linkLocalNextHop: parseIP('fe80::1'), nlri: [parseCidr('fd00:10:244:1::/64'), parseCidr('::/0'), parseCidr('fd00::1/128')] },
    attributes: { origin: 0, asPath: [{ type: 'sequence', asns: [65001] }], nextHop: parseIPv4('198.18.0.1'), localPref: 100 },
  }, { fourOctetAs: true }),
  encodeEndOfRib(),
  encodeEndOfRib('ipv6'),
  encodeNotification(6, 2, Buffer.from('shutdown')),
  encodeRouteRefresh(),
];

function mutate(r: () => number, src: Buffer): Buffer {
  const b = Buffer.from(src);
  const kind = Math.floor(r() * 6);
  const pos = (n: number): number => Math.floor(r() * n);
  switch (kind) {
    case 0: { // flip a few bytes past the marker
      const n = 1 + pos(4);
      for (let i = 0; i < n; i++) b[16 + pos(b.length - 16)] = pos(256);
      return b;
    }
    case 1: // truncate, fixing the length field so only the body is short
      { const cut = b.subarray(0, 19 + pos(b.length - 18)); cut.writeUInt16BE(cut.length, 16); return Buffer.from(cut); }
    case 2: // grow with junk, fixing the length
      { const g = Buffer.concat([b, Buffer.from(Array.from({ length: 1 + pos(40) }, () => pos(256)))]); g.writeUInt16BE(Math.min(g.length, 65535), 16); return g; }
    case 3: // lie in the length field
      b.writeUInt16BE(pos(65536), 16);
      return b;
    case 4: // set a single bit anywhere, marker included
      { const i = pos(b.length); b[i] = (b[i] as number) ^ (1 << pos(8)); return b; }
    default: // a length byte inside the body set to an extreme
      b[19 + pos(Math.max(1, b.length - 19))] = r() < 0.5 ? 0 : 255;
      return b;
  }
}

function classify(err: unknown): void {
  assert.ok(err instanceof BgpError, `non-BGP exception: ${String(err)}`);
  const { code, subcode } = err.notification;
  assert.ok(code >= 1 && code <= 3, `error code ${code}`);
  assert.ok(subcode >= 0 && subcode <= 11, `subcode ${subcode}`);
}

test('fuzz: 30,000 mutated messages decode or yield a typed NOTIFICATION', () => {
  const r = rng(0xb6b);
  const tally = { ok: 0, err: 0 };
  for (let i = 0; i < 30000; i++) {
    const seed = seeds[i % seeds.length] as Buffer;
    let m = mutate(r, seed);
    if (r() < 0.3) m = mutate(r, m);
    for (const fourOctetAs of [true, false]) {
      const d = decodeMessage(m, { fourOctetAs });
      if (d.ok) tally.ok++;
      else { classify(d.error); tally.err++; }
    }
  }
  assert.ok(tally.ok > 0 && tally.err > 0, JSON.stringify(tally));
});

test('fuzz: the framer survives random streams cut into random reads', () => {
  const r = rng(7);
  for (let round = 0; round < 500; round++) {
    const parts: Buffer[] = [];
    for (let i = 0; i < 8; i++) {
      const s = seeds[Math.floor(r() * seeds.length)] as Buffer;
      parts.push(r() < 0.2 ? mutate(r, s) : s);
    }
    const stream = Buffer.concat(parts);
    const f = new MessageFramer();
    let at = 0;
    let failed = false;
    while (at < stream.length && !failed) {
      const n = 1 + Math.floor(r() * 64);
      try {
        for (const m of f.push(stream.subarray(at, at + n))) {
          const d = decodeMessage(m, { fourOctetAs: true });
          if (!d.ok) classify(d.error);
        }
      } catch (err) {
        classify(err);
        failed = true;
      }
      at += n;
    }
    if (!failed) assert.ok(f.buffered < 4096);
  }
});

test('fuzz: fully random bytes behind a valid header', () => {
  const r = rng(42);
  for (let i = 0; i < 20000; i++) {
    const len = 19 + Math.floor(r() * 200);
    const b = Buffer.alloc(len, 0xff);
    b.writeUInt16BE(len, 16);
    b[18] = 1 + Math.floor(r() * 5);
    for (let j = 19; j < len; j++) b[j] = Math.floor(r() * 256);
    const d = decodeMessage(b, { fourOctetAs: r() < 0.5 });
    if (!d.ok) classify(d.error);
  }
});

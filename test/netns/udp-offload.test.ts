// The udp backend's offload path on the real kernel: TCP super-packets from the TUN device are cut
// into MTU-sized datagrams (sent with UDP GSO), and on receive the segments of a flow are merged
// back into super-packets written with a virtio_net_hdr. Checks that the kernel really hands over
// and accepts super-packets (the pump's counters), that data arrives intact, and that the wire
// format stays flannel's — one IPv4 packet per datagram — by pairing an offloading pump with a
// classic per-packet one, which drops anything else as malformed.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { createUdpBackend, type UdpBackend } from '../../src/backends/udp/udp.js';
import { assertClean, statsOf } from './udp-stats.js';
import { runInNetns } from '../../src/netns/index.js';
import { UdpTopology } from '../../src/lab/udp-topology.js';

const MTU = 1500 - 28;
const BYTES = 16_000_000;

/** One metrics registry per host, as each weftd has its own. */
const registries = [new Registry(), new Registry()];

async function bringUp(topo: UdpTopology, offload: readonly boolean[]): Promise<UdpBackend[]> {
  const backends: UdpBackend[] = [];
  try {
    for (const h of topo.hosts) {
      const b = createUdpBackend({ Port: 8285 }, { offload: offload[h.index - 1] ?? true });
      backends.push(b);
      const registry = registries[h.index - 1];
      assert.ok(registry);
      const prep = await b.prepare({ ...h.context(), registry });
      h.setPodMtu(prep.mtu);
      await b.activate(h.subnet);
    }
    for (const [i, h] of topo.hosts.entries()) await backends[i]?.reconcile(topo.peersOf(h.index));
    return backends;
  } catch (err) {
    for (const b of backends) await b.close({ keepDataplane: false }).catch(() => undefined);
    throw err;
  }
}


describe('udp backend offloads (TSO from the TUN, GSO/GRO on the socket, merged TUN writes)', () => {
  const topo = new UdpTopology(2);
  let backends: UdpBackend[] = [];
  after(async () => {
    for (const b of backends) await b.close({ keepDataplane: false }).catch(() => undefined);
    topo.destroy();
  });

  it('both ends offloading: super-packets both ways through the pump, data intact', async () => {
    backends = await bringUp(topo, [true, true]);
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const tcp = await topo.tcpTransfer(h1, h2, BYTES);
    assert.ok(tcp.ok, `TCP transfer intact: ${tcp.detail}`);
    const back = await topo.tcpTransfer(h2, h1, BYTES / 4);
    assert.ok(back.ok, `reverse TCP transfer intact: ${back.detail}`);
    const [s1, s2] = [statsOf(backends[0]), statsOf(backends[1])];
    assertClean(s1, 'host 1');
    assertClean(s2, 'host 2');
    // Sender: the kernel handed the pump TSO super-packets of many segments each.
    assert.ok(s1.txGsoPackets > 0, `host 1 read no super-packets: ${JSON.stringify(s1)}`);
    assert.ok(s1.txGsoSegments / s1.txGsoPackets > 4, `segments per super-packet: ${s1.txGsoSegments / s1.txGsoPackets}`);
    // Every data byte of the transfer left as MTU-sized datagrams.
    assert.ok(s1.txPackets >= BYTES / MTU, `datagrams sent ${s1.txPackets}`);
    // Receiver: UDP GRO joined datagrams, and the pump merged them into fewer, larger TUN writes.
    assert.ok(s2.rxGroBatches > 0, `host 2 saw no GRO batches: ${JSON.stringify(s2)}`);
    assert.ok(s2.rxTunGsoWrites > 0, `host 2 merged nothing: ${JSON.stringify(s2)}`);
    assert.ok(s2.rxPackets / s2.rxTunWrites > 4, `packets per TUN write: ${s2.rxPackets / s2.rxTunWrites}`);
    assert.ok(s2.rxBytes >= BYTES, `bytes written to the TUN ${s2.rxBytes}`);
    // The same counters on weftd's /metrics registry.
    const exposed = await registries[1]?.getSingleMetricAsString('weft_udp_rx_tun_gso_writes_total');
    assert.match(exposed ?? '', new RegExp(`^weft_udp_rx_tun_gso_writes_total ${statsOf(backends[1]).rxTunGsoWrites}$`, 'm'));
  });

  it('keeps TCP intact through loss: gaps, retransmissions and SACK-driven segments break merges where they must', async () => {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    // Loss on both sides of the tunnel: inner super-packets on their way into host 1's TUN, and
    // GSO datagram batches arriving at host 2's socket (either way, holes in a flow's sequence).
    const rules = (ns: string, hook: string, match: string, permille: number): void => {
      const script = `table ip wup_loss {\n chain c {\n  type filter hook ${hook} priority 0;\n  ${match} numgen random mod 1000 < ${permille} counter drop\n }\n}\n`;
      const r = runInNetns(ns, ['nft', '-f', '-'], { input: script });
      assert.equal(r.status, 0, r.stderr);
    };
    const dropped = (ns: string): number => {
      const r = runInNetns(ns, ['nft', '-j', 'list', 'table', 'ip', 'wup_loss']);
      const m = /"counter":\s*\{\s*"packets":\s*(\d+)/.exec(r.stdout);
      return Number(m?.[1] ?? 0);
    };
    rules(h1.ns.name, 'forward', `iifname "${h1.podIface}" ip protocol tcp`, 20);
    rules(h2.ns.name, 'input', 'udp dport 8285', 20);
    try {
      // Offloads make the packets few (a super-packet is one packet to the rules), so a 2 %
      // draw may miss every one of a transfer's: transfer again until the rules have bitten.
      for (let round = 1; ; round++) {
        const tcp = await topo.tcpTransfer(h1, h2, BYTES / 4);
        assert.ok(tcp.ok, `lossy TCP transfer intact (round ${round}): ${tcp.detail}`);
        if (dropped(h1.ns.name) + dropped(h2.ns.name) > 0) break;
        assert.ok(round < 8, 'the loss rules dropped something in 8 transfers');
      }
      assertClean(statsOf(backends[0]), 'host 1');
      assertClean(statsOf(backends[1]), 'host 2');
    } finally {
      for (const h of [h1, h2]) runInNetns(h.ns.name, ['nft', 'delete', 'table', 'ip', 'wup_loss']);
    }
  });

  it('an offloading pump talks to a classic one: every datagram is a single packet no larger than the MTU', async () => {
    for (const b of backends.splice(0)) await b.close({ keepDataplane: false });
    backends = await bringUp(topo, [true, false]);
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const tcp = await topo.tcpTransfer(h1, h2, BYTES);
    assert.ok(tcp.ok, `offload → classic TCP transfer intact: ${tcp.detail}`);
    const back = await topo.tcpTransfer(h2, h1, BYTES / 4);
    assert.ok(back.ok, `classic → offload TCP transfer intact: ${back.detail}`);
    const [s1, s2] = [statsOf(backends[0]), statsOf(backends[1])];
    assertClean(s1, 'host 1 (offload)');
    // The classic receiver reads one datagram per packet (its socket has no GRO, so the kernel
    // splits any GSO send at its segment size) and drops any datagram whose IPv4 length is not
    // the datagram's length: none were dropped.
    assertClean(s2, 'host 2 (classic)');
    assert.ok(s1.txGsoPackets > 0, 'host 1 still sent super-packets as GSO batches');
    assert.equal(s2.rxTunGsoWrites, 0);
    assert.equal(s2.rxTunWrites, s2.rxPackets);
    assert.ok(s2.rxBytes >= BYTES);
    assert.ok(s2.rxBytes / s2.rxPackets <= MTU, `mean datagram ${s2.rxBytes / s2.rxPackets} bytes`);
  });
});

// Throughput of the udp backend next to a hand-built kernel vxlan path between the same two host
// namespaces (same underlay, same containers), in one run: the offloading pump (the default), the
// classic per-packet pump, then vxlan. Prints the figures and the pump's offload counters; asserts
// only that traffic flowed and that the offload path really moved super-packets, since throughput
// depends on the machine and its load. `npm run bench -- udp` repeats this for a results table.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createUdpBackend, type PumpStats, type UdpBackend } from '../../src/agent/backends/udp/index.js';
import { UdpTopology, type TestHost } from './udp-topology.js';

const SECONDS = 3;

const gbit = (bps: number): string => `${(bps / 1e9).toFixed(2)} Gbit/s`;

/** Runs iperf3 over udp backends on both hosts; returns bits/s and each host's pump counters. */
async function udpRun(topo: UdpTopology, h1: TestHost, h2: TestHost, offload: boolean): Promise<{ bps: number; sender: PumpStats; receiver: PumpStats }> {
  const backends: UdpBackend[] = [];
  try {
    for (const h of [h1, h2]) {
      const b = createUdpBackend({ Port: 8285 }, { offload });
      backends.push(b);
      const prep = await b.prepare(h.context());
      h.setPodMtu(prep.mtu);
      await b.activate(h.subnet);
      await b.reconcile(topo.peersOf(h.index));
    }
    const r = await topo.iperf(h1, h2, SECONDS);
    const [sender, receiver] = backends.map((b) => b.stats());
    assert.ok(sender && receiver);
    return { bps: r.bitsPerSecond, sender, receiver };
  } finally {
    for (const b of backends) await b.close({ keepDataplane: false });
  }
}

describe('udp backend throughput vs kernel vxlan', () => {
  const topo = new UdpTopology(2);
  after(() => topo.destroy());

  it(`iperf3 TCP ${SECONDS}s container → container: udp (offload), udp (classic), vxlan`, async () => {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const fast = await udpRun(topo, h1, h2, true);
    const classic = await udpRun(topo, h1, h2, false);
    topo.buildKernelVxlan(h1, h2);
    topo.buildKernelVxlan(h2, h1);
    let vxlan: number;
    try {
      vxlan = (await topo.iperf(h1, h2, SECONDS)).bitsPerSecond;
    } finally {
      topo.removeKernelVxlan(h1);
      topo.removeKernelVxlan(h2);
    }
    const s = fast.sender;
    const r = fast.receiver;
    console.log(`offload counters: ${s.txGsoPackets} super-packets read (${(s.txGsoSegments / s.txGsoPackets).toFixed(1)} segments each), ` +
      `${r.rxGroBatches} GRO receives (${(r.rxGroSegments / r.rxGroBatches).toFixed(1)} datagrams each), ` +
      `${r.rxTunWrites} TUN writes (${(r.rxPackets / r.rxTunWrites).toFixed(1)} packets each, ${r.rxTunGsoWrites} merged)`);
    console.log(`udp offload: ${gbit(fast.bps)}  udp classic: ${gbit(classic.bps)}  vxlan: ${gbit(vxlan)}  ` +
      `offload/vxlan: ${(fast.bps / vxlan).toFixed(2)}  classic/vxlan: ${(classic.bps / vxlan).toFixed(2)}`);
    assert.ok(fast.bps > 0 && classic.bps > 0 && vxlan > 0);
    assert.ok(s.txGsoPackets > 0 && r.rxTunGsoWrites > 0, 'the offload path moved super-packets');
    assert.equal(classic.sender.txGsoPackets, 0);
  });
});

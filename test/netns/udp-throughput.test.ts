// Throughput of the udp backend next to a hand-built kernel vxlan path between the same two host
// namespaces (same underlay, same containers). Prints the figures; asserts only that traffic
// flowed, since throughput depends on the machine and its load.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createUdpBackend } from '../../src/agent/backends/udp/index.js';
import { UdpTopology, type TestHost } from './udp-topology.js';

const SECONDS = 3;

/** Flannel-style vxlan by hand: VTEP address subnet.0/32, the peer's subnet via its .0 onlink. */
function buildVxlan(self: TestHost, peer: TestHost): void {
  const nl = self.nl;
  nl.createVxlan({ name: 'wup-vx', vni: 1, port: 8472, local: self.publicIP, dev: 'eth0', learning: false, mtu: 1450 });
  nl.setLink('wup-vx', { up: true });
  nl.addAddress('wup-vx', { ip: self.subnet.ip, prefix: 32 });
  nl.appendFdb({ link: 'wup-vx', mac: '00:00:00:00:00:00', dst: peer.publicIP });
  nl.addRoute({ dst: peer.subnet, gateway: peer.subnet.ip, oif: 'wup-vx', onlink: true });
}

const mbit = (bps: number): string => `${(bps / 1e9).toFixed(2)} Gbit/s`;

describe('udp backend throughput vs kernel vxlan', () => {
  const topo = new UdpTopology(2);
  after(() => topo.destroy());

  it(`iperf3 TCP ${SECONDS}s container → container, udp then vxlan`, async () => {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const backends = [createUdpBackend({ Port: 8285 }), createUdpBackend({ Port: 8285 })];
    let udp: { bitsPerSecond: number };
    try {
      for (const [i, h] of [h1, h2].entries()) {
        const b = backends[i];
        assert.ok(b);
        const prep = await b.prepare(h.context());
        h.setPodMtu(prep.mtu);
        await b.activate(h.subnet);
        await b.reconcile(topo.peersOf(h.index));
      }
      udp = await topo.iperf(h1, h2, SECONDS);
      const stats = backends[0]?.stats();
      console.log(`udp pump host1 counters: ${JSON.stringify(stats)}`);
    } finally {
      for (const b of backends) await b.close({ keepDataplane: false });
    }
    buildVxlan(h1, h2);
    buildVxlan(h2, h1);
    h1.setPodMtu(1450);
    h2.setPodMtu(1450);
    const vxlan = await topo.iperf(h1, h2, SECONDS);
    const ratio = udp.bitsPerSecond / vxlan.bitsPerSecond;
    console.log(`udp: ${mbit(udp.bitsPerSecond)}  vxlan: ${mbit(vxlan.bitsPerSecond)}  udp/vxlan: ${ratio.toFixed(2)}`);
    assert.ok(udp.bitsPerSecond > 0 && vxlan.bitsPerSecond > 0);
  });
});

// The udp backend on the real kernel: three hosts on an underlay bridge, a container on each,
// traffic between containers through weft-udp0 and the native pump. See udp-topology.ts.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ipJson } from '../../src/netns/testing.js';
import { createUdpBackend, UDP_DEVICE, type UdpBackend } from '../../src/backends/udp/udp.js';
import { UdpTopology } from '../../src/lab/udp-topology.js';

interface IpLink { ifname: string; ifindex: number; mtu: number; flags: string[]; linkinfo?: { info_kind?: string } }
interface IpAddr { addr_info: { family: string; local: string; prefixlen: number }[] }
interface IpRoute { dst: string; dev: string }

describe('udp backend across three hosts', () => {
  let topo: UdpTopology;
  const backends = new Map<number, UdpBackend>();

  before(async () => {
    topo = new UdpTopology(3);
    for (const h of topo.hosts) {
      const b = createUdpBackend({ Port: 8285 });
      backends.set(h.index, b);
      const prep = await b.prepare(h.context());
      assert.equal(prep.mtu, 1500 - 28);
      assert.equal(prep.backendData, null);
      h.setPodMtu(prep.mtu);
      await b.activate(h.subnet);
    }
  });

  after(async () => {
    for (const b of backends.values()) await b.close({ keepDataplane: false }).catch(() => undefined);
    topo?.destroy();
  });

  const backend = (i: number): UdpBackend => {
    const b = backends.get(i);
    assert.ok(b);
    return b;
  };

  it('puts the TUN device, its address and the Network route in the kernel', () => {
    for (const h of topo.hosts) {
      const [link] = ipJson<IpLink[]>(h.ns.name, ['-d', 'link', 'show', UDP_DEVICE]);
      assert.ok(link, `host ${h.index} has ${UDP_DEVICE}`);
      assert.equal(link.mtu, 1472);
      assert.ok(link.flags.includes('UP'));
      assert.equal(link.linkinfo?.info_kind, 'tun');
      const [addrs] = ipJson<IpAddr[]>(h.ns.name, ['addr', 'show', UDP_DEVICE]);
      assert.deepEqual(addrs?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), [`10.244.${h.index}.0/16`]);
      const routes = ipJson<IpRoute[]>(h.ns.name, ['route', 'show', 'dev', UDP_DEVICE]);
      assert.ok(routes.some((r) => r.dst === '10.244.0.0/16'), JSON.stringify(routes));
    }
  });

  it('carries ping and TCP between containers once peers are reconciled, and the counters move', async () => {
    for (const h of topo.hosts) {
      const report = await backend(h.index).reconcile(topo.peersOf(h.index));
      assert.deepEqual(report, { repairs: 2, removals: 0, problems: [], skipped: [] });
    }
    const [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    const before1 = backend(1).stats();
    assert.ok(before1);
    assert.ok(topo.ping(h1, h2.podIP, 3), 'container 1 → container 2');
    assert.ok(topo.ping(h3, h1.podIP), 'container 3 → container 1');
    assert.ok(topo.ping(h2, h3.podIP), 'container 2 → container 3');
    const tcp = await topo.tcpTransfer(h1, h3, 2_000_000);
    assert.ok(tcp.ok, `TCP transfer intact: ${tcp.detail}`);
    const after1 = backend(1).stats();
    assert.ok(after1);
    assert.ok(after1.txPackets >= before1.txPackets + 3 + 1000, `tx ${before1.txPackets} → ${after1.txPackets}`);
    assert.ok(after1.rxPackets >= before1.rxPackets + 3, `rx ${before1.rxPackets} → ${after1.rxPackets}`);
    assert.ok(after1.txBytes > before1.txBytes + 2_000_000);
    assert.equal(after1.tunErrors, 0);
    assert.equal(after1.dropMalformed, 0);
  });

  it('a second reconcile with the same peers changes nothing', async () => {
    assert.deepEqual(await backend(1).reconcile(topo.peersOf(1)), { repairs: 0, removals: 0, problems: [], skipped: [] });
  });

  it('route table updates take effect: a removed peer is unreachable and counted, re-adding it restores traffic', async () => {
    const [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    const report = await backend(1).reconcile([h3.lease()]);
    assert.deepEqual(report, { repairs: 0, removals: 1, problems: [], skipped: [] });
    const drops = backend(1).stats()?.dropNoRoute ?? 0;
    assert.equal(topo.ping(h1, h2.podIP), false, 'host 2 was removed from host 1 table');
    assert.ok((backend(1).stats()?.dropNoRoute ?? 0) > drops, 'the pump counted the unroutable packet');
    assert.ok(topo.ping(h1, h3.podIP), 'host 3 is still routed');
    assert.deepEqual(await backend(1).reconcile(topo.peersOf(1)), { repairs: 1, removals: 0, problems: [], skipped: [] });
    assert.ok(topo.ping(h1, h2.podIP), 'host 2 is reachable again');
  });

  it('reports peers on another backend as problems instead of routing them', async () => {
    const [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    const report = await backend(1).reconcile([h2.lease('vxlan'), h3.lease()]);
    assert.equal(report.problems.length, 1);
    assert.match(report.problems[0] ?? '', /10\.244\.2\.0\/24.*vxlan/);
    assert.deepEqual(report.skipped, [{ subnet: '10.244.2.0/24', reason: report.problems[0] }]);
    assert.equal(topo.ping(h1, h2.podIP), false);
    await backend(1).reconcile(topo.peersOf(1));
  });

  it('repairs a deleted address and Network route', async () => {
    const h1 = topo.host(1);
    h1.nl.deleteAddress(UDP_DEVICE, { ip: h1.subnet.ip, prefix: 16 });
    assert.equal(ipJson<IpRoute[]>(h1.ns.name, ['route', 'show', 'dev', UDP_DEVICE]).length, 0);
    const report = await backend(1).reconcile(topo.peersOf(1));
    assert.equal(report.repairs, 1, 'the address (its prefix route comes with it)');
    assert.ok(ipJson<IpRoute[]>(h1.ns.name, ['route', 'show', 'dev', UDP_DEVICE]).some((r) => r.dst === '10.244.0.0/16'));
    assert.ok(topo.ping(h1, topo.host(2).podIP));
  });

  it('survives an agent restart with keepDataplane: the device persists and is re-attached', async () => {
    const h1 = topo.host(1);
    const [before] = ipJson<IpLink[]>(h1.ns.name, ['link', 'show', UDP_DEVICE]);
    await backend(1).close({ keepDataplane: true });
    const [kept] = ipJson<IpLink[]>(h1.ns.name, ['link', 'show', UDP_DEVICE]);
    assert.equal(kept?.ifindex, before?.ifindex, 'device kept while no agent runs');
    assert.equal(topo.ping(h1, topo.host(2).podIP), false, 'no pump, no tunnel');
    const restarted = createUdpBackend({ Port: 8285 });
    backends.set(1, restarted);
    await restarted.prepare(h1.context());
    await restarted.activate(h1.subnet);
    const report = await restarted.reconcile(topo.peersOf(1));
    assert.equal(report.problems.length, 0);
    const [after] = ipJson<IpLink[]>(h1.ns.name, ['link', 'show', UDP_DEVICE]);
    assert.equal(after?.ifindex, before?.ifindex, 'the same device was re-attached');
    assert.ok(topo.ping(h1, topo.host(2).podIP, 2));
  });

  it('refuses a device of the wrong kind under its name', async () => {
    const h3 = topo.host(3);
    await backend(3).close({ keepDataplane: false });
    h3.nl.createBridge({ name: UDP_DEVICE });
    try {
      const b = createUdpBackend({ Port: 8285 });
      await assert.rejects(b.prepare(h3.context()), /weft-udp0 exists but is a bridge device/);
    } finally {
      h3.nl.deleteLink(UDP_DEVICE);
    }
  });

  it('close() without keepDataplane removes the device and frees the port', async () => {
    const h2 = topo.host(2);
    await backend(2).close({ keepDataplane: false });
    assert.deepEqual(ipJson<IpLink[]>(h2.ns.name, ['link', 'show']).filter((l) => l.ifname === UDP_DEVICE), []);
    // The socket was closed: a new backend can bind the same port again.
    const again = createUdpBackend({ Port: 8285 });
    await again.prepare(h2.context());
    await again.close({ keepDataplane: false });
    assert.deepEqual(ipJson<IpLink[]>(h2.ns.name, ['link', 'show']).filter((l) => l.ifname === UDP_DEVICE), []);
  });
});

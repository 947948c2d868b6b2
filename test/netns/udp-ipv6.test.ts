// The udp backend carrying IPv6 pods on the real kernel: a dual-stack topology (three hosts,
// IPv4 and IPv6 underlay, containers with both families) and an IPv6-only one. Checks the TUN's
// IPv6 side (address, Network route with the IPv6 tunnel's MTU, IPv6 enabled), that each inner
// family rides the underlay of its own family (nftables counters on the receiving host), that
// TCP over IPv6 goes through the offloads intact (TSO6 in, GSO_TCPV6 merges out), and that an
// offloading pump and a classic one still exchange one IPv6 packet per datagram.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ipJson } from '../../src/netns/testing.js';
import { runInNetns } from '../../src/netns/index.js';
import { parseCidr } from '../../src/net/ip.js';
import { createUdpBackend, UDP_DEVICE, type UdpBackend } from '../../src/backends/udp/udp.js';
import { assertClean, statsOf } from './udp-stats.js';
import { UdpTopology, type TestHost } from '../../src/lab/udp-topology.js';

interface IpLink { ifname: string; ifindex: number; mtu: number; flags: string[] }
interface IpAddr { addr_info: { family: string; local: string; prefixlen: number; scope: string }[] }
interface IpRoute { dst: string; dev: string; protocol?: string; prefsrc?: string; metrics?: { mtu?: number }[] }

const IPV6_NETWORK = 'fd10:244::/56';

async function bringUp(topo: UdpTopology, offload: readonly boolean[] = []): Promise<UdpBackend[]> {
  const backends: UdpBackend[] = [];
  try {
    for (const h of topo.hosts) {
      const b = createUdpBackend({ Port: 8285 }, { offload: offload[h.index - 1] ?? true });
      backends.push(b);
      const prep = await b.prepare(h.context());
      h.setPodMtu(prep.mtu);
      await b.activate(h.subnet, h.subnet6);
    }
    for (const [i, h] of topo.hosts.entries()) {
      const report = await backends[i]!.reconcile(topo.peersOf(h.index));
      assert.deepEqual(report.problems, []);
    }
    return backends;
  } catch (err) {
    for (const b of backends) await b.close({ keepDataplane: false }).catch(() => undefined);
    throw err;
  }
}


function tunRoutes6(h: TestHost): IpRoute[] {
  return ipJson<IpRoute[]>(h.ns.name, ['-6', 'route', 'show', 'dev', UDP_DEVICE]);
}

/** Global addresses of a family on the TUN device. */
function tunAddresses(h: TestHost, family: 'inet' | 'inet6'): string[] {
  const [a] = ipJson<IpAddr[]>(h.ns.name, ['addr', 'show', UDP_DEVICE]);
  return (a?.addr_info ?? []).filter((x) => x.family === family && x.scope === 'global').map((x) => `${x.local}/${x.prefixlen}`);
}

/** The pump's socket as ss shows it: `*:8285` for the dual-stack [::] socket, `0.0.0.0:8285` for IPv4. */
function listening(h: TestHost): string[] {
  const r = runInNetns(h.ns.name, ['ss', '-H', '-uln', 'sport = :8285']);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[3] ?? '');
}

/**
 * Counts tunnel datagrams arriving at a host by outer family (nftables, inside the host's
 * namespace). Packets as the input hook sees them: GRO may have joined several datagrams into one.
 */
class OuterCounter {
  constructor(private readonly h: TestHost) {
    const script = 'table inet wu6count {\n chain in {\n  type filter hook input priority -10;\n  meta nfproto ipv4 udp dport 8285 counter\n  meta nfproto ipv6 udp dport 8285 counter\n }\n}\n';
    const r = runInNetns(h.ns.name, ['nft', '-f', '-'], { input: script });
    assert.equal(r.status, 0, r.stderr);
  }

  read(): { v4: number; v6: number; v4Bytes: number; v6Bytes: number } {
    const r = runInNetns(this.h.ns.name, ['nft', '-j', 'list', 'chain', 'inet', 'wu6count', 'in']);
    assert.equal(r.status, 0, r.stderr);
    const counts = [...r.stdout.matchAll(/"counter":\s*\{\s*"packets":\s*(\d+),\s*"bytes":\s*(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])] as const);
    return { v4: counts[0]?.[0] ?? NaN, v6: counts[1]?.[0] ?? NaN, v4Bytes: counts[0]?.[1] ?? NaN, v6Bytes: counts[1]?.[1] ?? NaN };
  }

  remove(): void {
    runInNetns(this.h.ns.name, ['nft', 'delete', 'table', 'inet', 'wu6count']);
  }
}

describe('udp backend, dual-stack: IPv4 pods over the IPv4 underlay, IPv6 pods over the IPv6 underlay', { timeout: 120_000 }, () => {
  let topo: UdpTopology;
  let backends: UdpBackend[] = [];
  const backend = (i: number): UdpBackend => {
    const b = backends[i - 1];
    assert.ok(b);
    return b;
  };

  before(async () => {
    topo = new UdpTopology(3, { prefix: 'wu6', ipv6: 'dual' });
    backends = await bringUp(topo);
  });
  after(async () => {
    for (const b of backends) await b.close({ keepDataplane: false }).catch(() => undefined);
    topo?.destroy();
  });

  it('prepares both families: pods at the IPv6 tunnel\'s MTU, the device at IPv4\'s, the IPv6 route at IPv6\'s', async () => {
    const h1 = topo.host(1);
    // prepare() again on a prepared backend answers the same preparation.
    assert.deepEqual(await backend(1).prepare(h1.context()), { backendData: null, mtu: 1500 - 48, ipv6Mtu: 1500 - 48 });
    for (const h of topo.hosts) {
      const [link] = ipJson<IpLink[]>(h.ns.name, ['link', 'show', UDP_DEVICE]);
      assert.equal(link?.mtu, 1500 - 28);
      assert.deepEqual(tunAddresses(h, 'inet'), [`10.244.${h.index}.0/16`]);
      assert.deepEqual(tunAddresses(h, 'inet6'), [`fd10:244:0:${h.index}::/128`]);
      const route = tunRoutes6(h).find((r) => r.dst === IPV6_NETWORK);
      assert.ok(route, JSON.stringify(tunRoutes6(h)));
      assert.equal(route.protocol, '87');
      assert.equal(route.prefsrc, `fd10:244:0:${h.index}::`);
      assert.equal(route.metrics?.[0]?.mtu, 1500 - 48);
      const sysctl = runInNetns(h.ns.name, ['sysctl', '-n', `net.ipv6.conf.${UDP_DEVICE}.disable_ipv6`]);
      assert.equal(sysctl.stdout.trim(), '0');
      assert.deepEqual(listening(h), ['*:8285'], 'one dual-stack socket');
    }
  });

  it('pings both families between every pair of containers, each over the underlay of its family', () => {
    const [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    const counter = new OuterCounter(h2);
    try {
      const c0 = counter.read();
      assert.ok(topo.ping(h1, h2.podIP6!, 3), 'container 1 → container 2 over IPv6');
      const c1 = counter.read();
      assert.ok(c1.v6 - c0.v6 >= 3, `IPv6 pings arrived over the IPv6 underlay: ${JSON.stringify([c0, c1])}`);
      assert.equal(c1.v4, c0.v4, 'and nothing over IPv4');
      assert.ok(topo.ping(h1, h2.podIP, 3), 'container 1 → container 2 over IPv4');
      const c2 = counter.read();
      assert.ok(c2.v4 - c1.v4 >= 3, `IPv4 pings arrived over the IPv4 underlay: ${JSON.stringify([c1, c2])}`);
      assert.equal(c2.v6, c1.v6, 'and nothing over IPv6');
    } finally {
      counter.remove();
    }
    for (const [a, b] of [[h2, h3], [h3, h1], [h2, h1], [h3, h2], [h1, h3]] as const) {
      assert.ok(topo.ping(a, b.podIP6!), `container ${a.index} → container ${b.index} over IPv6`);
      assert.ok(topo.ping(a, b.podIP), `container ${a.index} → container ${b.index} over IPv4`);
    }
  });

  it('the host itself reaches remote pods over IPv6, from its TUN address (the route\'s src), and back', () => {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const r = runInNetns(h1.ns.name, ['ping', '-c', '2', '-i', '0.2', '-W', '1', h2.podIP6!]);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(topo.ping(h2, 'fd10:244:0:1::'), 'container 2 → host 1\'s TUN address');
  });

  it('carries TCP over IPv6 intact through the offloads (TSO6 super-packets in, GSO_TCPV6 merges out), and IPv4 beside it', async () => {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const [s1, s2] = [statsOf(backend(1)), statsOf(backend(2))];
    const tcp = await topo.tcpTransfer(h1, h2, 8_000_000, 6);
    assert.ok(tcp.ok, `TCP over IPv6 intact: ${tcp.detail}`);
    const [t1, t2] = [statsOf(backend(1)), statsOf(backend(2))];
    assert.ok(t1.txGsoPackets > s1.txGsoPackets, `host 1 read IPv6 super-packets: ${JSON.stringify(t1)}`);
    assert.ok((t1.txGsoSegments - s1.txGsoSegments) / (t1.txGsoPackets - s1.txGsoPackets) > 4, 'segments per super-packet');
    assert.ok(t2.rxTunGsoWrites > s2.rxTunGsoWrites, `host 2 merged IPv6 segments: ${JSON.stringify(t2)}`);
    assert.ok(t2.rxBytes - s2.rxBytes >= 8_000_000);
    const back = await topo.tcpTransfer(h2, h1, 2_000_000, 6);
    assert.ok(back.ok, `reverse TCP over IPv6 intact: ${back.detail}`);
    const v4 = await topo.tcpTransfer(h1, topo.host(3), 2_000_000, 4);
    assert.ok(v4.ok, `TCP over IPv4 intact: ${v4.detail}`);
    for (const h of topo.hosts) assertClean(statsOf(backend(h.index)), `host ${h.index}`);
  });

  it('a second reconcile with the same peers changes nothing', async () => {
    assert.deepEqual(await backend(1).reconcile(topo.peersOf(1)), { repairs: 0, removals: 0, problems: [], skipped: [] });
  });

  it('a peer publishing no PublicIPv6 keeps its IPv4 tunnel; its IPv6 subnet is reported and unreachable', async () => {
    const [h1, h2, h3] = [topo.host(1), topo.host(2), topo.host(3)];
    const noV6 = { ...h2.lease(), attrs: { ...h2.lease().attrs, publicIPv6: undefined } };
    const report = await backend(1).reconcile([noV6, h3.lease()]);
    assert.equal(report.problems.length, 1);
    assert.match(report.problems[0] ?? '', /fd10:244:0:2::\/64 publishes no IPv6 address/);
    assert.deepEqual(report.skipped, []);
    assert.equal(report.removals, 1, 'the IPv6 route to host 2');
    assert.equal(topo.ping(h1, h2.podIP6!), false);
    assert.ok(topo.ping(h1, h2.podIP));
    assert.ok(topo.ping(h1, h3.podIP6!));
    assert.deepEqual(await backend(1).reconcile(topo.peersOf(1)), { repairs: 1, removals: 0, problems: [], skipped: [] });
    assert.ok(topo.ping(h1, h2.podIP6!));
  });

  it('repairs the IPv6 address and the IPv6 Network route (with its MTU)', async () => {
    const h1 = topo.host(1);
    h1.nl.deleteAddress(UDP_DEVICE, parseCidr('fd10:244:0:1::/128'));
    h1.nl.replaceRoute({ dst: parseCidr(IPV6_NETWORK), oif: UDP_DEVICE, protocol: 87 });
    const report = await backend(1).reconcile(topo.peersOf(1));
    assert.equal(report.repairs, 2, 'the address and the route');
    assert.deepEqual(tunAddresses(h1, 'inet6'), ['fd10:244:0:1::/128']);
    const route = tunRoutes6(h1).find((r) => r.dst === IPV6_NETWORK);
    assert.equal(route?.metrics?.[0]?.mtu, 1500 - 48);
    assert.equal(route?.prefsrc, 'fd10:244:0:1::');
    assert.ok(topo.ping(h1, topo.host(2).podIP6!));
  });

  it('survives an agent restart with keepDataplane: the IPv6 address and route stay, the pump re-attaches', async () => {
    const h1 = topo.host(1);
    await backend(1).close({ keepDataplane: true });
    assert.deepEqual(tunAddresses(h1, 'inet6'), ['fd10:244:0:1::/128']);
    assert.ok(tunRoutes6(h1).some((r) => r.dst === IPV6_NETWORK));
    const restarted = createUdpBackend({ Port: 8285 });
    backends[0] = restarted;
    await restarted.prepare(h1.context());
    await restarted.activate(h1.subnet, h1.subnet6);
    const report = await restarted.reconcile(topo.peersOf(1));
    assert.deepEqual(report.problems, []);
    assert.ok(topo.ping(h1, topo.host(2).podIP6!, 2));
    assert.ok(topo.ping(topo.host(3), h1.podIP6!, 2));
  });
});

describe('udp backend, IPv6-only network and underlay', { timeout: 120_000 }, () => {
  let topo: UdpTopology;
  let backends: UdpBackend[] = [];
  before(async () => {
    topo = new UdpTopology(2, { prefix: 'wu6', ipv6: 'only' });
    backends = await bringUp(topo);
  });
  after(async () => {
    for (const b of backends) await b.close({ keepDataplane: false }).catch(() => undefined);
    topo?.destroy();
  });

  it('has no IPv4 anywhere on the tunnel: the device at the IPv6 tunnel\'s MTU, its IPv6 address and route', async () => {
    for (const h of topo.hosts) {
      assert.equal(h.subnet.ip.family, 6);
      const [link] = ipJson<IpLink[]>(h.ns.name, ['link', 'show', UDP_DEVICE]);
      assert.equal(link?.mtu, 1500 - 48);
      assert.deepEqual(tunAddresses(h, 'inet'), []);
      assert.deepEqual(tunAddresses(h, 'inet6'), [`fd10:244:0:${h.index}::/128`]);
      const route = tunRoutes6(h).find((r) => r.dst === IPV6_NETWORK);
      assert.ok(route);
      assert.equal(route.metrics, undefined, 'the device\'s MTU is already the IPv6 tunnel\'s');
      assert.deepEqual(listening(h), ['*:8285']);
    }
  });

  it('carries ping and TCP between the containers both ways, over the IPv6 underlay', async () => {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const counter = new OuterCounter(h2);
    try {
      assert.ok(topo.ping(h1, h2.podIP6!, 3), 'container 1 → container 2');
      assert.ok(topo.ping(h2, h1.podIP6!, 3), 'container 2 → container 1');
      const tcp = await topo.tcpTransfer(h1, h2, 8_000_000, 6);
      assert.ok(tcp.ok, `TCP intact: ${tcp.detail}`);
      const back = await topo.tcpTransfer(h2, h1, 2_000_000, 6);
      assert.ok(back.ok, `reverse TCP intact: ${back.detail}`);
      const c = counter.read();
      assert.ok(c.v6Bytes > 8_000_000 && c.v4 === 0, JSON.stringify(c));
    } finally {
      counter.remove();
    }
    const [s1, s2] = [statsOf(backends[0]), statsOf(backends[1])];
    assertClean(s1, 'host 1');
    assertClean(s2, 'host 2');
    assert.ok(s1.txGsoPackets > 0 && s2.rxTunGsoWrites > 0, `offloads in use: ${JSON.stringify([s1, s2])}`);
  });

  it('an offloading pump and a classic one exchange one IPv6 packet per datagram, no larger than the tunnel MTU', async () => {
    for (const b of backends.splice(0)) await b.close({ keepDataplane: false });
    backends = await bringUp(topo, [true, false]);
    const [h1, h2] = [topo.host(1), topo.host(2)];
    const tcp = await topo.tcpTransfer(h1, h2, 8_000_000, 6);
    assert.ok(tcp.ok, `offload → classic intact: ${tcp.detail}`);
    const back = await topo.tcpTransfer(h2, h1, 2_000_000, 6);
    assert.ok(back.ok, `classic → offload intact: ${back.detail}`);
    const [s1, s2] = [statsOf(backends[0]), statsOf(backends[1])];
    assertClean(s1, 'host 1 (offload)');
    // The classic receiver has no GRO and checks every datagram is exactly one IPv6 packet.
    assertClean(s2, 'host 2 (classic)');
    assert.ok(s1.txGsoPackets > 0, 'host 1 still sent TSO6 super-packets as GSO batches');
    assert.equal(s2.rxTunWrites, s2.rxPackets);
    assert.ok(s2.rxBytes / s2.rxPackets <= 1500 - 48, `mean datagram ${s2.rxBytes / s2.rxPackets} bytes`);
  });
});

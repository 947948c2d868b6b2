// weftd with the bgp backend on 3 hosts of a namespace topology (file store), full-mesh iBGP
// between the hosts and eBGP to a real BIRD 2 in the topology's "outside" namespace:
//   h0 198.18.0.1, h1 .2, h2 .3 (AS 64512)  ⇄  BIRD 198.18.0.254 (AS 65000, static 10.99.1.0/24)
// Containers are plugged in by bin/cni/weft, which picks weft-routed from subnet.env
// (WEFT_BACKEND=bgp). Checked against BIRD's table (birdc), the kernel (ip -json, proto 88),
// weftctl bgp status, /readyz, /metrics and traffic.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Topology } from '../../src/lab/topology.js';
import { Bird } from '../../src/lab/racks.js';
import { formatCidr, formatIP } from '../../src/net/ip.js';
import { NetnsPool, type TestNetns } from '../../src/netns/testing.js';
import { ipJson } from '../../src/netns/testing.js';
import {
  WEFTCTL, echoProbe, inNs, leasedSubnet, metricsText, pingAll, readyz, setConfig, startEchoServer, startWeftd, stopAll,
  stopWeftd, subnetEnv, tempDir, waitFor, waitReady, waitUp, type Weftd,
} from './agent-harness.js';
import { WEFT_CNI_DIR, runPlugin } from './cni-harness.js';

const BIRD_AS = 65000;
const ECHO_PORT = 7011;
const BIRD_ROUTE = '10.99.1.0/24';

interface RouteJson { dst: string; gateway?: string; dev?: string; protocol?: string | number }

function birdConfig(hosts: readonly string[]): string {
  return `router id 198.18.0.254;
protocol device { scan time 5; }
protocol static st { ipv4; route ${BIRD_ROUTE} blackhole; }
template bgp weft {
  local 198.18.0.254 as ${BIRD_AS};
  hold time 9;
  connect retry time 1;
  error wait time 1, 3;
  graceful restart on;
  graceful restart time 60;
  ipv4 { import all; export where proto = "st"; next hop self; };
}
${hosts.map((ip, i) => `protocol bgp h${i} from weft { neighbor ${ip} as 64512; }`).join('\n')}
`;
}

describe('weftd bgp backend: 3-host full mesh + BIRD 2', { timeout: 170_000 }, () => {
  let topo: Topology | undefined;
  let bird: Bird | undefined;
  let tmp: { path: string; remove(): void } | undefined;
  const pods = new NetnsPool('wbb');
  const agents: Weftd[] = [];
  const subnets: string[] = [];
  let storeArgs: string[] = [];
  const subnetFile = (i: number) => join(tmp!.path, `h${i}`, 'subnet.env');
  const start = (i: number) => {
    const w = startWeftd(topo!.host(i).ns, ['--iface', 'eth0', '--node-name', `h${i}`, ...storeArgs], subnetFile(i));
    agents[i] = w;
    return w;
  };
  const agent = (i: number): Weftd => { const a = agents[i]; assert.ok(a); return a; };
  const bgpRoutes = (i: number) => ipJson<RouteJson[]>(topo!.host(i).ns, ['route', 'show', 'proto', '88']);
  const status = (i: number) => {
    const r = inNs(topo!.host(i).ns, [WEFTCTL, 'bgp', 'status', '--json', '--addr', `127.0.0.1:${agent(i).healthPort}`], 10_000);
    return { code: r.code, doc: r.stdout ? JSON.parse(r.stdout) as { sessions: { peer: string; state: string; prefixesReceived: number; prefixesSent: number; origin: string }[]; kernelRoutes: number } : undefined, stderr: r.stderr };
  };

  before(async () => {
    topo = Topology.create({ prefix: 'wbb', hosts: 3 });
    tmp = tempDir('wbb');
    bird = await Bird.start(topo.outside, join(tmp.path, 'bird'), birdConfig(topo.hosts.map((h) => formatIP(h.ip))));
    storeArgs = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
    setConfig(topo.host(0).ns, storeArgs, {
      Network: '10.244.0.0/16', SubnetLen: 24,
      // BIRD's route lies outside the cluster Network: the import policy takes it in only by name.
      Backend: { Type: 'bgp', Peers: [{ Address: formatIP(topo.outsideIP), ASN: BIRD_AS }], HoldTime: 9, GracefulRestartTime: 60, ImportPrefixes: ['10.99.0.0/16'] },
    });
    for (let i = 0; i < 3; i++) start(i);
    for (let i = 0; i < 3; i++) {
      await waitReady(agent(i), 30_000);
      subnets[i] = formatCidr(leasedSubnet(subnetFile(i)).subnet);
    }
  });

  after(async () => {
    // Each step on its own: one failure must not leave processes or namespaces behind.
    await stopAll().catch(() => {});
    await bird?.stop().catch(() => {});
    try { pods.cleanup(); } catch { /* reported by the namespace count below if it mattered */ }
    try { topo?.destroy(); } catch { /* best effort */ }
    tmp?.remove();
  });

  it('every session Established; BIRD holds every subnet; BIRD\'s route and the peers\' subnets are kernel routes', async () => {
    assert.equal(subnetEnv(subnetFile(0)).get('WEFT_BACKEND'), 'bgp');
    await waitFor('3 BGP sessions Established on every host', () => [0, 1, 2].every((i) => {
      const s = status(i);
      return s.code === 0 && s.doc?.sessions.length === 3 && s.doc.sessions.every((x) => x.state === 'Established');
    }), 30_000, 300);
    await waitFor('BIRD Established with h0..h2', () => [...bird!.sessions().values()].filter((v) => /Established/.test(v)).length === 3, 20_000);
    await waitFor('BIRD holds every host subnet', () => subnets.every((s) => bird!.routes().includes(s)), 20_000);
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(bird!.routes(`h${i}`).filter((r) => r === subnets[i]), [subnets[i]], `BIRD learned ${subnets[i]} from h${i}`);
    }
    for (let i = 0; i < 3; i++) {
      const want = new Map<string, string>([[BIRD_ROUTE, formatIP(topo!.outsideIP)]]);
      for (let j = 0; j < 3; j++) if (j !== i) want.set(subnets[j]!, formatIP(topo!.host(j).ip));
      await waitFor(`h${i} kernel routes (proto 88)`, () => {
        const have = new Map(bgpRoutes(i).map((r) => [r.dst, r.gateway ?? '']));
        return have.size === want.size && [...want].every(([d, g]) => have.get(d) === g);
      }, 15_000);
      const routes = bgpRoutes(i);
      assert.ok(routes.every((r) => r.dev === 'eth0'), JSON.stringify(routes));
      assert.ok(!routes.some((r) => r.dst === subnets[i]), 'no route to its own subnet');
    }
    const s0 = status(0).doc;
    const birdSession = s0?.sessions.find((s) => s.peer === formatIP(topo!.outsideIP));
    assert.equal(birdSession?.origin, 'configured');
    assert.equal(birdSession?.prefixesReceived, 1);
    assert.equal(birdSession?.prefixesSent, 3, 'h0 sends BIRD its own subnet and the two it learned over iBGP');
    // Text form and exit code, /readyz and /metrics.
    const text = inNs(topo!.host(0).ns, [WEFTCTL, 'bgp', 'status'], 10_000);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /198\.18\.0\.254\s+65000\s+ebgp\s+configured\s+Established/);
    assert.match(text.stdout, /198\.18\.0\.2\s+64512\s+ibgp\s+node\s+Established/);
    assert.equal(readyz(agent(0)).status, 200);
    const metrics = metricsText(agent(0));
    assert.match(metrics, /weft_bgp_session_established\{peer="198\.18\.0\.254",asn="65000"\} 1/);
    // From h1: its own subnet and BIRD's route, which h1 passes on over iBGP (next hop unchanged).
    assert.match(metrics, /weft_bgp_prefixes_received\{peer="198\.18\.0\.2",asn="64512"\} 2/);
    assert.match(metrics, /weft_bgp_kernel_routes 3/);
  });

  it('containers on all three hosts (weft → weft-routed) reach each other: ICMP, TCP, UDP', async () => {
    const made: { pod: TestNetns; ip: string }[] = [];
    for (let i = 0; i < 3; i++) {
      for (let n = 0; n < 2; n++) {
        const pod = pods.make();
        const conf = {
          cniVersion: '1.0.0', name: 'wbbnet', type: 'weft', subnetFile: subnetFile(i), fastPath: false,
          dataDir: join(tmp!.path, `h${i}`, 'cni'), ipam: { type: 'weft-ipam', dataDir: join(tmp!.path, `h${i}`, 'ipam') },
        };
        const r = await runPlugin(topo!.host(i).nsPath, join(WEFT_CNI_DIR, 'weft'), { command: 'ADD', containerId: `wbb-${i}-${n}`, netns: pod.path }, conf);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const ip = ((r.json as { ips: { address: string }[] }).ips[0]?.address ?? '').split('/')[0] ?? '';
        made.push({ pod, ip });
      }
      // weft-routed's /32 host routes (proto 200), not a bridge.
      const host = ipJson<RouteJson[]>(topo!.host(i).ns, ['route', 'show', 'proto', '200']);
      assert.equal(host.length, 2, JSON.stringify(host));
    }
    const servers = made.map((m) => startEchoServer(m.pod.name, ECHO_PORT));
    for (const s of servers) await waitUp(s);
    const ips = made.map((m) => m.ip);
    for (const m of made) {
      const others = ips.filter((ip) => ip !== m.ip);
      assert.deepEqual(pingAll(m.pod.name, others), [], `ICMP from ${m.ip}`);
      assert.deepEqual(echoProbe(m.pod.name, others, ECHO_PORT), [], `TCP/UDP from ${m.ip}`);
    }
  });

  it('a deleted route comes back (repair from the Loc-RIB); BIRD disabling its session withdraws its route', async () => {
    const ns = topo!.host(1).ns;
    assert.equal(inNs(ns, ['ip', 'route', 'del', subnets[0]!, 'proto', '88']).code, 0);
    await waitFor('route repaired', () => bgpRoutes(1).some((r) => r.dst === subnets[0]), 10_000);
    // h1 also hears BIRD's route from h0 and h2 over iBGP, so one session going leaves it in
    // place; BIRD shutting every session withdraws it everywhere — and BIRD drops our subnets.
    bird!.birdc('disable', 'h1');
    await waitFor('/readyz lists the session that is down', () => (readyz(agent(1)).body?.problems ?? []).some((p) => p.includes('198.18.0.254') && p.includes('not Established')), 10_000);
    assert.equal(status(1).code, 1, 'weftctl bgp status exits 1 with a session down');
    assert.deepEqual(bird!.routes('h1'), [], 'BIRD dropped what h1 announced');
    assert.ok(bgpRoutes(1).some((r) => r.dst === BIRD_ROUTE && r.gateway === formatIP(topo!.outsideIP)), 'h1 keeps BIRD\'s route learned over iBGP');
    for (const h of ['h0', 'h2']) bird!.birdc('disable', h);
    for (let i = 0; i < 3; i++) {
      await waitFor(`h${i} dropped BIRD's route`, () => !bgpRoutes(i).some((r) => r.dst === BIRD_ROUTE), 15_000);
    }
    assert.ok(subnets.every((s) => !bird!.routes().includes(s)), 'BIRD holds none of our subnets');
    for (const h of ['h0', 'h1', 'h2']) bird!.birdc('enable', h);
    for (let i = 0; i < 3; i++) {
      await waitFor(`BIRD's route back on h${i}`, () => bgpRoutes(i).some((r) => r.dst === BIRD_ROUTE), 30_000);
    }
    await waitFor('BIRD Established again with h0..h2, each announcing its subnet', () => [0, 1, 2].every((i) => /Established/.test(bird!.sessions().get(`h${i}`) ?? '') && bird!.routes(`h${i}`).includes(subnets[i]!)), 30_000);
  });

  it('restarting weftd keeps BIRD\'s routes and the kernel\'s (graceful restart)', async () => {
    const before = bgpRoutes(2).map((r) => `${r.dst} via ${r.gateway}`).sort();
    assert.equal(await stopWeftd(agent(2)), 0);
    // While h2's agent is away, BIRD and the other hosts keep its subnet, and h2 keeps its routes.
    await waitFor('BIRD sees h2 gone', () => !/Established/.test(bird!.sessions().get('h2') ?? ''), 15_000);
    assert.ok(bird!.routes('h2').includes(subnets[2]!), `BIRD kept ${subnets[2]} from h2: ${bird!.birdc('show', 'route', 'protocol', 'h2')}`);
    assert.ok(bgpRoutes(0).some((r) => r.dst === subnets[2]), 'h0 kept its route to h2');
    assert.deepEqual(bgpRoutes(2).map((r) => `${r.dst} via ${r.gateway}`).sort(), before);
    start(2);
    await waitReady(agent(2), 30_000);
    await waitFor('h2 Established again with everyone', () => status(2).doc?.sessions.every((s) => s.state === 'Established') === true, 30_000, 300);
    await waitFor('BIRD has h2\'s subnet fresh (not stale)', () => bird!.routes('h2').includes(subnets[2]!) && !/stale/i.test(bird!.birdc('show', 'route', 'protocol', 'h2', 'all')), 20_000);
    await waitFor('h2 kernel routes as before', () => bgpRoutes(2).map((r) => `${r.dst} via ${r.gateway}`).sort().join() === before.join(), 15_000);
  });
});

// The 2-rack lab case host-gw cannot serve: hosts on two L2 segments joined only by a router
// namespace running BIRD 2. weftd (bgp backend) on every host peers with the router — as a
// route-reflector client (mode rr) or over eBGP (mode ebgp) — and containers in different racks
// reach each other through BGP-learned routes, in the hosts' kernels (proto 88) and the router's.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { RackTopology, ROUTER_LOOPBACK, type RackMode } from '../../src/lab/racks.js';
import { formatCidr, formatIP } from '../../src/net/ip.js';
import { NetnsPool, ipJson } from '../../src/netns/testing.js';
import {
  WEFTCTL, echoProbe, inNs, leasedSubnet, pingAll, setConfig, startEchoServer, startWeftd, stopAll, tempDir, waitFor, waitReady, waitUp, type Weftd,
} from '../netns/agent-harness.js';
import { WEFT_CNI_DIR, runPlugin } from '../netns/cni-harness.js';

const ECHO_PORT = 7012;
interface RouteJson { dst: string; gateway?: string; dev?: string }

for (const mode of ['rr', 'ebgp'] as const satisfies readonly RackMode[]) {
  describe(`bgp lab: 2 racks × 2 hosts, BIRD 2 router (${mode})`, { timeout: 120_000 }, () => {
    let racks: RackTopology | undefined;
    let tmp: { path: string; remove(): void } | undefined;
    const pods = new NetnsPool('wbb');
    const agents: Weftd[] = [];
    const subnets: string[] = [];

    before(async () => {
      tmp = tempDir('wbb');
      racks = await RackTopology.create({ prefix: 'wbb', racks: 2, hostsPerRack: 2, mode, stateDir: join(tmp.path, 'bird') });
      const store = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
      setConfig(racks.host(0).ns, store, { Network: '10.246.0.0/16', SubnetLen: 24, Backend: racks.backendConfig({ HoldTime: 9 }) });
      for (const h of racks.hosts) {
        agents[h.index] = startWeftd(h.ns, ['--iface', 'eth0', '--node-name', `h${h.index}`, ...store], join(tmp.path, `h${h.index}`, 'subnet.env'));
      }
      for (const h of racks.hosts) {
        await waitReady(agents[h.index]!, 30_000);
        subnets[h.index] = formatCidr(leasedSubnet(join(tmp.path, `h${h.index}`, 'subnet.env')).subnet);
      }
    });

    after(async () => {
      await stopAll().catch(() => {});
      try { pods.cleanup(); } catch { /* best effort */ }
      await racks?.destroy().catch(() => {});
      tmp?.remove();
    });

    it('the router learns every subnet; hosts route other racks through it; containers reach each other across racks', async () => {
      const r = racks!;
      await waitFor('BIRD Established with every host', () => [...r.bird.sessions().values()].filter((v) => /Established/.test(v)).length === r.hosts.length, 30_000);
      const routerRoutes = () => ipJson<RouteJson[]>(r.router, ['route', 'show', 'proto', 'bird']);
      await waitFor('router kernel holds every pod subnet via its host', () => {
        const have = new Map(routerRoutes().map((x) => [x.dst, x.gateway]));
        return r.hosts.every((h) => have.get(subnets[h.index]!) === formatIP(h.ip));
      }, 20_000).catch((err: Error) => { throw new Error(`${err.message}: ${JSON.stringify(routerRoutes())} ${r.bird.birdc('show', 'route')}`); });
      for (const h of r.hosts) {
        const st = inNs(h.ns, [WEFTCTL, 'bgp', 'status', '--json'], 10_000);
        const doc = JSON.parse(st.stdout) as { sessions: { peer: string; state: string }[] };
        // rr: only the reflector; ebgp: only the router (NodeMesh: false).
        assert.deepEqual(doc.sessions.map((s) => s.peer), [ROUTER_LOOPBACK]);
        await waitFor(`h${h.index}: routes to the other racks' subnets via the router, same rack direct`, () => {
          const have = new Map(ipJson<RouteJson[]>(h.ns, ['route', 'show', 'proto', '88']).map((x) => [x.dst, x.gateway]));
          return r.hosts.filter((o) => o.index !== h.index).every((o) => {
            const via = have.get(subnets[o.index]!);
            // Another rack's host is not on this segment: the way there is the rack router.
            if (o.rack !== h.rack) return via === formatIP(h.gateway);
            // Same rack: rr reflects the host's own next hop (direct); ebgp: the router's (next hop self).
            return via === (mode === 'rr' ? formatIP(o.ip) : formatIP(h.gateway));
          });
        }, 20_000);
      }

      const made: { name: string; ip: string }[] = [];
      for (const h of r.hosts) {
        const pod = pods.make();
        const conf = {
          cniVersion: '1.0.0', name: 'wbbracks', type: 'weft', subnetFile: join(tmp!.path, `h${h.index}`, 'subnet.env'), fastPath: false,
          dataDir: join(tmp!.path, `h${h.index}`, 'cni'), ipam: { type: 'weft-ipam', dataDir: join(tmp!.path, `h${h.index}`, 'ipam') },
        };
        const add = await runPlugin(h.nsPath, join(WEFT_CNI_DIR, 'weft'), { command: 'ADD', containerId: `wbbr-${h.index}`, netns: pod.path }, conf);
        assert.equal(add.code, 0, add.stdout + add.stderr);
        made.push({ name: pod.name, ip: ((add.json as { ips: { address: string }[] }).ips[0]?.address ?? '').split('/')[0] ?? '' });
      }
      const servers = made.map((m) => startEchoServer(m.name, ECHO_PORT));
      for (const s of servers) await waitUp(s);
      for (const m of made) {
        const others = made.filter((o) => o !== m).map((o) => o.ip);
        assert.deepEqual(pingAll(m.name, others), [], `ICMP from ${m.ip}`);
        assert.deepEqual(echoProbe(m.name, others, ECHO_PORT), [], `TCP/UDP from ${m.ip}`);
      }
      // The cross-rack path really goes through the router: its TTL-decrementing hop shows.
      const far = made[made.length - 1]!;
      const tr = inNs(made[0]!.name, ['ping', '-c1', '-W2', far.ip]);
      assert.match(tr.stdout, /ttl=(\d+)/);
      const ttl = Number(/ttl=(\d+)/.exec(tr.stdout)?.[1]);
      assert.equal(ttl, 64 - 3, 'host → router → host: three routed hops before the container');
    });
  });
}

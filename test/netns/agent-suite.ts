// The multi-host weftd suite, shared by every backend and store: 3 hosts × 2 containers on a
// namespace topology, weftd in each host, checked against the kernel (ip -json) and by traffic.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Topology, type TopologyContainer } from '../../src/lab/topology.js';
import { type Cidr, formatCidr, formatIP } from '../../src/net/ip.js';
import { bridgeJson, ipIn, ipJson } from '../../src/netns/testing.js';
import type { PeersDocument } from '../../src/agent/peers.js';
import { weftdGet } from '../../src/cli/weftd-http.js';
import {
  WEFTCTL, cleanEnv, echoProbe, inNs, leasedSubnet, metricsText, pingAll, readyz, setConfig, startEchoServer,
  startWeftd, stopAll, stopWeftd, tempDir, waitFor, waitReady, waitUp, type Weftd,
} from './agent-harness.js';

export const NETWORK = '10.244.0.0/16';
const ECHO_PORT = 7007;

interface RouteJson { dst: string; gateway?: string; dev?: string; flags?: string[]; protocol?: string | number }

export interface SuiteOptions {
  readonly backend: 'vxlan' | 'host-gw';
  readonly store: 'file' | 'etcd';
  /** Extra Backend keys (e.g. DirectRouting). */
  readonly backendExtra?: Record<string, unknown>;
}

/** etcd inside the outside namespace (weftd in the hosts reaches it over the underlay). */
function startEtcdIn(ns: string, ip: string): { proc: ChildProcess; url: string; dir: string; stop(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), 'wgd-etcd-'));
  const url = `http://${ip}:2379`;
  const proc = spawn('ip', ['netns', 'exec', ns, '/usr/bin/etcd', '--name', 'wgd', '--data-dir', dir,
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://${ip}:2380`, '--initial-advertise-peer-urls', `http://${ip}:2380`,
    '--initial-cluster', `wgd=http://${ip}:2380`, '--log-level', 'error', '--heartbeat-interval', '50', '--election-timeout', '400'],
  { stdio: 'ignore', env: cleanEnv({ ETCD_UNSUPPORTED_ARCH: '' }) });
  return {
    proc, url, dir,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
        const done = new Promise((r) => proc.once('exit', r));
        process.kill(proc.pid, 'SIGKILL');
        await done;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function backendSuite(o: SuiteOptions): void {
  describe(`weftd ${o.backend} on 3 hosts (${o.store} store)`, { timeout: 150_000 }, () => {
    let topo: Topology;
    let tmp: { path: string; remove(): void };
    let etcd: ReturnType<typeof startEtcdIn> | undefined;
    let storeArgs: string[];
    const agents: Weftd[] = [];
    const subnets: Cidr[] = [];
    let mtu = 0;
    const containers: TopologyContainer[] = [];
    // One directory per host, as on real machines (weftd puts its CNI socket next to the file).
    const subnetFile = (i: number) => join(tmp.path, `h${i}`, 'subnet.env');
    // weftd's endpoints on a unix socket: asked from the test's own namespace, as weftctl ui does.
    const apiSocket = (i: number) => join(tmp.path, `h${i}`, 'api.sock');
    const peersOf = async (i: number): Promise<PeersDocument> => {
      const r = await weftdGet(`unix:${apiSocket(i)}`, '/peers', 2000);
      assert.equal(r.status, 200, r.body);
      return JSON.parse(r.body) as PeersDocument;
    };
    const start = (i: number, extra: string[] = []) => {
      const w = startWeftd(topo.host(i).ns, ['--iface', 'eth0', '--ip-masq', '--node-name', `h${i}`, '--api-socket', apiSocket(i), ...storeArgs, ...extra], subnetFile(i));
      agents[i] = w;
      return w;
    };
    const agent = (i: number): Weftd => { const a = agents[i]; assert.ok(a); return a; };
    const weftRoutes = (i: number) => ipJson<RouteJson[]>(topo.host(i).ns, ['route', 'show', 'proto', '87']);

    before(async () => {
      topo = Topology.create({ prefix: 'wgd', hosts: 3 });
      tmp = tempDir('wgd');
      if (o.store === 'etcd') {
        etcd = startEtcdIn(topo.outside, formatIP(topo.outsideIP));
        storeArgs = ['--store', 'etcd', '--etcd-endpoints', etcd.url];
        await waitFor('etcd to answer', () => inNs(topo.host(0).ns, ['curl', '-sf', `${etcd!.url}/health`], 2000).stdout.includes('true'), 20_000, 200);
      } else {
        storeArgs = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
      }
      setConfig(topo.host(0).ns, storeArgs, { Network: NETWORK, SubnetLen: 24, Backend: { Type: o.backend, ...o.backendExtra } });
      for (let i = 0; i < 3; i++) start(i);
      for (let i = 0; i < 3; i++) await waitReady(agent(i));
      for (let i = 0; i < 3; i++) {
        const l = leasedSubnet(subnetFile(i));
        subnets[i] = l.subnet;
        mtu = l.mtu;
      }
      const echo: ChildProcess[] = [];
      for (let i = 0; i < 3; i++) {
        for (const n of [2, 3]) {
          const c = topo.addContainer(topo.host(i), subnets[i]!, n, mtu);
          containers.push(c);
          echo.push(startEchoServer(c.ns, ECHO_PORT));
        }
      }
      await Promise.all(echo.map(waitUp));
    });

    after(async () => {
      try {
        await stopAll();
        await etcd?.stop();
      } finally {
        topo?.destroy();
        tmp?.remove();
      }
    });

    it('leases three different subnets and writes flannel-compatible subnet.env files', () => {
      const keys = new Set(subnets.map(formatCidr));
      assert.equal(keys.size, 3);
      for (const s of subnets) assert.equal(s.prefix, 24);
      assert.equal(mtu, o.backend === 'vxlan' ? 1450 : 1500);
      const env = inNs(topo.host(0).ns, ['cat', subnetFile(0)]).stdout;
      assert.match(env, new RegExp(`^FLANNEL_NETWORK=${NETWORK.replace(/\./g, '\\.')}$`, 'm'));
      assert.match(env, new RegExp(`^FLANNEL_SUBNET=${formatIP(subnets[0]!.ip).replace(/\.0$/, '.1').replace(/\./g, '\\.')}/24$`, 'm'));
      assert.match(env, /^FLANNEL_IPMASQ=true$/m);
    });

    it('programs exactly one route per remote host, as the kernel shows it', () => {
      for (let i = 0; i < 3; i++) {
        const routes = weftRoutes(i);
        const others = [0, 1, 2].filter((j) => j !== i);
        assert.deepEqual(routes.map((r) => r.dst).sort(), others.map((j) => formatCidr(subnets[j]!)).sort(), `host ${i}`);
        for (const j of others) {
          const r = routes.find((x) => x.dst === formatCidr(subnets[j]!))!;
          if (o.backend === 'vxlan') {
            assert.equal(r.gateway, formatIP(subnets[j]!.ip));
            assert.equal(r.dev, 'weft.1');
            assert.ok(r.flags?.includes('onlink'), `onlink flag on ${r.dst}`);
          } else {
            assert.equal(r.gateway, formatIP(topo.host(j).ip));
            assert.equal(r.dev, 'eth0');
          }
        }
      }
    });

    it('GET /peers on the --api-socket (mode 0600) lists the other hosts\' subnets as programmed', async () => {
      assert.equal(statSync(apiSocket(0)).mode & 0o777, 0o600);
      const others = [1, 2].map((j) => formatCidr(subnets[j]!)).sort();
      const doc = await waitFor('h0 to have programmed both peers', async () => {
        const d = await peersOf(0);
        return [...d.programmed].sort().join() === others.join() ? d : undefined;
      }, 10_000);
      assert.equal(doc.node, 'h0');
      assert.equal(doc.subnet, formatCidr(subnets[0]!));
      assert.equal(doc.backend, o.backend);
      assert.equal(doc.ready, true);
      assert.deepEqual(doc.skipped, []);
      assert.ok(doc.lastReconcile !== null && !Number.isNaN(Date.parse(doc.lastReconcile)), String(doc.lastReconcile));
      assert.equal(doc.reconcileError, undefined);
    });

    if (o.backend === 'vxlan') {
      it('has weft.1 (VNI 1, port 8472, no learning, local = public IP) with neighbour and FDB entries per peer', () => {
        for (let i = 0; i < 3; i++) {
          const ns = topo.host(i).ns;
          const [link] = ipJson<{ mtu: number; address: string; linkinfo: { info_kind: string; info_data: { id: number; port: number; learning: boolean; local: string; link: string } } }[]>(ns, ['-d', 'link', 'show', 'weft.1']);
          assert.ok(link);
          assert.equal(link.linkinfo.info_kind, 'vxlan');
          assert.equal(link.linkinfo.info_data.id, 1);
          assert.equal(link.linkinfo.info_data.port, 8472);
          assert.equal(link.linkinfo.info_data.learning, false);
          assert.equal(link.linkinfo.info_data.local, formatIP(topo.host(i).ip));
          assert.equal(link.mtu, 1450);
          const addrs = ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>(ns, ['-4', 'addr', 'show', 'weft.1']);
          assert.deepEqual(addrs[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`), [`${formatIP(subnets[i]!.ip)}/32`]);
          const neigh = ipJson<{ dst: string; lladdr: string; state: string[] }[]>(ns, ['neigh', 'show', 'dev', 'weft.1']);
          const fdb = bridgeJson<{ mac: string; dst?: string; state?: string }[]>(ns, ['fdb', 'show', 'dev', 'weft.1']).filter((f) => f.dst);
          const others = [0, 1, 2].filter((j) => j !== i);
          assert.deepEqual(neigh.map((n) => n.dst).sort(), others.map((j) => formatIP(subnets[j]!.ip)).sort());
          for (const n of neigh) assert.ok(n.state.includes('PERMANENT'));
          assert.deepEqual(fdb.map((f) => f.dst).sort(), others.map((j) => formatIP(topo.host(j).ip)).sort());
          for (const j of others) {
            const [peerLink] = ipJson<{ address: string }[]>(topo.host(j).ns, ['link', 'show', 'weft.1']);
            assert.equal(neigh.find((n) => n.dst === formatIP(subnets[j]!.ip))?.lladdr, peerLink?.address);
            assert.equal(fdb.find((f) => f.dst === formatIP(topo.host(j).ip))?.mac, peerLink?.address);
          }
        }
      });
    }

    it('every container reaches every other container (ICMP, TCP, UDP), its own host and the other hosts', () => {
      const all = containers.map((c) => formatIP(c.ip));
      const hosts = topo.hosts.map((h) => formatIP(h.ip));
      for (const c of containers) {
        const others = all.filter((a) => a !== formatIP(c.ip));
        assert.deepEqual(pingAll(c.ns, [...others, ...hosts]), [], `ICMP from ${formatIP(c.ip)}`);
        assert.deepEqual(echoProbe(c.ns, others, ECHO_PORT), [], `TCP/UDP from ${formatIP(c.ip)}`);
      }
    });

    it('with --ip-masq a container reaches the outside namespace, which has no route back to pods', () => {
      const outRoutes = ipJson<RouteJson[]>(topo.outside, ['route', 'show']);
      assert.ok(!outRoutes.some((r) => r.dst.startsWith('10.')), 'outside must not know the pod network');
      for (let i = 0; i < 3; i++) assert.deepEqual(pingAll(containers[i * 2]!.ns, [formatIP(topo.outsideIP)]), []);
      // Inside the cluster network, sources stay as they are.
      const rules = inNs(topo.host(0).ns, ['nft', '-j', 'list', 'table', 'inet', 'weft']).stdout;
      assert.match(rules, /masquerade/);
    });

    it('repairs a route, neighbour and FDB entry deleted by hand', async () => {
      const ns = topo.host(0).ns;
      const peer = subnets[1]!;
      ipIn(ns, ['route', 'del', formatCidr(peer)]);
      if (o.backend === 'vxlan') {
        ipIn(ns, ['neigh', 'del', formatIP(peer.ip), 'dev', 'weft.1']);
        inNs(ns, ['bridge', 'fdb', 'del', ipJson<{ address: string }[]>(topo.host(1).ns, ['link', 'show', 'weft.1'])[0]!.address, 'dev', 'weft.1', 'dst', formatIP(topo.host(1).ip)]);
      }
      const t0 = Date.now();
      await waitFor('the route to come back', () => weftRoutes(0).some((r) => r.dst === formatCidr(peer)), 10_000);
      if (o.backend === 'vxlan') {
        await waitFor('neighbour and FDB to come back', () =>
          ipJson<{ dst: string }[]>(ns, ['neigh', 'show', 'dev', 'weft.1']).some((n) => n.dst === formatIP(peer.ip))
          && bridgeJson<{ dst?: string }[]>(ns, ['fdb', 'show', 'dev', 'weft.1']).some((f) => f.dst === formatIP(topo.host(1).ip)), 10_000);
      }
      assert.ok(Date.now() - t0 < 10_000);
      assert.deepEqual(pingAll(containers[0]!.ns, [formatIP(containers[2]!.ip)]), []);
      assert.match(metricsText(agent(0)), /weft_reconcile_repairs_total [1-9]/);
    });

    it('a host that leaves loses its state on the others; when it comes back it is reprogrammed', async () => {
      const gone = formatCidr(subnets[2]!);
      assert.equal(await stopWeftd(agent(2)), 0, 'SIGTERM exits 0');
      assert.equal(existsSync(apiSocket(2)), false, 'weftd removes its --api-socket when it stops');
      const rel = inNs(topo.host(2).ns, [WEFTCTL, 'leases', 'release', gone, ...storeArgs]);
      assert.equal(rel.code, 0, rel.stderr);
      for (const i of [0, 1]) await waitFor(`host ${i} to drop ${gone}`, () => !weftRoutes(i).some((r) => r.dst === gone), 10_000);
      if (o.backend === 'vxlan') {
        const n = ipJson<{ dst: string }[]>(topo.host(0).ns, ['neigh', 'show', 'dev', 'weft.1']);
        assert.ok(!n.some((x) => x.dst === formatIP(subnets[2]!.ip)));
        assert.ok(!bridgeJson<{ dst?: string }[]>(topo.host(0).ns, ['fdb', 'show', 'dev', 'weft.1']).some((f) => f.dst === formatIP(topo.host(2).ip)));
      }
      await waitReady(start(2));
      assert.equal(formatCidr(leasedSubnet(subnetFile(2)).subnet), gone, 'takes its previous subnet back from subnet.env');
      for (const i of [0, 1]) await waitFor(`host ${i} to reprogram ${gone}`, () => weftRoutes(i).some((r) => r.dst === gone), 10_000);
      assert.deepEqual(pingAll(containers[0]!.ns, [formatIP(containers[4]!.ip), formatIP(containers[5]!.ip)]), []);
    });

    it('restarting weftd (SIGTERM) during a running ping loses nothing; SIGKILL + restart keeps subnet and dataplane', async () => {
      const from = containers[0]!;
      const to = containers[3]!;
      const ping = spawn('ip', ['netns', 'exec', from.ns, 'ping', '-i', '0.01', '-c', '300', '-W', '1', '-q', formatIP(to.ip)], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
      let out = '';
      ping.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
      const done = new Promise<number | null>((r) => ping.on('exit', r));
      await sleep(300);
      assert.equal(await stopWeftd(agent(0)), 0);
      assert.equal(await stopWeftd(agent(1)), 0);
      start(0); start(1);
      await waitReady(agent(0)); await waitReady(agent(1));
      assert.equal(await done, 0, out);
      assert.match(out, / 0% packet loss/, out);

      const before = { routes: weftRoutes(1), link: ipJson<{ ifindex: number; address: string }[]>(topo.host(1).ns, ['link', 'show'])
        .filter((l) => o.backend !== 'vxlan' || (l as { ifname?: string }).ifname === 'weft.1') };
      await stopWeftd(agent(1), 'SIGKILL');
      assert.ok(statSync(apiSocket(1)).isSocket(), 'SIGKILL leaves the socket behind');
      await waitReady(start(1));
      assert.equal((await peersOf(1)).node, 'h1', 'the restarted weftd replaced the stale socket');
      assert.equal(formatCidr(leasedSubnet(subnetFile(1)).subnet), formatCidr(subnets[1]!));
      assert.deepEqual(weftRoutes(1), before.routes);
      assert.deepEqual(ipJson<{ ifindex: number; address: string }[]>(topo.host(1).ns, ['link', 'show'])
        .filter((l) => o.backend !== 'vxlan' || (l as { ifname?: string }).ifname === 'weft.1'), before.link);
      assert.deepEqual(pingAll(containers[2]!.ns, [formatIP(containers[0]!.ip), formatIP(containers[5]!.ip)]), []);
    });

    it('serves /healthz, /readyz details and Prometheus metrics', () => {
      const r = readyz(agent(0));
      assert.equal(r.status, 200);
      assert.equal(r.body?.lease?.subnet, formatCidr(subnets[0]!));
      const m = metricsText(agent(0));
      for (const name of ['weft_leases', 'weft_peers 2', 'weft_reconcile_runs_total', 'weft_errors_total', 'weft_store_request_seconds_bucket']) assert.ok(m.includes(name), name);
      assert.equal(inNs(topo.host(0).ns, ['curl', '-s', `http://127.0.0.1:${agent(0).healthPort}/healthz`]).stdout.trim(), 'ok');
    });

    if (o.backend === 'host-gw') {
      it('a peer that is not on this L2 segment gets no route and a clear problem in the log and /readyz', async () => {
        const far = '10.244.250.0/24';
        const r = inNs(topo.host(0).ns, [WEFTCTL, 'leases', 'reserve', far, '--public-ip', '198.19.5.5', '--backend-type', 'host-gw', ...storeArgs]);
        assert.equal(r.code, 0, r.stderr);
        const body = await waitFor('/readyz to report the unreachable peer', () => {
          const b = readyz(agent(0)).body;
          return b?.problems?.some((p) => p.includes('198.19.5.5')) ? b : undefined;
        }, 10_000);
        assert.match(body.problems!.join('\n'), /not directly reachable/);
        assert.ok(!weftRoutes(0).some((x) => x.dst === far));
        const doc = await waitFor('/peers to list the unreachable peer as skipped', async () => {
          const d = await peersOf(0);
          return d.skipped.some((x) => x.subnet === far) ? d : undefined;
        }, 10_000);
        assert.match(doc.skipped.find((x) => x.subnet === far)?.reason ?? '', /198\.19\.5\.5 is not directly reachable/);
        assert.ok(!doc.programmed.includes(far));
        assert.deepEqual([...doc.programmed].sort(), [1, 2].map((j) => formatCidr(subnets[j]!)).sort());
        await waitFor('the log to name the unreachable peer', () => /peer not directly reachable.*198\.19\.5\.5/.test(agent(0).stderr.join('')), 5000);
        inNs(topo.host(0).ns, [WEFTCTL, 'leases', 'release', far, ...storeArgs]);
        await waitFor('the problem to clear', () => readyz(agent(0)).body?.problems?.length === 0, 10_000);
      });
    }

    if (o.store === 'etcd') {
      it('store lost later: keeps the dataplane and reports not-ready; back when the store returns', async () => {
        await etcd!.stop();
        await waitFor('not-ready', () => readyz(agent(0)).status === 503, 15_000, 250);
        const body = readyz(agent(0)).body;
        assert.equal(body?.ready, false);
        assert.equal(weftRoutes(0).length, 2);
        assert.deepEqual(pingAll(containers[0]!.ns, [formatIP(containers[2]!.ip), formatIP(containers[4]!.ip)]), []);
      });
    }
  });
}


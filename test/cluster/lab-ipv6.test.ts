// Dual-stack and IPv6-only clusters end to end: `weftctl lab up --ipv6 dual|only` per backend, then
// the leases in the store (flannel's "<v4>&<v6>" keys), subnet.env, the kernel (routes of both
// families, the IPv6 VXLAN device) and every container pair over every family (lab check). And a
// flannel node's dual-stack lease, written as flanneld writes it, programmed as a peer: a node
// built by hand the way flanneld configures one (flannel.1 and flannel-v6.1, VNI 1, port 8472)
// exchanges traffic of both families with a weft container.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CheckReport } from '../../src/lab/check.js';
import type { LabRecord } from '../../src/lab/state.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { labPolicyCheck } from '../../src/lab/policy-check.js';
import { WEFTCTL, assertGone, cleanEnv, downQuietly, lab, labName, stateDir, upOk } from './lab-harness.js';

function ipJson<T>(ns: string, args: string[]): T {
  const r = spawnSync('ip', ['-n', ns, '-json', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

function sh(argv: string[]): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function check(name: string): CheckReport {
  const r = lab(['check', '--name', name, '--json']);
  assert.equal(r.code, 0, `check failed:\n${r.stdout.slice(0, 3000)}\n${r.stderr}`);
  return JSON.parse(r.stdout) as CheckReport;
}

/** `weftctl doctor SRC DST --lab NAME --json`. */
function doctor(name: string, src: string, dst: string): { ok: boolean; hops: Array<{ id: string; title: string; status: string }> } {
  const r = spawnSync(WEFTCTL, ['doctor', src, dst, '--lab', name, '--json'], { encoding: 'utf8', env: cleanEnv() });
  assert.ok(r.stdout.trim() !== '', r.stderr);
  return JSON.parse(r.stdout) as { ok: boolean; hops: Array<{ id: string; title: string; status: string }> };
}

function subnetsDir(name: string): string {
  return join(stateDir(name), 'store', 'weft', 'network', 'subnets');
}

type Route = { dst: string; gateway?: string; dev?: string; protocol?: string };

const cases = [
  { backend: 'vxlan', mode: 'dual', store: 'file', hosts: 3, pods: 2 },
  { backend: 'vxlan', mode: 'only', store: 'file', hosts: 2, pods: 2 },
  { backend: 'host-gw', mode: 'dual', store: 'etcd', hosts: 2, pods: 1 },
  { backend: 'host-gw', mode: 'only', store: 'file', hosts: 2, pods: 1 },
  { backend: 'bgp', mode: 'dual', store: 'file', hosts: 3, pods: 1 },
  { backend: 'bgp', mode: 'only', store: 'etcd', hosts: 2, pods: 2 },
  // Kubernetes mode: each Node's spec.podCIDRs holds one CIDR per family.
  { backend: 'vxlan', mode: 'dual', store: 'kube', hosts: 3, pods: 1 },
] as const;

describe('weftctl lab up --ipv6: dual-stack and IPv6-only clusters', { timeout: 240_000 }, () => {
  const used: string[] = [];
  after(() => { for (const n of used) downQuietly(n); });

  for (const c of cases) {
    it(`${c.backend}, --ipv6 ${c.mode}, ${c.store} store (${c.hosts} hosts × ${c.pods})`, async () => {
      const name = labName('wl6');
      used.push(name);
      const rec = upOk(['--name', name, '--backend', c.backend, '--store', c.store, '--ipv6', c.mode, '--hosts', String(c.hosts), '--pods', String(c.pods)]);
      assert.equal(rec.ipv6, c.mode);
      for (const h of rec.hostList) {
        const env = readFileSync(join(stateDir(name), 'hosts', `h${h.index}`, 'subnet.env'), 'utf8');
        assert.match(env, /^FLANNEL_IPV6_NETWORK=fd10:244::\/56$/m);
        assert.match(env, /^FLANNEL_IPV6_SUBNET=fd10:244:[0-9a-f:]*:1\/64$/m);
        assert.match(env, /^FLANNEL_IPV6_MTU=\d+$/m);
        if (c.mode === 'dual') {
          assert.match(env, /^FLANNEL_SUBNET=10\.244\.\d+\.1\/24$/m);
          assert.ok(h.subnet6, `h${h.index} has an IPv6 subnet`);
        } else {
          assert.doesNotMatch(env, /^FLANNEL_(NETWORK|SUBNET)=/m, 'no IPv4 lines on an IPv6-only node');
          assert.match(h.subnet ?? '', /^fd10:244:/);
          const v4 = ipJson<Array<{ addr_info: unknown[] }>>(h.ns, ['-4', 'addr', 'show', 'eth0']);
          assert.deepEqual(v4.flatMap((l) => l.addr_info), [], 'an IPv6-only underlay');
        }
      }
      if (c.store === 'file') {
        // flanneld's key format: dual-stack leases name both subnets.
        const keys = readdirSync(subnetsDir(name)).filter((k) => !k.startsWith('.'));
        assert.equal(keys.length, c.hosts);
        for (const k of keys) assert.match(k, c.mode === 'dual' ? /^10\.244\.\d+\.0-24&fd10:244:0:[0-9a-f]+::-64$/ : /^fd10:244:0:[0-9a-f]+::-64$/);
      }
      if (c.backend === 'bgp') {
        // weft-routed: the container's IPv6 address as a /128, its default route via fe80::1.
        for (const x of rec.containers) {
          const r6 = ipJson<Route[]>(x.ns, ['-6', 'route', 'show', 'default']);
          assert.equal(r6[0]?.gateway, 'fe80::1', `${x.name}'s IPv6 default route`);
        }
      }
      for (const x of rec.containers) {
        const addrs = ipJson<Array<{ addr_info: Array<{ family: string; local: string; scope: string }> }>>(x.ns, ['addr', 'show', 'eth0'])
          .flatMap((l) => l.addr_info).filter((a) => a.scope === 'global');
        assert.deepEqual(addrs.map((a) => a.family).sort(), c.mode === 'dual' ? ['inet', 'inet6'] : ['inet6'], `${x.name}'s families`);
      }
      // Every host routes to every other host's IPv6 subnet (weftd's protocol 87; bgp's 88, learnt over MP-BGP).
      const proto = c.backend === 'bgp' ? '88' : '87';
      for (const h of rec.hostList) {
        const routes = ipJson<Route[]>(h.ns, ['-6', 'route', 'show', 'proto', proto]);
        const others = rec.hostList.filter((o) => o !== h);
        assert.deepEqual(routes.map((r) => r.dst).sort(), others.map((o) => (c.mode === 'dual' ? o.subnet6 : o.subnet)).sort(), `IPv6 routes on h${h.index}`);
        for (const r of routes) {
          if (c.backend === 'vxlan') assert.equal(r.dev, 'weft-v6.1', `${r.dst} over the IPv6 VXLAN device`);
          else assert.ok(others.some((o) => o.ip6 === r.gateway), `${r.dst} via a peer's IPv6 underlay address (${r.gateway})`);
        }
        if (c.backend === 'vxlan') {
          const [dev] = ipJson<Array<{ linkinfo: { info_kind: string; info_data: { id: number; local?: string; local6?: string; port: number } } }>>(h.ns, ['-d', 'link', 'show', 'weft-v6.1']);
          assert.equal(dev?.linkinfo.info_kind, 'vxlan');
          assert.equal(dev?.linkinfo.info_data.id, 1);
          assert.equal(dev?.linkinfo.info_data.port, 8472);
          assert.equal(dev?.linkinfo.info_data.local6 ?? dev?.linkinfo.info_data.local, h.ip6, 'the IPv6 VTEP sits on the IPv6 underlay address');
        }
      }
      const report = check(name);
      const n = rec.hosts * rec.pods;
      const families = c.mode === 'dual' ? 2 : 1;
      assert.equal(report.ok, true);
      assert.equal(report.pairs.length, n * (n - 1) * families);
      assert.equal(report.egress.length, n * families);
      const v6 = report.pairs.filter((p) => p.family === 6);
      assert.equal(v6.length, n * (n - 1));
      assert.ok(v6.some((p) => p.crossHost), 'IPv6 pairs across hosts');
      for (const p of [...report.pairs, ...report.egress]) assert.ok(p.icmp.ok && p.tcp.ok, `${p.from} → ${p.to} (${p.toIP})`);
      if (c.mode === 'dual') {
        // weftctl doctor follows an IPv6 path through the IPv6 half of the dataplane.
        const far = rec.containers.find((x) => x.host === rec.hosts - 1)!;
        const d = doctor(name, rec.containers[0]!.name, far.ip6!);
        assert.equal(d.ok, true, JSON.stringify(d.hops.filter((h) => h.status === 'fail')));
        if (c.backend === 'vxlan') assert.ok(d.hops.some((h) => h.id === 'vxlan-device' && h.title.includes('weft-v6.1') && h.status === 'ok'));
      }
      if (c.store === 'kube') {
        // A NetworkPolicy applied with kubectl holds for both families: pods on h1 take
        // connections only from pods on h0, over IPv4 and IPv6 alike.
        const policy = await labPolicyCheck(rec);
        const wrong = policy.pairs.filter((p) => p.observed.icmp !== p.expected.icmp || p.observed.tcp !== p.expected.tcp);
        assert.deepEqual(wrong, [], 'every pair answers as the evaluator says');
        for (const f of [4, 6] as const) {
          const ps = policy.pairs.filter((p) => p.family === f);
          assert.ok(ps.some((p) => !p.expected.tcp && !p.observed.tcp), `IPv${f}: some pair blocked`);
          assert.ok(ps.some((p) => p.expected.tcp && p.observed.tcp), `IPv${f}: some pair allowed`);
        }
      }
      const down = lab(['down', '--name', name]);
      assert.equal(down.code, 0, down.stderr);
      assertGone(name, rec.processes.map((p) => p.pid));
    });
  }

  it('a flannel node\'s dual-stack lease, as flanneld writes it, is programmed as a peer and carries traffic of both families', () => {
    const name = labName('wl6');
    used.push(name);
    const rec: LabRecord = upOk(['--name', name, '--backend', 'vxlan', '--ipv6', 'dual', '--hosts', '2', '--pods', '1']);
    const h0 = rec.hostList[0]!;
    const pod = rec.containers.find((x) => x.host === 0)!;
    const prefix = `weftlab-${name}-`;
    const fl = `${prefix}fl`;
    const flPod = `${prefix}flp`;
    // A node configured as flanneld configures one (iproute2 only): eth0 on the lab's switch,
    // flannel.1 and flannel-v6.1 with the subnet's network addresses, a pod behind cni0.
    for (const ns of [fl, flPod]) sh(['ip', 'netns', 'add', ns]);
    sh(['ip', '-n', rec.underlay!, 'link', 'add', 'pfl', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', fl]);
    sh(['ip', '-n', rec.underlay!, 'link', 'set', 'pfl', 'master', 'sw', 'up']);
    const run = (ns: string, ...args: string[]) => sh(['ip', '-n', ns, ...args]);
    for (const s of ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']) {
      sh(['ip', 'netns', 'exec', fl, 'sysctl', '-qw', s]);
    }
    sh(['ip', 'netns', 'exec', flPod, 'sysctl', '-qw', 'net.ipv6.conf.default.accept_dad=0']);
    run(fl, 'addr', 'add', '198.18.0.9/24', 'dev', 'eth0');
    run(fl, 'addr', 'add', '2001:2::9/64', 'dev', 'eth0', 'nodad');
    run(fl, 'link', 'set', 'eth0', 'up');
    const mac4 = '0a:f1:a0:00:00:04';
    const mac6 = '0a:f1:a0:00:00:06';
    run(fl, 'link', 'add', 'flannel.1', 'address', mac4, 'type', 'vxlan', 'id', '1', 'local', '198.18.0.9', 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    run(fl, 'link', 'add', 'flannel-v6.1', 'address', mac6, 'type', 'vxlan', 'id', '1', 'local', '2001:2::9', 'dev', 'eth0', 'dstport', '8472', 'nolearning');
    run(fl, 'addr', 'add', '10.244.200.0/32', 'dev', 'flannel.1');
    run(fl, 'addr', 'add', 'fd10:244:0:c8::/128', 'dev', 'flannel-v6.1', 'nodad');
    for (const d of ['flannel.1', 'flannel-v6.1']) run(fl, 'link', 'set', d, 'mtu', '1400', 'up');
    run(fl, 'link', 'add', 'cni0', 'type', 'bridge');
    run(fl, 'addr', 'add', '10.244.200.1/24', 'dev', 'cni0');
    run(fl, 'addr', 'add', 'fd10:244:0:c8::1/64', 'dev', 'cni0', 'nodad');
    run(fl, 'link', 'set', 'cni0', 'up');
    run(fl, 'link', 'add', 'vflp', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', flPod);
    run(fl, 'link', 'set', 'vflp', 'master', 'cni0', 'up');
    run(flPod, 'addr', 'add', '10.244.200.2/24', 'dev', 'eth0');
    run(flPod, 'addr', 'add', 'fd10:244:0:c8::2/64', 'dev', 'eth0', 'nodad');
    run(flPod, 'link', 'set', 'eth0', 'mtu', '1400', 'up');
    run(flPod, 'link', 'set', 'lo', 'up');
    run(flPod, 'route', 'add', 'default', 'via', '10.244.200.1');
    run(flPod, '-6', 'route', 'add', 'default', 'via', 'fd10:244:0:c8::1');
    // What flanneld programs for the weft node h0 (from h0's lease: its VtepMACs, both addresses).
    const envOf = (k: string) => new RegExp(`^${k}=(\\S+)$`, 'm').exec(readFileSync(join(stateDir(name), 'hosts', 'h0', 'subnet.env'), 'utf8'))?.[1] ?? '';
    const sub4 = envOf('FLANNEL_SUBNET').replace(/\.1\/24$/, '.0');
    const sub6 = envOf('FLANNEL_IPV6_SUBNET').replace(/::1\/64$/, '::');
    const macOf = (dev: string) => ipJson<Array<{ address: string }>>(h0.ns, ['link', 'show', dev])[0]!.address;
    run(fl, 'route', 'add', `${sub4}/24`, 'via', sub4, 'dev', 'flannel.1', 'onlink');
    run(fl, 'neigh', 'add', sub4, 'lladdr', macOf('weft.1'), 'dev', 'flannel.1', 'nud', 'permanent');
    sh(['ip', 'netns', 'exec', fl, 'bridge', 'fdb', 'add', macOf('weft.1'), 'dev', 'flannel.1', 'dst', h0.ip]);
    run(fl, '-6', 'route', 'add', `${sub6}/64`, 'via', sub6, 'dev', 'flannel-v6.1', 'onlink');
    run(fl, '-6', 'neigh', 'add', sub6, 'lladdr', macOf('weft-v6.1'), 'dev', 'flannel-v6.1', 'nud', 'permanent');
    sh(['ip', 'netns', 'exec', fl, 'bridge', 'fdb', 'add', macOf('weft-v6.1'), 'dev', 'flannel-v6.1', 'dst', h0.ip6!]);

    // flanneld's dual-stack lease, byte for byte as its LeaseAttrs marshals (PublicIPv6 a pointer,
    // BackendData and BackendV6Data {"VNI","VtepMAC"}), under flanneld's key.
    const key = '10.244.200.0-24&fd10:244:0:c8::-64';
    const value = JSON.stringify({
      PublicIP: '198.18.0.9', PublicIPv6: '2001:2::9', BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: mac4 }, BackendV6Data: { VNI: 1, VtepMAC: mac6 },
    });
    const store = new FileStore({ dir: join(stateDir(name), 'store'), prefix: '/weft/network' });
    return (async () => {
      await store.put(`subnets/${key}`, value, { ttlSeconds: 600 });
      const deadline = Date.now() + 10_000;
      const programmed = () => {
        const r4 = ipJson<Route[]>(h0.ns, ['route', 'show', '10.244.200.0/24', 'proto', '87']);
        const r6 = ipJson<Route[]>(h0.ns, ['-6', 'route', 'show', 'fd10:244:0:c8::/64', 'proto', '87']);
        return r4.length === 1 && r6.length === 1;
      };
      while (!programmed()) {
        assert.ok(Date.now() < deadline, 'weftd on h0 programs the flannel node within 10 s');
        await new Promise((r) => setTimeout(r, 100));
      }
      const [r6] = ipJson<Route[]>(h0.ns, ['-6', 'route', 'show', 'fd10:244:0:c8::/64', 'proto', '87']);
      assert.equal(r6?.dev, 'weft-v6.1');
      assert.equal(r6?.gateway, 'fd10:244:0:c8::');
      const neigh6 = ipJson<Array<{ dst: string; lladdr: string; state: string[] }>>(h0.ns, ['-6', 'neigh', 'show', 'dev', 'weft-v6.1']);
      assert.ok(neigh6.some((x) => x.dst === 'fd10:244:0:c8::' && x.lladdr === mac6 && x.state.includes('PERMANENT')), 'the IPv6 VTEP neighbour → BackendV6Data.VtepMAC');
      const fdb6 = JSON.parse(sh(['ip', 'netns', 'exec', h0.ns, 'bridge', '-json', 'fdb', 'show', 'dev', 'weft-v6.1'])) as Array<{ mac: string; dst?: string }>;
      assert.ok(fdb6.some((x) => x.mac === mac6 && x.dst === '2001:2::9'), 'the FDB sends BackendV6Data.VtepMAC to PublicIPv6');
      // Traffic of both families between the weft container on h0 and the flannel node's pod.
      for (const target of ['10.244.200.2', 'fd10:244:0:c8::2']) {
        const ping = spawnSync('ip', ['netns', 'exec', pod.ns, 'ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '2', target], { encoding: 'utf8' });
        assert.equal(ping.status, 0, `weft container → flannel pod ${target}: ${ping.stdout}${ping.stderr}`);
      }
      const back = spawnSync('ip', ['netns', 'exec', flPod, 'ping', '-n', '-q', '-c', '3', '-i', '0.2', '-W', '2', pod.ip6!], { encoding: 'utf8' });
      assert.equal(back.status, 0, `flannel pod → weft container ${pod.ip6}: ${back.stdout}`);
      // The lease goes: so do the routes.
      await store.delete(`subnets/${key}`);
      const gone = Date.now() + 10_000;
      const anyLeft = () => ipJson<Route[]>(h0.ns, ['route', 'show', '10.244.200.0/24', 'proto', '87']).length
        + ipJson<Route[]>(h0.ns, ['-6', 'route', 'show', 'fd10:244:0:c8::/64', 'proto', '87']).length > 0;
      while (anyLeft()) {
        assert.ok(Date.now() < gone, 'the routes go with the lease');
        await new Promise((r) => setTimeout(r, 100));
      }
      await store.close();
      const down = lab(['down', '--name', name]);
      assert.equal(down.code, 0, down.stderr);
      assertGone(name, rec.processes.map((p) => p.pid));
    })();
  });
});

// weftctl lab up → check → down for every backend on the file store, and for the agent backends
// on a lab-run etcd and a lab-run kube-apiserver (subnets from Node.spec.podCIDR): the lab's view (check --json) and the kernel's (ip -json) agree, and down
// leaves nothing.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cidrContains, parseCidr, parseIP } from '../../src/net/ip.js';
import type { CheckReport } from '../../src/lab/check.js';
import type { LabRecord } from '../../src/lab/state.js';
import { alive, assertGone, downQuietly, lab, labName, upOk } from './lab-harness.js';

function ipJson<T>(ns: string, args: string[]): T {
  const r = spawnSync('ip', ['-n', ns, '-json', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

function assertKernelMatches(rec: LabRecord): void {
  for (const c of rec.containers) {
    assert.ok(c.ip, `${c.name} has an address`);
    const [link] = ipJson<Array<{ addr_info: Array<{ family: string; local: string }>; linkinfo?: { info_kind: string } }>>(c.ns, ['-d', 'addr', 'show', 'eth0']);
    assert.ok(link, `${c.name}: eth0 in ${c.ns}`);
    assert.ok(link.addr_info.some((a) => a.family === 'inet' && a.local === c.ip), `${c.name}: kernel has ${c.ip}`);
    const host = rec.hostList[c.host];
    assert.ok(host);
    if (rec.backend === 'macvlan') {
      assert.equal(link.linkinfo?.info_kind, 'macvlan');
      assert.ok(cidrContains(parseCidr('198.18.0.0/24'), parseIP(c.ip)));
    } else {
      assert.equal(link.linkinfo?.info_kind, 'veth');
      assert.ok(host.subnet, `h${host.index} leased a subnet`);
      assert.ok(cidrContains(parseCidr(host.subnet), parseIP(c.ip)), `${c.ip} inside ${host.subnet}`);
    }
  }
  const subnets = new Set(rec.hostList.map((h) => h.subnet));
  if (rec.backend !== 'macvlan') assert.equal(subnets.size, rec.hosts, 'one subnet per host');
  if (rec.backend === 'vxlan' || rec.backend === 'host-gw') {
    for (const h of rec.hostList) {
      const routes = ipJson<Array<{ dst: string }>>(h.ns, ['route', 'show', 'proto', '87']);
      assert.deepEqual(routes.map((r) => r.dst).sort(), rec.hostList.filter((o) => o !== h).map((o) => o.subnet).sort(), `routes on h${h.index}`);
    }
  }
  if (rec.backend === 'macvlan') {
    assert.equal(rec.processes.filter((p) => p.role.startsWith('weftd')).length, 0, 'macvlan runs no weftd');
  } else {
    const weftd = rec.processes.filter((p) => p.role.startsWith('weftd'));
    assert.equal(weftd.length, rec.hosts);
    for (const p of weftd) assert.ok(alive(p.pid), `${p.role} running`);
  }
}

function assertCheckPasses(name: string, rec: LabRecord): void {
  const r = lab(['check', '--name', name, '--json']);
  assert.equal(r.code, 0, `check failed:\n${r.stdout.slice(0, 3000)}\n${r.stderr}`);
  const report = JSON.parse(r.stdout) as CheckReport;
  const n = rec.hosts * rec.pods;
  assert.equal(report.ok, true);
  assert.equal(report.pairs.length, n * (n - 1));
  assert.equal(report.egress.length, n);
  for (const p of [...report.pairs, ...report.egress]) {
    assert.equal(p.icmp.ok, true, `${p.from} → ${p.to} ICMP`);
    assert.equal(p.tcp.ok, true, `${p.from} → ${p.to} TCP`);
    assert.ok((p.icmp.rttMs ?? 0) > 0 && (p.tcp.rttMs ?? 0) > 0, 'RTTs measured');
  }
  assert.ok(report.pairs.some((p) => p.crossHost) || rec.hosts === 1);
}

const cases: Array<{ backend: string; store: 'file' | 'etcd' | 'kube'; hosts: number; pods: number }> = [
  { backend: 'vxlan', store: 'file', hosts: 3, pods: 2 },
  { backend: 'host-gw', store: 'file', hosts: 3, pods: 2 },
  { backend: 'udp', store: 'file', hosts: 3, pods: 2 },
  { backend: 'macvlan', store: 'file', hosts: 3, pods: 2 },
  { backend: 'bgp', store: 'file', hosts: 3, pods: 2 },
  { backend: 'vxlan', store: 'etcd', hosts: 2, pods: 2 },
  { backend: 'host-gw', store: 'etcd', hosts: 2, pods: 1 },
  { backend: 'udp', store: 'etcd', hosts: 2, pods: 1 },
  { backend: 'bgp', store: 'etcd', hosts: 2, pods: 1 },
  { backend: 'vxlan', store: 'kube', hosts: 3, pods: 2 },
  { backend: 'host-gw', store: 'kube', hosts: 2, pods: 2 },
  { backend: 'bgp', store: 'kube', hosts: 3, pods: 1 },
  { backend: 'udp', store: 'kube', hosts: 2, pods: 1 },
];

describe('weftctl lab up/check/down per backend and store', { timeout: 200_000 }, () => {
  const used: string[] = [];
  after(() => { for (const n of used) downQuietly(n); });

  for (const c of cases) {
    it(`${c.backend} on the ${c.store} store (${c.hosts} hosts × ${c.pods})`, () => {
      const name = labName();
      used.push(name);
      const rec = upOk(['--name', name, '--backend', c.backend, '--store', c.store, '--hosts', String(c.hosts), '--pods', String(c.pods)]);
      assert.equal(rec.backend, c.backend);
      assert.equal(rec.store, c.store);
      assert.equal(rec.containers.length, c.hosts * c.pods);
      for (const ns of [rec.underlay, rec.outside, ...rec.hostList.map((h) => h.ns), ...rec.containers.map((x) => x.ns)]) {
        assert.ok(ns?.startsWith(`weftlab-${name}-`), `${ns} carries the lab prefix`);
      }
      if (c.store === 'etcd' && c.backend !== 'macvlan') assert.ok(rec.processes.some((p) => p.role === 'etcd' && alive(p.pid)), 'etcd runs');
      if (c.store === 'kube') {
        assert.ok(rec.processes.some((p) => p.role === 'kube-apiserver' && alive(p.pid)), 'kube-apiserver runs');
        // The controller-manager's allocation: the Network's /24s in registration order.
        assert.deepEqual(rec.hostList.map((h) => h.subnet), rec.hostList.map((h) => `10.244.${h.index}.0/24`));
      }
      assertKernelMatches(rec);
      assertCheckPasses(name, rec);
      const status = lab(['status', '--name', name, '--json']);
      assert.equal(status.code, 0, status.stderr);
      assert.equal((JSON.parse(status.stdout) as { healthy: boolean }).healthy, true);
      const down = lab(['down', '--name', name]);
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, new RegExp(`lab ${name} removed: \\d+ namespace`));
      assertGone(name, rec.processes.map((p) => p.pid));
    });
  }
});

// Issue 7: a macvlan container cannot talk to its own host through the master. Without a shim the
// lab's check shows exactly that (host → own container fails, as expected, and check still
// passes); with --macvlan-shim every host has a bridge-mode macvlan sibling of its containers,
// with an address IPAM never hands out and routes to its own containers, and the probe passes.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cidrContains, parseCidr, parseIP } from '../../src/net/ip.js';
import type { CheckReport } from '../../src/lab/check.js';
import type { LabRecord } from '../../src/lab/state.js';
import { assertGone, downQuietly, lab, labName, upOk } from './lab-harness.js';

function ipJson<T>(ns: string, args: string[]): T {
  const r = spawnSync('ip', ['-n', ns, '-json', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

interface LinkJson { ifname: string; link?: string; addr_info?: Array<{ family: string; local: string; prefixlen: number }>; linkinfo?: { info_kind: string; info_data?: { mode?: string } } }

function check(name: string): CheckReport {
  const r = lab(['check', '--name', name, '--json']);
  assert.equal(r.code, 0, `check failed:\n${r.stdout.slice(0, 3000)}\n${r.stderr}`);
  const report = JSON.parse(r.stdout) as CheckReport;
  for (const p of [...report.pairs, ...report.egress]) assert.ok(p.icmp.ok && p.tcp.ok, `${p.from} → ${p.to}`);
  return report;
}

describe('weftctl lab --backend macvlan: host → own container, without and with --macvlan-shim', { timeout: 90_000 }, () => {
  const used: string[] = [];
  after(() => { for (const n of used) downQuietly(n); });

  it('without a shim the host cannot reach its own containers; check reports it as expected', () => {
    const name = labName('wls');
    used.push(name);
    const rec = upOk(['--name', name, '--backend', 'macvlan', '--hosts', '2', '--pods', '1']);
    for (const h of rec.hostList) {
      assert.equal(ipJson<LinkJson[]>(h.ns, ['link', 'show']).some((l) => l.ifname === 'weft-shim'), false);
      assert.equal(h.shimAddress, undefined);
    }
    const report = check(name);
    assert.equal(report.hostToOwn.length, rec.containers.length);
    for (const p of report.hostToOwn) {
      assert.equal(p.expected, 'fail');
      assert.equal(p.icmp.ok, false, `${p.from} → ${p.to} ICMP fails (macvlan master)`);
      assert.equal(p.tcp.ok, false, `${p.from} → ${p.to} TCP fails`);
      assert.equal(p.asExpected, true);
    }
    const text = lab(['check', '--name', name]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /host → own container \(a macvlan master cannot reach its own macvlans/);
    assert.match(text.stdout, /fails, as expected/);
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, rec.processes.map((p) => p.pid));
  });

  it('--macvlan-shim: a shim per host (kernel view), its address outside IPAM, host → own container passes', () => {
    const name = labName('wls');
    used.push(name);
    const rec: LabRecord = upOk(['--name', name, '--backend', 'macvlan', '--macvlan-shim', '--hosts', '2', '--pods', '2']);
    assert.equal(rec.macvlanShim, true);
    const shimAddrs = new Set<string>();
    for (const h of rec.hostList) {
      assert.ok(h.shimAddress, `h${h.index} recorded its shim address`);
      shimAddrs.add(h.shimAddress);
      const [shim] = ipJson<LinkJson[]>(h.ns, ['-d', 'addr', 'show', 'weft-shim']);
      assert.ok(shim, `weft-shim on h${h.index}`);
      assert.equal(shim.linkinfo?.info_kind, 'macvlan');
      assert.equal(shim.linkinfo?.info_data?.mode, 'bridge');
      assert.equal(shim.link, 'eth0');
      assert.ok(shim.addr_info?.some((a) => a.family === 'inet' && a.local === h.shimAddress && a.prefixlen === 32));
      // Own containers are routed via the shim; others' containers are not.
      const viaShim = ipJson<Array<{ dst: string; prefsrc?: string }>>(h.ns, ['route', 'show', 'dev', 'weft-shim']);
      for (const c of rec.containers) {
        const routed = viaShim.some((r) => cidrContains(parseCidr(r.dst.includes('/') ? r.dst : `${r.dst}/32`), parseIP(c.ip ?? '')));
        assert.equal(routed, c.host === h.index, `${c.name} ${c.ip} routed via h${h.index}'s shim: ${c.host === h.index}`);
      }
      assert.ok(viaShim.every((r) => r.prefsrc === h.shimAddress), 'the host answers from its shim address');
    }
    for (const c of rec.containers) assert.equal(shimAddrs.has(c.ip ?? ''), false, `${c.name} did not get a shim address`);
    const report = check(name);
    assert.equal(report.ok, true);
    assert.equal(report.hostToOwn.length, rec.containers.length);
    for (const p of report.hostToOwn) {
      assert.equal(p.expected, 'pass');
      assert.ok(p.icmp.ok && p.tcp.ok, `${p.from} → ${p.to} through the shim`);
    }
    assert.match(lab(['status', '--name', name]).stdout, /shim/);
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, rec.processes.map((p) => p.pid));
  });

  it('--macvlan-shim with another backend is refused up-front', () => {
    const r = lab(['up', '--name', labName('wls'), '--backend', 'vxlan', '--macvlan-shim']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--macvlan-shim: only for --backend macvlan/);
  });
});

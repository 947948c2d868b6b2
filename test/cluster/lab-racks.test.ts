// weftctl lab up --backend bgp --racks R: hosts on R L2 segments joined only by a router namespace
// running BIRD 2. Containers reach each other across racks through BGP-learned routes (the router's
// kernel and the hosts'), egress and etcd live behind the router's uplink, status shows BIRD's
// sessions, and down removes everything after kill -9 of BIRD or of the lab itself. Backends that
// cannot span racks are refused before anything is made.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CheckReport } from '../../src/lab/check.js';
import type { LabRecord } from '../../src/lab/state.js';
import { alive, assertGone, downQuietly, lab, labName, labUpAsync, namespacesOf, record, stateDir, upOk } from './lab-harness.js';
import { existsSync } from 'node:fs';

interface RouteJson { dst: string; gateway?: string; dev?: string }

function ipJson<T>(ns: string, args: string[]): T {
  const r = spawnSync('ip', ['-n', ns, '-json', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

function checkAll(name: string, rec: LabRecord): CheckReport {
  const r = lab(['check', '--name', name, '--json']);
  assert.equal(r.code, 0, `check failed:\n${r.stdout.slice(0, 3000)}\n${r.stderr}`);
  const report = JSON.parse(r.stdout) as CheckReport;
  const n = rec.hosts * rec.pods;
  assert.equal(report.pairs.length, n * (n - 1));
  assert.equal(report.egress.length, n);
  for (const p of [...report.pairs, ...report.egress]) {
    assert.equal(p.icmp.ok, true, `${p.from} → ${p.to} ICMP`);
    assert.equal(p.tcp.ok, true, `${p.from} → ${p.to} TCP`);
  }
  return report;
}

/** Container names by rack, from the record. */
function rackOf(rec: LabRecord, container: string): number | undefined {
  const c = rec.containers.find((x) => x.name === container);
  return rec.hostList.find((h) => h.index === c?.host)?.rack;
}

function assertRackFabric(rec: LabRecord): void {
  assert.ok(rec.router && rec.switches && rec.outside, 'router, switches and outside recorded');
  assert.equal(rec.underlay, undefined, 'no single underlay switch');
  assert.equal(rec.switches.length, rec.racks);
  for (const h of rec.hostList) {
    assert.ok(h.rack !== undefined);
    assert.ok(h.ip.startsWith(`198.18.${h.rack}.`), `h${h.index} on rack ${h.rack}'s segment`);
    // The host's only way off its segment is its rack's router.
    const def = ipJson<RouteJson[]>(h.ns, ['route', 'show', 'default']);
    assert.equal(def[0]?.gateway, `198.18.${h.rack}.254`);
    // Every other host's subnet learned over BGP (proto 88); other racks via the router.
    const learned = new Map(ipJson<RouteJson[]>(h.ns, ['route', 'show', 'proto', '88']).map((r) => [r.dst, r.gateway]));
    for (const o of rec.hostList.filter((x) => x !== h)) {
      const via = learned.get(o.subnet ?? '');
      assert.ok(via, `h${h.index} has a BGP route to h${o.index}'s ${o.subnet}`);
      if (o.rack !== h.rack) assert.equal(via, `198.18.${h.rack}.254`, `h${h.index} → other rack via its router`);
    }
  }
  // The router's kernel holds every pod subnet via its host (BIRD's kernel protocol), and a
  // default route to the outside.
  const routes = ipJson<RouteJson[]>(rec.router, ['route', 'show']);
  for (const h of rec.hostList) assert.ok(routes.some((r) => r.dst === h.subnet && r.gateway === h.ip), `router: ${h.subnet} via ${h.ip}`);
  assert.ok(routes.some((r) => r.dst === 'default' && r.gateway === rec.outsideIP && r.dev === 'up0'));
  // The outside knows the hosts, not the pods (egress is masqueraded).
  const outside = ipJson<RouteJson[]>(rec.outside, ['route', 'show']);
  assert.equal(outside.some((r) => r.dst.startsWith('10.')), false, 'outside has no pod route');
}

function assertBirdSessions(name: string, rec: LabRecord): void {
  const st = lab(['status', '--name', name, '--json']);
  assert.equal(st.code, 0, st.stderr);
  const s = JSON.parse(st.stdout) as { healthy: boolean; bird?: { sessions?: Array<{ name: string; info: string }> } };
  assert.equal(s.healthy, true);
  assert.deepEqual(s.bird?.sessions?.map((b) => b.name).sort(), rec.hostList.map((h) => `h${h.index}`).sort());
  for (const b of s.bird?.sessions ?? []) assert.match(b.info, /Established/, `BIRD ↔ ${b.name}`);
  const text = lab(['status', '--name', name]);
  assert.match(text.stdout, /BIRD sessions on the router/);
  assert.match(text.stdout, /h0\s+198\.18\.0\.1\s+up\s+Established/);
}

describe('weftctl lab --racks (bgp across L2 segments through a BIRD router)', { timeout: 150_000 }, () => {
  const used: string[] = [];
  after(() => { for (const n of used) downQuietly(n); });

  it('2 racks, file store: all-to-all ICMP/TCP incl. across racks, egress; kill -9 of BIRD shows in status; down removes everything', async () => {
    const name = labName('wls');
    used.push(name);
    const rec = upOk(['--name', name, '--backend', 'bgp', '--racks', '2', '--hosts', '3', '--pods', '2']);
    assert.equal(rec.racks, 2);
    assert.deepEqual(rec.hostList.map((h) => h.rack), [0, 0, 1]);
    for (const ns of [rec.router, ...(rec.switches ?? []), rec.outside]) assert.ok(ns?.startsWith(`weftlab-${name}-`), `${ns} carries the lab prefix`);
    assertRackFabric(rec);
    const report = checkAll(name, rec);
    const crossRack = report.pairs.filter((p) => rackOf(rec, p.from) !== rackOf(rec, p.to));
    assert.equal(crossRack.length, 2 * 4 * 2, 'h2\'s 2 containers ↔ the 4 in rack 0, both ways');
    // Across racks the path really is routed by the router: host → router → host.
    const from = rec.containers.find((c) => c.host === 0);
    const to = rec.containers.find((c) => c.host === 2);
    const ping = spawnSync('ip', ['netns', 'exec', from?.ns ?? '', 'ping', '-c1', '-W2', to?.ip ?? ''], { encoding: 'utf8' });
    assert.match(ping.stdout, /ttl=61/, 'three routed hops (h0, router, h2)');
    assertBirdSessions(name, rec);

    const bird = rec.processes.find((p) => p.role === 'bird');
    assert.ok(bird && alive(bird.pid), 'BIRD recorded and running');
    process.kill(bird.pid, 'SIGKILL');
    for (let i = 0; i < 100 && alive(bird.pid); i++) await sleep(20);
    const st = lab(['status', '--name', name, '--json']);
    assert.equal(st.code, 1, 'a dead BIRD makes the lab unhealthy');
    const s = JSON.parse(st.stdout) as { healthy: boolean; processes: Array<{ role: string; alive: boolean }>; bird?: { error?: string } };
    assert.equal(s.processes.find((p) => p.role === 'bird')?.alive, false);
    assert.match(s.bird?.error ?? '', /control socket|Connection refused|No such file/);
    assert.match(lab(['status', '--name', name]).stdout, /bird\s+\d+\s+DEAD/);
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, rec.processes.map((p) => p.pid));
  });

  it('2 racks, etcd store: etcd in the outside namespace is reached through the router', () => {
    const name = labName('wls');
    used.push(name);
    const rec = upOk(['--name', name, '--backend', 'bgp', '--racks', '2', '--hosts', '2', '--pods', '1', '--store', 'etcd']);
    assert.equal(rec.etcdUrl, `http://${rec.outsideIP}:2379`);
    assert.ok(rec.processes.some((p) => p.role === 'etcd' && p.ns === rec.outside && alive(p.pid)));
    assert.notEqual(rec.hostList[0]?.rack, rec.hostList[1]?.rack);
    assertRackFabric(rec);
    checkAll(name, rec);
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, rec.processes.map((p) => p.pid));
  });

  it('kill -9 of lab up with BIRD already running: down removes router, switches, BIRD and the rest', async () => {
    const name = labName('wls');
    used.push(name);
    const up = labUpAsync(['--name', name, '--backend', 'bgp', '--racks', '2', '--hosts', '2', '--pods', '1']);
    const exited = new Promise((r) => up.once('exit', r));
    let rec: LabRecord | undefined;
    for (let i = 0; i < 1000 && !rec; i++) {
      const r = record(name);
      if (r?.processes.some((p) => p.role === 'bird')) rec = r;
      else await sleep(10);
    }
    assert.ok(rec, 'BIRD recorded');
    if (up.pid !== undefined) process.kill(up.pid, 'SIGKILL');
    await exited;
    const bird = rec.processes.find((p) => p.role === 'bird');
    assert.ok(bird && alive(bird.pid), 'BIRD (detached) outlives the killed up');
    assert.ok(namespacesOf(name).some((n) => n === rec.router), 'router namespace left behind');
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, [bird.pid, ...(record(name)?.processes.map((p) => p.pid) ?? [])]);
  });

  for (const c of [
    { args: ['--racks', '0', '--backend', 'bgp'], msg: /--racks: expected 1\.\.16, got 0/ },
    { args: ['--racks', '2', '--backend', 'host-gw'], msg: /--racks 2: the host-gw backend cannot span racks: it routes each pod subnet straight to the owning host's underlay address as next hop, so every host must share one L2 segment/ },
    { args: ['--racks', '2', '--backend', 'macvlan'], msg: /the macvlan backend cannot span racks/ },
    { args: ['--racks', '4', '--backend', 'bgp', '--hosts', '3'], msg: /--racks 4: needs at least one host per rack, got --hosts 3/ },
  ]) {
    it(`lab up ${c.args.join(' ')} → exit 2, nothing made`, () => {
      const name = labName('wls');
      const r = lab(['up', '--name', name, ...c.args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, c.msg);
      assert.deepEqual(namespacesOf(name), []);
      assert.equal(existsSync(stateDir(name)), false);
    });
  }
  it('--racks applies to lab up only', () => {
    const r = lab(['status', '--name', 'wlsnothere', '--racks', '2']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--racks does not apply to lab status/);
  });
});

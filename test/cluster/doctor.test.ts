// weftctl doctor on a real lab (vxlan, 2 hosts × 1 pod, file store): OK for a working pair, then
// each link broken on purpose — route to the peer subnet, FDB entry, pod MTU, vxlan device MTU,
// a deny NetworkPolicy, the peer's weftd — and doctor must name that link first, with a fix that
// (where it is a command) really repairs it. Run under /tmp/weft-netns.lock.
//
// weftd repairs its routes and FDB entries every 5 s; while those two are broken the source
// host's weftd is paused (SIGSTOP, by the PID the lab recorded), so the check sees the break and
// not a race with the repair pass. It is resumed before the next case.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { DoctorReport } from '../../src/doctor/types.js';
import type { LabRecord } from '../../src/lab/state.js';
import { WEFTCTL, alive, cleanEnv, downQuietly, labName, stateDir, upOk } from './lab-harness.js';

const name = labName('wdr');
let rec: LabRecord;

interface DoctorRun { code: number | null; report: DoctorReport; text: string }

function doctor(extra: string[] = []): DoctorRun {
  const args = ['doctor', 'h0c0', 'h1c0', '--lab', name, ...extra];
  const j = spawnSync(WEFTCTL, [...args, '--json'], { encoding: 'utf8', env: cleanEnv(), timeout: 30_000 });
  assert.ok(j.stdout.trim() !== '', `doctor printed nothing: ${j.stderr}`);
  const t = spawnSync(WEFTCTL, args, { encoding: 'utf8', env: cleanEnv(), timeout: 30_000 });
  return { code: j.status, report: JSON.parse(j.stdout) as DoctorReport, text: t.stdout };
}

function assertOk(r: DoctorRun): void {
  const bad = r.report.hops.filter((h) => h.status === 'fail' || h.status === 'warn');
  assert.deepEqual(bad, [], r.text);
  assert.equal(r.report.ok, true);
  assert.equal(r.code, 0);
}

/** The first broken hop is `id`; returns it. The text report names it on its last line. */
function assertBrokenAt(r: DoctorRun, id: string): NonNullable<DoctorReport['firstFailure']> {
  assert.equal(r.code, 1, r.text);
  assert.equal(r.report.ok, false);
  const f = r.report.firstFailure;
  assert.ok(f, r.text);
  assert.equal(f.id, id, r.text);
  assert.ok(f.fix !== undefined && f.fix !== '', `${id} has a fix`);
  assert.match(r.text.trim().split('\n').pop() ?? '', new RegExp(`^broken at ${id} `));
  return f;
}

function sh(cmd: string): void {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
}

function hostNs(i: number): string {
  const h = rec.hostList[i];
  assert.ok(h);
  return h.ns;
}

function weftdPid(i: number): number {
  const p = rec.processes.find((x) => x.role === `weftd h${i}`);
  assert.ok(p, `lab record has weftd h${i}`);
  return p.pid;
}

function paused<T>(pid: number, fn: () => T): T {
  process.kill(pid, 'SIGSTOP');
  try {
    return fn();
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

/** The peer's VtepMAC as h0's FDB holds it for h1's public IP. */
function peerVtepMac(): { mac: string; dst: string } {
  const r = spawnSync('bridge', ['-n', hostNs(0), '-json', 'fdb', 'show', 'dev', 'weft.1'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const h1 = rec.hostList[1];
  assert.ok(h1);
  const e = (JSON.parse(r.stdout) as Array<{ mac: string; dst?: string }>).find((x) => x.dst === h1.ip);
  assert.ok(e, `h0 has an FDB entry for ${h1.ip}`);
  return { mac: e.mac, dst: h1.ip };
}

describe('weftctl doctor on a vxlan lab', { timeout: 180_000 }, () => {
  before(() => {
    rec = upOk(['--name', name, '--hosts', '2', '--pods', '1', '--backend', 'vxlan']);
  });
  after(() => downQuietly(name));

  it('says OK for a working pair, every hop of the cross-host path looked at', () => {
    const r = doctor();
    assertOk(r);
    const ids = r.report.hops.map((h) => h.id);
    for (const id of ['src-pod-interface', 'src-pod-route', 'src-host-link', 'vxlan-device', 'backend-route', 'vxlan-neigh', 'vxlan-fdb', 'src-agent', 'peer-lease', 'dst-agent', 'policy', 'dst-host-link', 'dst-pod-interface']) {
      assert.ok(ids.includes(id), `hop ${id} in ${ids.join(',')}`);
    }
    assert.equal(r.report.src.node, 'h0');
    assert.equal(r.report.dst.node, 'h1');
    assert.ok(r.report.hops.filter((h) => h.status === 'ok').length >= 12, r.text);
  });

  it('works on a node without --lab: pods from its endpoint records and CNI cache, peers from the store', () => {
    const dir = stateDir(name);
    const r = spawnSync('ip', ['netns', 'exec', hostNs(0), WEFTCTL, 'doctor', 'lab/h0c0', 'lab/h1c0', '--json',
      '--store', 'file', '--store-dir', join(dir, 'store'), '--subnet-file', join(dir, 'hosts', 'h0', 'subnet.env'),
      '--cache-dir', join(dir, 'hosts', 'h0', 'cni-cache'), '--node-name', 'h0', '--health-addr', '127.0.0.1:9417'], { encoding: 'utf8', env: cleanEnv(), timeout: 30_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as DoctorReport;
    const status = (id: string) => report.hops.find((h) => h.id === id)?.status;
    // The source pod's namespace was found (through the cached CNI result), so its side was looked at.
    assert.equal(status('src-pod-interface'), 'ok');
    assert.equal(status('vxlan-fdb'), 'ok');
    assert.equal(status('src-agent'), 'ok');
    // The destination lives on another node: seen through the store only.
    assert.equal(report.dst.node, 'h1');
    assert.equal(status('dst-pod-interface'), 'skip');
    assert.equal(status('dst-agent'), 'skip');
    assert.equal(status('peer-lease'), 'ok');
  });

  it('names the deleted route to the peer subnet, and its fix puts it back', () => {
    const h1 = rec.hostList[1];
    assert.ok(h1?.subnet);
    paused(weftdPid(0), () => {
      sh(`ip -n ${hostNs(0)} route del ${h1.subnet}`);
      const f = assertBrokenAt(doctor(), 'backend-route');
      assert.match(f.detail, /not weft's route/);
      assert.ok(f.fix?.startsWith(`ip -n ${hostNs(0)} route replace ${h1.subnet} `), f.fix);
      sh(f.fix ?? '');
      // The route is back; with weftd still paused the next broken link is weftd itself.
      assert.equal(doctor().report.firstFailure?.id, 'src-agent');
    });
    assertOk(doctor());
  });

  it('names the missing FDB entry, and its fix puts it back', () => {
    const { mac, dst } = peerVtepMac();
    paused(weftdPid(0), () => {
      sh(`bridge -n ${hostNs(0)} fdb del ${mac} dev weft.1 dst ${dst}`);
      const f = assertBrokenAt(doctor(), 'vxlan-fdb');
      assert.match(f.detail, new RegExp(`no FDB entry for ${mac}`));
      sh(f.fix ?? '');
      assert.equal(doctor().report.firstFailure?.id, 'src-agent');
    });
    assertOk(doctor());
  });

  it('names a wrong MTU on the pod interface and on the vxlan device', () => {
    const pod = rec.containers.find((c) => c.name === 'h0c0');
    assert.ok(pod);
    sh(`ip -n ${pod.ns} link set dev eth0 mtu 1400`);
    let f = assertBrokenAt(doctor(), 'src-pod-interface');
    assert.match(f.detail, /MTU 1400, but the network's MTU on h0 is 1450/);
    sh(f.fix ?? '');
    assertOk(doctor());

    sh(`ip -n ${hostNs(0)} link set dev weft.1 mtu 1300`);
    f = assertBrokenAt(doctor(), 'vxlan-device');
    assert.match(f.detail, /weft\.1 MTU 1300, network MTU 1450/);
    sh(f.fix ?? '');
    assertOk(doctor());
  });

  it('names the NetworkPolicy that denies, for ICMP and for TCP', () => {
    const store = ['--store', 'file', '--store-dir', join(stateDir(name), 'store')];
    const file = join(tmpdir(), `${name}-deny.json`);
    writeFileSync(file, JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy',
      metadata: { name: 'deny-in', namespace: 'lab' },
      spec: { podSelector: {}, policyTypes: ['Ingress'] },
    }));
    const apply = spawnSync(WEFTCTL, ['policy', 'apply', '-f', file, ...store], { encoding: 'utf8', env: cleanEnv() });
    assert.equal(apply.status, 0, apply.stderr);
    try {
      const f = assertBrokenAt(doctor(), 'policy');
      assert.match(f.cause ?? '', /denied by NetworkPolicy lab\/deny-in/);
      assert.match(f.detail, /isolates lab\/h1c0 for ingress and no ingress rule admits lab\/h0c0/);
      assert.match(f.fix ?? '', /weftctl policy delete deny-in -n lab/);
      assertBrokenAt(doctor(['--protocol', 'TCP', '--port', '7']), 'policy');
    } finally {
      const del = spawnSync(WEFTCTL, ['policy', 'delete', 'deny-in', '-n', 'lab', ...store], { encoding: 'utf8', env: cleanEnv() });
      assert.equal(del.status, 0, del.stderr);
    }
    assertOk(doctor());
  });

  // Last: the lab cannot restart one weftd, so this case leaves h1 without its agent.
  it('names the stopped peer weftd, with its log', async () => {
    const pid = weftdPid(1);
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(alive(pid), false, 'weftd h1 exited');
    const r = doctor();
    const f = assertBrokenAt(r, 'dst-agent');
    assert.match(f.detail, /did not answer/);
    assert.match(f.cause ?? '', /h1's weftd is down/);
    assert.ok(f.fix?.includes(join(stateDir(name), 'hosts', 'h1', 'weftd.log')), f.fix);
    // Everything before it on the path still holds: the break is the agent, not the dataplane.
    const before = r.report.hops.slice(0, r.report.hops.indexOf(r.report.hops.find((h) => h.id === 'dst-agent') ?? r.report.hops[0]!));
    assert.ok(before.every((h) => h.status === 'ok' || h.status === 'skip'), r.text);
  });
});

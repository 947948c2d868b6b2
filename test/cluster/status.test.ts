// `weftctl status` on a lab host (vxlan, 2 hosts): what weftd, subnet.env, the kernel and the CNI
// socket say, in the table and in --json; a policy applied shows up in the policy row; with the
// host's weftd stopped, status exits 1, says weftd is unreachable and still shows what the files
// and the kernel hold.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { WEFTCTL, cleanEnv, lab, labName, record, stateDir, assertGone } from './lab-harness.js';

const name = labName('wsa');

function statusIn(ns: string, args: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, WEFTCTL, 'status', '--subnet-file', join(stateDir(name), 'hosts/h0/subnet.env'), ...args],
    { encoding: 'utf8', env: cleanEnv(), timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface StatusJson {
  weftd: { reachable: boolean; readyz?: { ready: boolean; backend: string; peers: number; publicIP: string } };
  subnetFile: { env?: { subnet: string; network: string; backend: string } };
  kernel: { weftRoutes: number; peerSubnetsRouted: number };
  cniFastPath: { answering: boolean };
}

describe('weftctl status on a lab host', { timeout: 180_000 }, () => {
  before(() => {
    const up = lab(['up', '--name', name, '--hosts', '2', '--pods', '1', '--backend', 'vxlan']);
    assert.equal(up.code, 0, up.stdout + up.stderr);
  });
  after(() => {
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name);
  });

  it('ready: lease, backend, public IP, peers leased and routed, last repair, store, rules, CNI fast path', () => {
    const rec = record(name)!;
    const h0 = rec.hostList[0]!;
    const r = statusIn(h0.ns);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^weftd\s+ready \(running\) at 127\.0\.0\.1:9417$/m);
    assert.match(r.stdout, new RegExp(`^subnet\\s+${h0.subnet!.replace(/\./g, '\\.').replace('/', '\\/')} \\(ready\\)$`, 'm'));
    assert.match(r.stdout, /^backend\s+vxlan, MTU 1450, ipMasq on$/m);
    assert.match(r.stdout, new RegExp(`^public IP\\s+${h0.ip.replace(/\./g, '\\.')} on \\S+$`, 'm'));
    assert.match(r.stdout, /^peers\s+1 leases, 1 routed in the kernel$/m);
    assert.match(r.stdout, /^last repair\s+\S+ ago: \d+ written, \d+ removed$/m);
    assert.match(r.stdout, /^store\s+reachable$/m);
    assert.match(r.stdout, /^CNI fast path\s+up \(/m);

    const j = JSON.parse(statusIn(h0.ns, ['--json']).stdout) as StatusJson;
    assert.equal(j.weftd.readyz?.ready, true);
    assert.equal(j.weftd.readyz?.publicIP, h0.ip);
    assert.equal(j.subnetFile.env?.backend, 'vxlan');
    assert.equal(j.kernel.peerSubnetsRouted, 1);
    assert.equal(j.cniFastPath.answering, true);
  });

  it('a policy applied to the store is counted in the policy row', async () => {
    const h0 = record(name)!.hostList[0]!;
    const policy = JSON.stringify({ metadata: { name: 'deny', namespace: 'default' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
    const applied = spawnSync(WEFTCTL, ['policy', 'apply', '-f', '-', '--store', 'file', '--store-dir', join(stateDir(name), 'store')], { input: policy, encoding: 'utf8', env: cleanEnv() });
    assert.equal(applied.status, 0, applied.stderr);
    let row = '';
    for (let i = 0; i < 50 && !/enforcing 1 policies/.test(row); i++) {
      row = statusIn(h0.ns).stdout.split('\n').find((l) => l.startsWith('policy')) ?? '';
      if (!/enforcing 1 policies/.test(row)) await new Promise((res) => setTimeout(res, 200));
    }
    assert.match(row, /^policy\s+enforcing 1 policies; \d+ pods known to policy$/);
  });

  it('weftd stopped: exit 1, weftd unreachable, subnet.env and the kernel still shown, fast path down', () => {
    const rec = record(name)!;
    const h0 = rec.hostList[0]!;
    const weftd = rec.processes.find((p) => p.role === 'weftd h0');
    assert.ok(weftd, `weftd h0 among ${JSON.stringify(rec.processes.map((p) => p.role))}`);
    process.kill(weftd.pid, 'SIGTERM');
    for (let i = 0; i < 100; i++) {
      try { process.kill(weftd.pid, 0); } catch { break; }
      spawnSync('sleep', ['0.1']);
    }
    const r = statusIn(h0.ns);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^weftd\s+UNREACHABLE at 127\.0\.0\.1:9417: cannot reach weftd/m);
    assert.match(r.stdout, /^subnet\s+\S+ \(from subnet\.env\)$/m);
    // weftd keeps the dataplane on SIGTERM: the peer's route stays.
    assert.match(r.stdout, /^peers\s+\? leases, 1 routed in the kernel$/m);
    assert.match(r.stdout, /^CNI fast path\s+down \(.*\): .*; plugins work standalone$/m);
  });
});

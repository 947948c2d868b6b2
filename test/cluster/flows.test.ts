// Flow records on a real lab (vxlan, 2 hosts × 2 pods, file store), read with weftctl flows: an
// iperf3 run across hosts is one record naming both pods, whose bytes agree with iperf3's own
// count; a connection a NetworkPolicy denies is a dropped record naming the policy, soon after
// the attempt. How much the observation costs is `npm run bench -- flows`. Run under
// /tmp/weft-netns.lock.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FlowRecord } from '../../src/flows/record.js';
import { iperf } from '../../src/lab/bench.js';
import { execIn } from '../../src/lab/exec.js';
import { ECHO_PORT } from '../../src/lab/lab.js';
import type { LabRecord } from '../../src/lab/state.js';
import { WEFTCTL, cleanEnv, downQuietly, labName, stateDir, upOk } from './lab-harness.js';

const name = labName('wfl');
let rec: LabRecord;

function pod(n: string): { ns: string; ip: string } {
  const c = rec.containers.find((x) => x.name === n);
  assert.ok(c?.ip, `lab pod ${n}`);
  return { ns: c.ns, ip: c.ip };
}

function flows(args: string[]): FlowRecord[] {
  const r = spawnSync(WEFTCTL, ['flows', '--lab', name, '--json', ...args], { encoding: 'utf8', env: cleanEnv(), timeout: 30_000 });
  assert.equal(r.status, 0, `weftctl flows: ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as FlowRecord);
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('weftctl flows on a 2-host vxlan lab', { timeout: 300_000 }, () => {
  before(() => {
    rec = upOk(['--name', name, '--hosts', '2', '--pods', '2', '--backend', 'vxlan']);
  });

  after(() => downQuietly(name));

  it('an iperf3 run across hosts is one record naming both pods, with iperf3\'s bytes within 2 %', async (t) => {
    const [src, dst] = [pod('h0c0'), pod('h1c0')];
    const r = await iperf(dst.ns, src.ns, dst.ip, 2);
    assert.ok(r.sentBytes > 0);
    const data = await waitFor('the iperf3 data connection\'s completed record', () => {
      const fs = flows(['--pod', 'lab/h1c0']).filter((f) => f.proto === 'TCP' && f.dstPort === 5201 && f.end !== undefined);
      return fs.sort((a, b) => b.bytes - a.bytes)[0];
    });
    assert.deepEqual([data.src.namespace, data.src.pod, data.dst.namespace, data.dst.pod], ['lab', 'h0c0', 'lab', 'h1c0']);
    assert.equal(data.verdict, 'forwarded');
    assert.deepEqual(data.node.split(',').sort(), ['h0', 'h1'], 'seen by both hosts, folded into one');
    const off = data.bytes / r.sentBytes - 1;
    t.diagnostic(`iperf3 sent ${r.sentBytes} payload bytes; the flow record counts ${data.bytes} (${(off * 100).toFixed(2)} %, IP headers and the ACKs included)`);
    assert.ok(Math.abs(off) <= 0.02, `flow bytes ${data.bytes} vs iperf3 ${r.sentBytes}: ${(off * 100).toFixed(2)} %`);
  });

  it('a connection a NetworkPolicy denies is a dropped record naming the policy', async (t) => {
    const policy = {
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-to-h1', namespace: 'lab' },
      spec: { podSelector: { matchLabels: { host: 'h1' } }, policyTypes: ['Ingress'] },
    };
    const file = join(stateDir(name), 'deny-to-h1.json');
    writeFileSync(file, JSON.stringify(policy));
    const applied = spawnSync(WEFTCTL, ['policy', 'apply', '-f', file, '--store', 'file', '--store-dir', join(stateDir(name), 'store')], { encoding: 'utf8', env: cleanEnv() });
    assert.equal(applied.status, 0, applied.stderr);
    const [src, dst] = [pod('h0c1'), pod('h1c1')];
    // Until weftd enforces the policy a connection still goes through: attempt until one is
    // dropped, each time looking for its record.
    let attemptAt = 0;
    const dropped = await waitFor('a dropped record for lab/h1c1', async () => {
      attemptAt = Date.now();
      await execIn(src.ns, ['timeout', '1', 'bash', '-c', `echo > /dev/tcp/${dst.ip}/${ECHO_PORT}`], { timeoutMs: 3000 });
      return flows(['--verdict', 'dropped', '--pod', 'lab/h1c1']).find((f) => f.src.pod === 'h0c1' && f.dstPort === ECHO_PORT);
    }, 30_000);
    t.diagnostic(`a dropped record was there ${Date.now() - attemptAt} ms after the attempt began (the attempt itself waits 1 s for its SYN's answer)`);
    assert.equal(dropped.verdict, 'dropped');
    assert.equal(dropped.policy, 'lab/deny-to-h1');
    assert.deepEqual([dropped.src.namespace, dropped.dst.namespace, dropped.proto], ['lab', 'lab', 'TCP']);
    assert.ok(dropped.node.split(',').includes('h1'), 'the node that dropped it recorded it');
    const table = spawnSync(WEFTCTL, ['flows', '--lab', name, '--verdict', 'dropped'], { encoding: 'utf8', env: cleanEnv() });
    assert.match(table.stdout, /^START\s+SRC\s+DST/m);
    assert.match(table.stdout, /lab\/h0c1\s+lab\/h1c1\s+TCP\s+7\s+dropped\s+lab\/deny-to-h1/);
  });
});

// weftd through an etcd outage: it logs that the store went away and that it came back — state
// changes — not every reconnect attempt, and catches up once etcd returns. Real etcd in the
// topology's outside namespace, weftd in a host namespace reaching it over the underlay.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Topology } from '../../src/lab/topology.js';
import { formatIP } from '../../src/net/ip.js';
import { cleanEnv, inNs, readyz, setConfig, startWeftd, stopAll, stopWeftd, tempDir, waitFor, waitReady, type Weftd } from '../netns/agent-harness.js';

interface LogLine { level: string; msg: string; [k: string]: unknown }

function parseLines(text: string): LogLine[] {
  return text.split('\n').flatMap((l) => {
    try { return [JSON.parse(l) as LogLine]; } catch { return []; }
  });
}

describe('weftd through an etcd outage', { timeout: 120_000 }, () => {
  let topo: Topology;
  let tmp: { path: string; remove(): void };
  let dataDir = '';
  let etcd: ChildProcess | undefined;
  let url = '';
  let w: Weftd;

  const startEtcd = (): void => {
    const ip = formatIP(topo.outsideIP);
    url = `http://${ip}:2379`;
    etcd = spawn('ip', ['netns', 'exec', topo.outside, '/usr/bin/etcd', '--name', 'weftsh', '--data-dir', dataDir,
      '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', `http://${ip}:2380`, '--initial-advertise-peer-urls', `http://${ip}:2380`,
      '--initial-cluster', `weftsh=http://${ip}:2380`, '--log-level', 'error', '--heartbeat-interval', '50', '--election-timeout', '400'],
    { stdio: 'ignore', env: cleanEnv({ ETCD_UNSUPPORTED_ARCH: '' }) });
  };
  const killEtcd = async (): Promise<void> => {
    const p = etcd;
    etcd = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null || p.pid === undefined) return;
    const done = new Promise((r) => p.once('exit', r));
    process.kill(p.pid, 'SIGKILL');
    await done;
  };
  const etcdHealthy = () => inNs(topo.host(0).ns, ['curl', '-sf', `${url}/health`], 2000).stdout.includes('true');

  before(async () => {
    topo = Topology.create({ prefix: 'weftsh', hosts: 1 });
    tmp = tempDir('weftsh-outage');
    dataDir = mkdtempSync(join(tmpdir(), 'weftsh-etcd-'));
    startEtcd();
    await waitFor('etcd to answer', etcdHealthy, 20_000, 200);
    const store = ['--store', 'etcd', '--etcd-endpoints', url];
    setConfig(topo.host(0).ns, store, { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
    w = startWeftd(topo.host(0).ns, ['--iface', 'eth0', ...store], join(tmp.path, 'subnet.env'), 9571);
    await waitReady(w);
  });
  after(async () => {
    try {
      await stopAll();
      await killEtcd();
    } finally {
      topo?.destroy();
      tmp?.remove();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('logs the outage and the recovery, not every reconnect attempt', async (t) => {
    const before = w.stderr.join('').length;
    await killEtcd();
    const outageMs = 10_000;
    await sleep(outageMs);
    const during = parseLines(w.stderr.join('').slice(before));
    assert.equal(readyz(w).body?.ready, false, 'not ready without its store');
    // A handful of state changes (store unreachable, watches down, lease not renewable), each once.
    const counts = new Map<string, number>();
    for (const l of during) {
      const key = `${l.level} ${l.msg}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    t.diagnostic(`during the outage: ${JSON.stringify(Object.fromEntries(counts))}`);
    const repeated = [...counts].filter(([, n]) => n > 2);
    assert.deepEqual(repeated, [], `messages repeated during a ${outageMs / 1000} s outage: ${JSON.stringify(Object.fromEntries(counts))}`);
    assert.ok(during.length <= 12, `${during.length} log lines in a ${outageMs / 1000} s outage: ${JSON.stringify(Object.fromEntries(counts))}`);

    const mark = w.stderr.join('').length;
    startEtcd();
    await waitFor('etcd to answer again', etcdHealthy, 20_000, 200);
    await waitReady(w, 30_000);
    const after = parseLines(w.stderr.join('').slice(mark));
    t.diagnostic(`recovering: ${JSON.stringify(after.map((l) => `${l.level} ${l.msg}`))}`);
    assert.ok(after.some((l) => /reachable again/.test(l.msg)), `recovery is logged: ${JSON.stringify(after.map((l) => l.msg))}`);
    assert.ok(after.length <= 12, `${after.length} log lines while recovering: ${JSON.stringify(after.map((l) => l.msg))}`);
    assert.equal(await stopWeftd(w), 0);
  });
});

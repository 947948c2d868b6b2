// weftd against clumsy operators and hostile local clients (issue 16): two weftds on one CNI
// socket, paths under /proc, signals during start-up, idle connections on the CNI socket, and
// two weftds for one node. Real weftd processes in throwaway namespaces, a real file store.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCniServer } from '../../src/agent/cni-server.js';
import { acquireFileLock } from '../../src/fs/lock.js';
import { Topology } from '../../src/lab/topology.js';
import { createLogger } from '../../src/log.js';
import {
  WEFTD, cleanEnv, readyz, setConfig, startWeftd, stopAll, stopWeftd, subnetEnv, tempDir, waitFor, waitReady, type Weftd,
} from './agent-harness.js';

const quiet = createLogger({}, { write: () => {} });

/** Opens `n` connections to a unix socket that never send a byte; resolves once all are open. */
async function idleConnections(path: string, n: number): Promise<Socket[]> {
  const socks: Socket[] = [];
  for (let i = 0; i < n; i++) {
    socks.push(await new Promise<Socket>((resolve, reject) => {
      const s = connect({ path }, () => resolve(s));
      s.on('error', reject);
    }));
  }
  return socks;
}

const closedCount = (socks: readonly Socket[]) => socks.filter((s) => s.destroyed || s.readableEnded).length;

describe('weftd hardening', { timeout: 240_000 }, () => {
  let topo: Topology;
  let tmp: { path: string; remove(): void };
  let store: string[];
  let port = 9530;
  const nextPort = () => port++;

  before(() => {
    topo = Topology.create({ prefix: 'weftsh', hosts: 2 });
    tmp = tempDir('weftsh');
    store = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
    setConfig(topo.host(0).ns, store, { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
  });
  after(async () => {
    try {
      await stopAll();
    } finally {
      topo?.destroy();
      tmp?.remove();
    }
  });

  const start = (host: number, dir: string, extra: string[] = []): Weftd => {
    mkdirSync(join(tmp.path, dir), { recursive: true });
    return startWeftd(topo.host(host).ns, ['--iface', 'eth0', ...store, ...extra], join(tmp.path, dir, 'subnet.env'), nextPort());
  };

  it('two servers claiming one CNI socket at once: exactly one wins, the other names the socket and the owner', async () => {
    const path = join(tmp.path, 'claim', 'cni.sock');
    const handle = async () => ({ stdout: 'ok', exitCode: 0 });
    const results = await Promise.allSettled([0, 1, 2, 3].map(() => startCniServer({ socketPath: path, log: quiet, handle })));
    const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      assert.equal(won.length, 1, `${won.length} servers took ${path}`);
      for (const r of results) {
        if (r.status === 'rejected') assert.match(String(r.reason), new RegExp(`CNI socket ${path.replace(/[.]/g, '\\.')}: .*already serves it .*pid ${process.pid}\\b`));
      }
    } finally {
      await Promise.all(won.map((s) => s.close()));
    }
    assert.equal(existsSync(path), false, 'the socket goes with its server');
    const again = await startCniServer({ socketPath: path, log: quiet, handle });
    await again.close();
  });

  it('two weftds with one --cni-socket: one serves it, the other exits naming the socket and its owner\'s PID', async () => {
    const sock = join(tmp.path, 'shared', 'cni.sock');
    const a = start(0, 'a5', ['--cni-socket', sock]);
    const b = start(1, 'b5', ['--cni-socket', sock]);
    const first = await Promise.race([a.exited.then(() => a), b.exited.then(() => b), sleep(30_000).then(() => undefined)]);
    assert.ok(first, 'one of the two must give up');
    const winner = first === a ? b : a;
    assert.equal(await first.exited, 1);
    const err = first.stderr.join('');
    assert.match(err, new RegExp(`CNI socket ${sock.replace(/[.]/g, '\\.')}: .*already serves it .*pid ${winner.proc.pid}\\b`), err);
    await waitReady(winner);
    assert.equal(subnetEnv(winner.subnetFile).get('WEFT_CNI_SOCKET'), sock);
    // The claim dies with its owner, even a SIGKILLed one: the next weftd takes the socket.
    await stopWeftd(winner, 'SIGKILL');
    const next = start(first === a ? 0 : 1, first === a ? 'a5' : 'b5', ['--cni-socket', sock]);
    await waitReady(next);
    await stopWeftd(next);
  });

  it('paths under /proc are refused at once (exit 2), not looped on at full CPU', () => {
    for (const [flag, path] of [['--cni-socket', '/proc/nope/x'], ['--subnet-file', '/proc/nope/x.env'], ['--store-dir', '/proc/nope/store']] as const) {
      const args = flag === '--subnet-file' ? ['--subnet-file', path] : ['--subnet-file', join(tmp.path, 'p6', 'subnet.env'), flag, path];
      const t0 = Date.now();
      const r = spawnSync('ip', ['netns', 'exec', topo.host(0).ns, WEFTD, '--iface', 'eth0', ...(flag === '--store-dir' ? [] : store), ...args],
        { encoding: 'utf8', env: cleanEnv(), timeout: 20_000, killSignal: 'SIGKILL' });
      assert.equal(r.status, 2, `${flag} ${path}: status ${r.status} signal ${r.signal} after ${Date.now() - t0} ms: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`${flag} ${path}: .*/proc`));
    }
  });

  it('SIGTERM while start-up waits on the store ends weftd at once', async () => {
    // A live process (this one) holds the store's lock: weftd's lease write waits for it.
    const lockDir = join(tmp.path, 'store', 'weft', 'network');
    const lock = await acquireFileLock(join(lockDir, 'lock'));
    try {
      const w = start(0, 'sig6');
      await waitFor('weftd to wait on the lease', () => readyz(w).body?.phase === 'acquiring lease', 15_000);
      const t0 = Date.now();
      if (w.proc.pid !== undefined) process.kill(w.proc.pid, 'SIGTERM');
      const code = await Promise.race([w.exited, sleep(8000).then(() => 'still running')]);
      assert.equal(code, 0, `weftd after SIGTERM: ${String(code)} after ${Date.now() - t0} ms: ${w.stderr.join('').slice(-800)}`);
      assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
    } finally {
      lock.release();
    }
  });

  it('idle connections on the CNI socket are closed after a while and do not hold up shutdown', async () => {
    const w = start(0, 'idle15');
    await waitReady(w);
    const sock = subnetEnv(w.subnetFile).get('WEFT_CNI_SOCKET') ?? '';
    const idle = await idleConnections(sock, 300);
    await waitFor('weftd to close idle connections', () => closedCount(idle) === idle.length, 15_000, 200);
    for (const s of idle) s.destroy();
    // Fresh idle connections at shutdown: nothing to drain, so SIGTERM is not delayed by them.
    const more = await idleConnections(sock, 300);
    const t0 = Date.now();
    assert.equal(await stopWeftd(w), 0);
    assert.ok(Date.now() - t0 < 3000, `shutdown took ${Date.now() - t0} ms with idle connections open`);
    for (const s of more) s.destroy();
  });

  it('a second weftd for the same node takes the lease over; the first stops at once, naming why', async () => {
    const a = start(0, 'a15c');
    await waitReady(a);
    const leased = subnetEnv(a.subnetFile).get('FLANNEL_SUBNET');
    // Same host namespace, same public IP: to the store this is the same node.
    const b = start(0, 'b15c');
    await waitReady(b);
    assert.equal(subnetEnv(b.subnetFile).get('FLANNEL_SUBNET'), leased, 'the lease is reused, as after a restart');
    const code = await Promise.race([a.exited, sleep(15_000).then(() => 'still running')]);
    assert.equal(code, 1, `the first weftd must stop: ${a.stderr.join('').slice(-800)}`);
    assert.match(a.stderr.join(''), /own subnet lease lost: lease 10\.244\.\d+\.0\/24 was taken over by another writer.*public IP 198\.18\.0\.1/);
    assert.equal(readyz(b).body?.ready, true);
    assert.ok(readFileSync(b.subnetFile, 'utf8').includes(leased ?? '-'));
    await stopWeftd(b);
  });
});

// Starts real etcd servers (Debian's /usr/bin/etcd) on 127.0.0.1 with free ports and a temp
// data dir, for tests and benchmarks. Members are killed by PID and their dirs removed on stop.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const ETCD_BIN = '/usr/bin/etcd';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  process: ChildProcess | undefined;
  /** Last lines of the member's stderr, for failure messages. */
  readonly logTail: string[];
}

export interface EtcdCluster {
  readonly members: EtcdMember[];
  /** Client URLs of every member. */
  readonly endpoints: string[];
  kill(i: number): Promise<void>;
  restart(i: number): Promise<void>;
  stop(): Promise<void>;
}

const TIMING = ['--heartbeat-interval', '50', '--election-timeout', '400'];

function startProcess(m: EtcdMember, initialCluster: string, state: 'new' | 'existing'): void {
  const child = spawn(ETCD_BIN, [
    '--name', m.name,
    '--data-dir', m.dataDir,
    '--listen-client-urls', m.clientUrl,
    '--advertise-client-urls', m.clientUrl,
    '--listen-peer-urls', m.peerUrl,
    '--initial-advertise-peer-urls', m.peerUrl,
    '--initial-cluster', initialCluster,
    '--initial-cluster-state', state,
    '--initial-cluster-token', `weft-test-${process.pid}`,
    '--log-level', 'error',
    '--logger', 'zap',
    ...TIMING,
  ], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: '' } });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    m.logTail.push(chunk);
    if (m.logTail.length > 20) m.logTail.shift();
  });
  m.process = child;
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(500) });
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

async function waitHealthy(m: EtcdMember, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (m.process?.exitCode !== null && m.process?.exitCode !== undefined) {
      throw new Error(`etcd ${m.name} exited with ${m.process.exitCode}: ${m.logTail.join('')}`);
    }
    if (await healthy(m.clientUrl)) return;
    await sleep(50);
  }
  throw new Error(`etcd ${m.name} not healthy after ${timeoutMs} ms: ${m.logTail.join('')}`);
}

async function killMember(m: EtcdMember): Promise<void> {
  const child = m.process;
  m.process = undefined;
  if (!child || child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  process.kill(child.pid, 'SIGKILL');
  await exited;
}

/** Starts `size` members (1 or 3) and waits until every one reports healthy. */
export async function startEtcd(size = 1): Promise<EtcdCluster> {
  const base = mkdtempSync(join(tmpdir(), 'weft-etcd-'));
  const members: EtcdMember[] = [];
  for (let i = 0; i < size; i++) {
    members.push({
      name: `m${i}`,
      clientUrl: `http://127.0.0.1:${await freePort()}`,
      peerUrl: `http://127.0.0.1:${await freePort()}`,
      dataDir: join(base, `m${i}`),
      process: undefined,
      logTail: [],
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    async kill(i) {
      const m = members[i];
      if (m) await killMember(m);
    },
    async restart(i) {
      const m = members[i];
      if (!m) return;
      await killMember(m);
      startProcess(m, initialCluster, 'existing');
    },
    async stop() {
      await Promise.all(members.map((m) => killMember(m)));
      rmSync(base, { recursive: true, force: true });
    },
  };
  try {
    for (const m of members) startProcess(m, initialCluster, 'new');
    await Promise.all(members.map((m) => waitHealthy(m)));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Waits until the member answers /health with true (it has a leader). */
export async function waitMemberHealthy(c: EtcdCluster, i: number, timeoutMs = 15_000): Promise<void> {
  const m = c.members[i];
  if (m) await waitHealthy(m, timeoutMs);
}

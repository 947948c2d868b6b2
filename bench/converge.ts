// `npm run bench -- converge`: how fast weftd (vxlan) programs N peers, measured the two ways
// the issue means, for the file store and a real etcd:
//   burst    weftd runs; N peer leases are written as fast as the store allows (bulk writes:
//            one lock for the file store, ≤ 128-key transactions for etcd) → time from the first
//            write until all N routes are in the host's kernel.
//   restart  N leases are already in the store; weftd is started on a fresh host → time from
//            the process start until all N routes are in the kernel.
// Routes are written after their neighbour and FDB entries, so the last route is the last write;
// the bench still checks neighbours and FDB entries once at the end. RSS is read from /proc
// after programming settled. Options: --peers=a,b,c (default 1000,5000), --stores=file,etcd,
// --modes=burst,restart, --profile=DIR (weftd writes a CPU profile there on exit),
// --file-store-base=DIR (where the file store and etcd's data live; default /dev/shm), --settle=S (seconds of RSS watching after programming 5000 peers; default 30, 0 = off), --log-level=debug (weftd's log
// of each measurement, with its reconcile passes, on stderr). Under --profile V8 rejects
// weftd's code cache (made without --cpu-prof), so profiled start-ups are slower than real ones.
// bin/weftd runs its bundle only while it is newer than tsc's last run; each row says which ran.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { WEFT_ROUTE_PROTOCOL } from '../src/agent/dataplane.js';
import { Topology } from '../src/lab/topology.js';
import { Netlink, NetlinkSocket, nlconst } from '../src/netlink/index.js';
import { routeDumpRequest } from '../src/netlink/route.js';
import { formatIP } from '../src/net/ip.js';
import { FileStore } from '../src/store/file/file-store.js';
import type { WriterJob } from './converge-writer.js';
import type { Benchmark, BenchResult } from './main.js';

const WEFTD = fileURLToPath(new URL('../../bin/weftd', import.meta.url));
const WEFTD_BUNDLE_LAUNCHER = fileURLToPath(new URL('../weftd/weftd.cjs', import.meta.url));
const TSC_BUILD_INFO = fileURLToPath(new URL('../.tsbuildinfo', import.meta.url));

/** What bin/weftd will run: the same test as its `-nt` (see bin/weftd). */
function weftdForm(): 'bundle' | 'tsc' {
  try {
    return statSync(WEFTD_BUNDLE_LAUNCHER).mtimeMs > statSync(TSC_BUILD_INFO).mtimeMs ? 'bundle' : 'tsc';
  } catch {
    return 'tsc';
  }
}
const WRITER = fileURLToPath(new URL('./converge-writer.js', import.meta.url));
const CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } });

type StoreKind = 'file' | 'etcd';
type Mode = 'burst' | 'restart';

interface Row {
  readonly store: StoreKind;
  readonly mode: Mode;
  readonly n: number;
  /** Store writes, first to last (burst) or the pre-fill (restart). */
  readonly writeMs: number;
  /** burst: first write → all routes; restart: process start → all routes. */
  readonly totalMs: number;
  /** burst: last write → all routes; restart: process start → weftd ready (subnet.env written). */
  readonly partMs: number;
  readonly rss: number;
  /** Highest RSS over the settle period after programming (undefined: not measured). */
  readonly settledRss: number | undefined;
  /** What bin/weftd ran: the code-cached bundle or tsc's module tree. */
  readonly form: 'bundle' | 'tsc';
}

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function readFileSafe(p: string): string | undefined {
  try { return readFileSync(p, 'utf8'); } catch { return undefined; }
}

async function stopProcess(proc: ChildProcess | undefined, graceMs = 5000): Promise<void> {
  if (!proc || proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  const done = new Promise((r) => proc.once('exit', r));
  process.kill(proc.pid, 'SIGTERM');
  const t = setTimeout(() => { if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid!, 'SIGKILL'); }, graceMs);
  await done;
  clearTimeout(t);
}

/**
 * Counts weft-protocol routes in the main table from the raw dump (protocol and table are bytes
 * 5 and 4 of struct rtmsg): polled every few ms, so it must not decode thousands of routes.
 */
function weftRouteCounter(nsPath: string): { count(): number; close(): void } {
  const sock = NetlinkSocket.open({ nsPath });
  const req = routeDumpRequest({ family: 4, protocol: WEFT_ROUTE_PROTOCOL });
  return {
    count: () => sock.dump(req, 'count weft routes', nlconst.RTM_NEWROUTE)
      .filter((m) => m.payload[5] === WEFT_ROUTE_PROTOCOL && m.payload[4] === nlconst.RT_TABLE_MAIN).length,
    close: () => sock.close(),
  };
}

/** Runs the writer (inside `ns` when given) and returns its first/last write times. */
async function runWriter(job: WriterJob, ns: string | undefined): Promise<{ t0: number; t1: number }> {
  const argv = [WRITER, JSON.stringify(job)];
  const proc = ns === undefined
    ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() })
    : spawn('ip', ['netns', 'exec', ns, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  proc.stderr.setEncoding('utf8').on('data', (c: string) => { err += c; });
  const code = await new Promise<number | null>((r) => proc.once('exit', r));
  if (code !== 0) throw new Error(`store writer failed (${String(code)}): ${err}`);
  return JSON.parse(out.trim()) as { t0: number; t1: number };
}

function startEtcd(ns: string, ip: string, dataDir: string): ChildProcess {
  const url = `http://${ip}:2379`;
  return spawn('ip', ['netns', 'exec', ns, '/usr/bin/etcd', '--name', 'wcv', '--data-dir', dataDir,
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://${ip}:2380`, '--initial-advertise-peer-urls', `http://${ip}:2380`,
    '--initial-cluster', `wcv=http://${ip}:2380`, '--log-level', 'error'],
  { stdio: 'ignore', env: cleanEnv({ ETCD_UNSUPPORTED_ARCH: '' }) });
}

async function measure(store: StoreKind, mode: Mode, n: number, profileDir: string | undefined, storeBaseDir: string, logLevel: string, settleMs: number): Promise<Row> {
  const topo = Topology.create({ prefix: 'wc2', hosts: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'wc2-conv-'));
  // The file store's directory: tmpfs by default (see the note in the results: creating a file
  // on this VM's ext4 costs ~0.7 ms, which would measure the disk, not weftd).
  const storeBase = mkdtempSync(join(storeBaseDir, 'wc2-store-'));
  const storeDir = join(storeBase, 'store');
  const host = topo.host(0);
  let etcd: ChildProcess | undefined;
  let weftd: ChildProcess | undefined;
  const counter = weftRouteCounter(host.nsPath);
  const nl = Netlink.open(host.nsPath);
  try {
    let storeArgs: string[];
    let writerStore: WriterJob['store'];
    let writerNs: string | undefined;
    if (store === 'file') {
      const fs = new FileStore({ dir: storeDir, prefix: '/weft/network' });
      await fs.putConfig(CONFIG);
      await fs.close();
      storeArgs = ['--store', 'file', '--store-dir', storeDir];
      writerStore = { type: 'file', dir: storeDir };
    } else {
      // etcd's data on the same tmpfs as the file store: on this VM's disk every transaction
      // waits for an fsync whose cost swings several-fold from run to run, which measured the
      // disk (etcd's writes alone took 340–850 ms for 5000 leases), not weftd.
      etcd = startEtcd(topo.outside, formatIP(topo.outsideIP), join(storeBase, 'etcd'));
      const endpoint = `http://${formatIP(topo.outsideIP)}:2379`;
      storeArgs = ['--store', 'etcd', '--etcd-endpoints', endpoint];
      writerStore = { type: 'etcd', endpoint };
      writerNs = topo.outside;
      await runWriter({ store: writerStore, config: CONFIG, peers: 0, skip: -1 }, writerNs);
    }

    let writeMs = 0;
    if (mode === 'restart') {
      const w = await runWriter({ store: writerStore, peers: n, skip: -1 }, writerNs);
      writeMs = w.t1 - w.t0;
    }

    const subnetFile = join(dir, 'subnet.env');
    const profEnv: Record<string, string> = {};
    if (profileDir !== undefined) {
      mkdirSync(profileDir, { recursive: true });
      profEnv.WEFTD_NODE_FLAGS = `--cpu-prof --cpu-prof-dir=${profileDir}`;
    }
    let log = '';
    const form = weftdForm();
    const started = epochMs();
    weftd = spawn('ip', ['netns', 'exec', host.ns, WEFTD, '--iface', 'eth0', ...storeArgs, '--subnet-file', subnetFile],
      { stdio: ['ignore', 'ignore', 'pipe'], env: cleanEnv({ WEFT_LOG_LEVEL: logLevel, ...profEnv }) });
    weftd.stderr?.setEncoding('utf8').on('data', (c: string) => { log += c; });
    const proc = weftd;
    const failIfDead = (what: string) => {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`weftd exited ${what}: ${log}`);
    };

    // Ready = subnet.env written (the vxlan device exists before that).
    let readyAt = 0;
    const waitReady = async () => {
      const deadline = Date.now() + 30_000;
      while (readFileSafe(subnetFile) === undefined) {
        failIfDead('before it was ready');
        if (Date.now() > deadline) throw new Error(`weftd not ready after 30 s: ${log}`);
        await sleep(2);
      }
      readyAt = epochMs();
    };
    const waitRoutes = async (): Promise<number> => {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const have = counter.count();
        if (have >= n) return epochMs();
        failIfDead(`with ${have} of ${n} routes programmed`);
        if (Date.now() > deadline) throw new Error(`only ${have} of ${n} routes after 60 s: ${log}`);
        await sleep(5);
      }
    };

    let row: Row;
    let writes: { t0: number; t1: number; done: number } | undefined;
    if (mode === 'restart') {
      const [done] = await Promise.all([waitRoutes(), waitReady()]);
      row = { store, mode, n, writeMs, totalMs: done - started, partMs: readyAt - started, rss: 0, settledRss: undefined, form };
    } else {
      await waitReady();
      await sleep(300); // let start-up work (first reconcile, JIT) settle before the burst
      const own = /FLANNEL_SUBNET=10\.(\d+)\.(\d+)\./.exec(readFileSafe(subnetFile) ?? '');
      const ownIndex = own ? Number(own[1]) * 256 + Number(own[2]) : -1;
      const [w, done] = await Promise.all([runWriter({ store: writerStore, peers: n, skip: ownIndex }, writerNs), waitRoutes()]);
      row = { store, mode, n, writeMs: w.t1 - w.t0, totalMs: done - w.t0, partMs: done - w.t1, rss: 0, settledRss: undefined, form };
      writes = { ...w, done };
    }

    await sleep(300);
    if (logLevel !== 'warn') process.stderr.write(`    writes ${JSON.stringify({ started: Math.round(started), ...writes, ...row })}\n${log.replace(/^/gm, '    ')}\n`);
    // `ip netns exec` and bin/weftd both exec in place: the child's pid is weftd's node process.
    const rss = rssMB(proc.pid!);
    // A daemon's memory is what it settles at, not a moment after a burst: the highest RSS over
    // the next settleMs, during which weftd runs its full repair pass (every 5 s by default) several times.
    let settledRss: number | undefined;
    if (settleMs > 0) {
      settledRss = rss;
      for (let t = 0; t < settleMs; t += 1000) {
        await sleep(1000);
        failIfDead('while settling');
        settledRss = Math.max(settledRss, rssMB(proc.pid!));
      }
    }
    const dev = nl.getLink('weft.1');
    const neighs = dev ? nl.listNeigh({ link: dev.index, family: 4 }).filter((x) => x.permanent).length : 0;
    const fdb = dev ? nl.listFdb({ link: dev.index }).filter((e) => e.dst !== undefined).length : 0;
    if (neighs < n || fdb < n) throw new Error(`routes are in but only ${neighs} neighbours and ${fdb} fdb entries of ${n}`);
    return { ...row, rss, settledRss };
  } finally {
    await stopProcess(weftd);
    await stopProcess(etcd, 2000);
    counter.close();
    nl.close();
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
    rmSync(storeBase, { recursive: true, force: true });
  }
}

export const benchmark: Benchmark = {
  name: 'converge',
  summary: 'weftd (vxlan) programming N peers: burst of store writes and restart with N leases, file store and etcd; RSS',
  async run(args: string[]): Promise<BenchResult> {
    const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const sizes = (opt('peers') ?? '1000,5000').split(',').map(Number);
    const stores = (opt('stores') ?? 'file,etcd').split(',') as StoreKind[];
    const modes = (opt('modes') ?? 'burst,restart').split(',') as Mode[];
    const profileDir = opt('profile');
    const storeBaseDir = opt('file-store-base') ?? '/dev/shm';
    const settleMs = Number(opt('settle') ?? '30') * 1000;
    const settleFrom = 5000;
    const rows: Row[] = [];
    for (const store of stores) {
      for (const mode of modes) {
        for (const n of sizes) {
          process.stderr.write(`  converge: ${store} ${mode} ${n} peers…\n`);
          rows.push(await measure(store, mode, n, profileDir, storeBaseDir, opt('log-level') ?? 'warn', n >= settleFrom ? settleMs : 0));
        }
      }
    }
    const f = (x: number) => x.toFixed(0);
    const target = (n: number) => (n <= 1000 ? 200 : n <= 5000 ? 1000 : NaN);
    const lines = [
      '# converge: weftd (vxlan) programming N peers',
      '',
      'One namespace host running weftd; the store is the file store or a real etcd (single member, in the',
      'topology\'s outside namespace, reached over the underlay). Each peer is a route, a permanent neighbour and',
      'an FDB entry on weft.1; "programmed" = all N weft-protocol routes are in the kernel (routes are written',
      'after their neighbour and FDB entries; both are checked at the end).',
      '',
      '- **burst**: weftd is running; N leases are written as fast as the store allows (file store: bulk writes',
      '  under one lock, 1024 keys per call; etcd: transactions of 128 keys, 8 of them in flight, as many nodes',
      '  writing at once would). Time from the first write.',
      '- **restart**: N leases are already in the store; weftd starts on a fresh host. Time from the process',
      '  start (includes Node start-up, reading the config, the lease, the listing, the first reconcile).',
      '',
      `- **RSS**: 300 ms after programming; for ${settleFrom} peers also the highest value over the next ${settleMs / 1000} s`,
      '  (weftd\'s full repair pass runs every 5 s meanwhile, so each row includes several of them).',
      '',
      'The file store and etcd\'s data directory are on tmpfs (/dev/shm): on this VM\'s disk a file creation or',
      'an fsync costs a varying fraction of a millisecond, which would measure the disk rather than weftd.',
      '',
      `| store | mode | peers | store writes (ms) | programmed (ms) | after last write / until ready (ms) | target (ms) | weftd RSS (MB) | settled RSS, highest over ${settleMs / 1000} s (MB) | weftd ran |`,
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
      ...rows.map((r) => `| ${r.store} | ${r.mode} | ${r.n} | ${r.mode === 'restart' ? `(${f(r.writeMs)})` : f(r.writeMs)} | **${f(r.totalMs)}** | ${f(r.partMs)} | ${f(target(r.n))} | ${r.rss.toFixed(1)} | ${r.settledRss === undefined ? '' : r.settledRss.toFixed(1)} | ${r.form} |`),
      '',
      'Targets (issue 4): 1000 peers ≤ 200 ms, 5000 ≤ 1 s, RSS ≤ 100 MB at 5000. Flannel v0.17 (shared/ANCHORS.md):',
      '1000 routes 0.88 s after the first write; restart with 1000 leases 0.17 s.',
    ];
    return { markdown: lines.join('\n') };
  },
};

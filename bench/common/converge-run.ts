// How fast one weftd (vxlan, one host namespace) programs N peers, and its memory: the
// measurement behind `bench converge` and `bench kube`, for the file store, a real etcd and a real
// kube-apiserver (Nodes with podCIDRs and flannel's annotations).
//   burst    weftd runs; N peers are written as fast as the store allows (file store: bulk writes
//            under one lock; etcd: ≤ 128-key transactions, 8 in flight; kube: concurrent Node
//            POSTs) → time from the first write until all N routes are in the host's kernel.
//   restart  N peers are already in the store; weftd is started on a fresh host → time from
//            the process start until all N routes are in the kernel.
// Routes are written after their neighbour and FDB entries, so the last route is the last write;
// neighbours and FDB entries are checked once at the end. RSS is read from /proc after
// programming settled.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { WEFT_ROUTE_PROTOCOL } from '../../src/dataplane/protocols.js';
import { type ControlPlane, startControlPlane, stopControlPlane } from '../../src/kube/controlplane.js';
import { prepareClusterForWeft } from '../../src/lab/kube.js';
import { Topology } from '../../src/lab/topology.js';
import { Netlink, NetlinkSocket, nlconst } from '../../src/netlink/index.js';
import { routeDumpRequest } from '../../src/netlink/route.js';
import { formatCidr, formatIP } from '../../src/net/ip.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { peerLease, type WriterJob } from '../converge-writer.js';
import { cleanEnv, cpuSeconds, epochMs, onInterrupt, readFileSafe, rssMB, stopProcess } from './process.js';

export const WEFTD = fileURLToPath(new URL('../../../bin/weftd', import.meta.url));
const WEFTD_BUNDLE_LAUNCHER = fileURLToPath(new URL('../../weftd/weftd.cjs', import.meta.url));
const TSC_BUILD_INFO = fileURLToPath(new URL('../../.tsbuildinfo', import.meta.url));
const WRITER = fileURLToPath(new URL('../converge-writer.js', import.meta.url));
export const CONVERGE_CONFIG = JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } });

/** What bin/weftd will run: the same test as its `-nt` (see bin/weftd). */
export function weftdForm(): 'bundle' | 'tsc' {
  try {
    return statSync(WEFTD_BUNDLE_LAUNCHER).mtimeMs > statSync(TSC_BUILD_INFO).mtimeMs ? 'bundle' : 'tsc';
  } catch {
    return 'tsc';
  }
}

export type StoreKind = 'file' | 'etcd' | 'kube';
export type Mode = 'burst' | 'restart';

export interface ConvergeRow {
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
  /** CPU seconds over the measured window (burst: writes start → all routes; restart: start → all routes). */
  readonly cpu: { readonly weftd: number; readonly server: number };
  /** The store's server processes' RSS (etcd; kube: kube-apiserver + its etcd) at the end, MB. */
  readonly serverRss: number;
}

export interface MeasureOptions {
  readonly store: StoreKind;
  readonly mode: Mode;
  readonly n: number;
  /** weftd writes a CPU profile here on exit (its code cache is then rejected: slower start). */
  readonly profileDir?: string | undefined;
  /** Where the file store, etcd's and the control plane's data live (tmpfs: see converge.md). */
  readonly storeBaseDir: string;
  readonly logLevel: string;
  /** Ms of RSS watching after programming (0: none). */
  readonly settleMs: number;
  /** Namespace prefix (weft's own, so leftovers are recognisable). */
  readonly prefix: string;
  /** kube: Node POSTs in flight (default 64). */
  readonly kubeConcurrency?: number;
}

/**
 * Counts weft-protocol routes in the main table from the raw dump (protocol and table are bytes
 * 5 and 4 of struct rtmsg): polled every few ms, so it must not decode thousands of routes.
 */
export function weftRouteCounter(nsPath: string): { count(): number; close(): void } {
  const sock = NetlinkSocket.open({ nsPath });
  const req = routeDumpRequest({ family: 4, protocol: WEFT_ROUTE_PROTOCOL });
  return {
    count: () => sock.dump(req, 'count weft routes', nlconst.RTM_NEWROUTE)
      .filter((m) => m.payload[5] === WEFT_ROUTE_PROTOCOL && m.payload[4] === nlconst.RT_TABLE_MAIN).length,
    close: () => sock.close(),
  };
}

/** Runs the writer (inside `ns` when given) and returns its first/last write times. */
export async function runWriter(job: WriterJob, ns: string | undefined): Promise<{ t0: number; t1: number }> {
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

/** Debian's etcd, one member in `ns` (`ip netns exec` execs in place: the child's pid is etcd's). */
export function startEtcd(ns: string, ip: string, dataDir: string): ChildProcess {
  const url = `http://${ip}:2379`;
  return spawn('ip', ['netns', 'exec', ns, '/usr/bin/etcd', '--name', 'wcv', '--data-dir', dataDir,
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://${ip}:2380`, '--initial-advertise-peer-urls', `http://${ip}:2380`,
    '--initial-cluster', `wcv=http://${ip}:2380`, '--log-level', 'error'],
  { stdio: 'ignore', env: cleanEnv({ ETCD_UNSUPPORTED_ARCH: '' }) });
}

/** A store set up for one weftd: its flags, where the writer goes, what to stop afterwards. */
export interface StoreUnderTest {
  readonly weftdArgs: readonly string[];
  readonly writer: WriterJob['store'];
  /** Namespace the writer runs in (undefined: this one). */
  readonly writerNs: string | undefined;
  /** A subnet index assigned to weftd's own node before it starts (kube: its podCIDR). */
  readonly ownIndex: number | undefined;
  /** The server processes (etcd; kube-apiserver and its etcd), for CPU and RSS readings. */
  serverPids(): number[];
  stop(): Promise<void>;
}

export interface KubeSetup {
  readonly cp: ControlPlane;
  /** The weft ServiceAccount's kubeconfig (what weftd runs with: RBAC of deploy/kubernetes/weft.yaml). */
  readonly kubeconfig: string;
  readonly netConfig: string;
}

/**
 * A real control plane in `ns` (listening on `ip`), with weft's RBAC from the DaemonSet manifest
 * and the weft ServiceAccount's kubeconfig, as `lab up --store kube` sets it up; `nodes` get
 * the podCIDR the controller-manager would give them (no kubelet or controller runs).
 */
export async function startKube(ns: string, ip: string, dir: string, netConfig: string, nodes: readonly { name: string; podCIDR: string }[]): Promise<KubeSetup> {
  const cp = await startControlPlane({ dir, netns: ns, address: ip });
  try {
    const kubeconfig = await prepareClusterForWeft(cp, { kubeconfig: join(dir, 'weft.kubeconfig'), netConfig: join(dir, 'net-conf.json') }, netConfig, nodes);
    return { cp, kubeconfig, netConfig: join(dir, 'net-conf.json') };
  } catch (err) {
    await cp.stop().catch(() => {});
    throw err;
  }
}

/** Server PIDs of a control plane (kube-apiserver and etcd: `ip netns exec` execs in place). */
export function controlPlanePids(cp: ControlPlane): number[] {
  return cp.processes.map((p) => p.pid);
}

async function setUpStore(o: MeasureOptions, topo: Topology, storeBase: string): Promise<StoreUnderTest> {
  const storeDir = join(storeBase, 'store');
  if (o.store === 'file') {
    const fs = new FileStore({ dir: storeDir, prefix: '/weft/network' });
    await fs.putConfig(CONVERGE_CONFIG);
    await fs.close();
    return {
      weftdArgs: ['--store', 'file', '--store-dir', storeDir], writer: { type: 'file', dir: storeDir }, writerNs: undefined,
      ownIndex: undefined, serverPids: () => [], stop: async () => {},
    };
  }
  if (o.store === 'etcd') {
    // etcd's data on the same tmpfs as the file store: on this VM's disk every transaction
    // waits for an fsync whose cost swings several-fold from run to run, which measured the
    // disk (etcd's writes alone took 340–850 ms for 5000 leases), not weftd.
    const etcd = startEtcd(topo.outside, formatIP(topo.outsideIP), join(storeBase, 'etcd'));
    const endpoint = `http://${formatIP(topo.outsideIP)}:2379`;
    const sut: StoreUnderTest = {
      weftdArgs: ['--store', 'etcd', '--etcd-endpoints', endpoint], writer: { type: 'etcd', endpoint }, writerNs: topo.outside,
      ownIndex: undefined, serverPids: () => (etcd.pid === undefined ? [] : [etcd.pid]), stop: () => stopProcess(etcd, 2000),
    };
    try {
      await runWriter({ store: sut.writer, config: CONVERGE_CONFIG, peers: 0, skip: -1 }, sut.writerNs);
    } catch (err) {
      await sut.stop();
      throw err;
    }
    return sut;
  }
  // kube: the host's own Node exists with podCIDR index 0 (peers skip it), as the controller-manager
  // would have assigned it before weftd's pod runs.
  const own = peerLease(0).subnet;
  const kube = await startKube(topo.outside, formatIP(topo.outsideIP), join(storeBase, 'kube'), CONVERGE_CONFIG, [{ name: 'h0', podCIDR: formatCidr(own) }]);
  return {
    weftdArgs: ['--store', 'kube', '--kubeconfig', kube.kubeconfig, '--net-config', kube.netConfig, '--node-name', 'h0'],
    writer: { type: 'kube', kubeconfig: kube.cp.adminKubeconfig, concurrency: o.kubeConcurrency ?? 64 },
    writerNs: topo.outside,
    ownIndex: 0,
    serverPids: () => controlPlanePids(kube.cp),
    stop: () => kube.cp.stop(),
  };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export async function measureConverge(o: MeasureOptions): Promise<ConvergeRow> {
  const { store, mode, n } = o;
  const topo = Topology.create({ prefix: o.prefix, hosts: 1 });
  const dir = mkdtempSync(join(tmpdir(), `${o.prefix}-conv-`));
  // The stores' directories: tmpfs by default (see the note in converge.md: creating a file on
  // this VM's ext4 costs ~0.7 ms, which would measure the disk, not weftd).
  const storeBase = mkdtempSync(join(o.storeBaseDir, `${o.prefix}-store-`));
  const host = topo.host(0);
  let sut: StoreUnderTest | undefined;
  let weftd: ChildProcess | undefined;
  const counter = weftRouteCounter(host.nsPath);
  const nl = Netlink.open(host.nsPath);
  const cleanUp = async () => {
    await stopProcess(weftd);
    // Interrupted while the control plane was starting: its record in the directory knows the processes.
    if (sut) await sut.stop(); else await stopControlPlane(join(storeBase, 'kube')).catch(() => false);
    counter.close();
    nl.close();
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
    rmSync(storeBase, { recursive: true, force: true });
  };
  const unregister = onInterrupt(cleanUp);
  try {
    sut = await setUpStore(o, topo, storeBase);
    const s = sut;
    const serverCpu = () => sum(s.serverPids().map(cpuSeconds));

    let writeMs = 0;
    if (mode === 'restart') {
      const w = await runWriter({ store: s.writer, peers: n, skip: s.ownIndex ?? -1 }, s.writerNs);
      writeMs = w.t1 - w.t0;
    }

    const subnetFile = join(dir, 'subnet.env');
    const profEnv: Record<string, string> = {};
    if (o.profileDir !== undefined) {
      mkdirSync(o.profileDir, { recursive: true });
      profEnv.WEFTD_NODE_FLAGS = `--cpu-prof --cpu-prof-dir=${o.profileDir}`;
    }
    let log = '';
    const form = weftdForm();
    const serverCpuAtStart = serverCpu();
    const started = epochMs();
    weftd = spawn('ip', ['netns', 'exec', host.ns, WEFTD, '--iface', 'eth0', ...s.weftdArgs, '--subnet-file', subnetFile],
      { stdio: ['ignore', 'ignore', 'pipe'], env: cleanEnv({ WEFT_LOG_LEVEL: o.logLevel, ...profEnv }) });
    weftd.stderr?.setEncoding('utf8').on('data', (c: string) => { log += c; });
    const proc = weftd;
    // `ip netns exec` and bin/weftd both exec in place: the child's pid is weftd's node process.
    const pid = proc.pid!;
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

    let row: ConvergeRow;
    let writes: { t0: number; t1: number; done: number } | undefined;
    if (mode === 'restart') {
      const [done] = await Promise.all([waitRoutes(), waitReady()]);
      const cpu = { weftd: cpuSeconds(pid), server: serverCpu() - serverCpuAtStart };
      row = { store, mode, n, writeMs, totalMs: done - started, partMs: readyAt - started, rss: 0, settledRss: undefined, form, cpu, serverRss: 0 };
    } else {
      await waitReady();
      await sleep(300); // let start-up work (first reconcile, JIT) settle before the burst
      const own = /FLANNEL_SUBNET=10\.(\d+)\.(\d+)\./.exec(readFileSafe(subnetFile) ?? '');
      const ownIndex = own ? Number(own[1]) * 256 + Number(own[2]) : -1;
      const cpu0 = { weftd: cpuSeconds(pid), server: serverCpu() };
      const [w, done] = await Promise.all([runWriter({ store: s.writer, peers: n, skip: ownIndex }, s.writerNs), waitRoutes()]);
      const cpu = { weftd: cpuSeconds(pid) - cpu0.weftd, server: serverCpu() - cpu0.server };
      row = { store, mode, n, writeMs: w.t1 - w.t0, totalMs: done - w.t0, partMs: done - w.t1, rss: 0, settledRss: undefined, form, cpu, serverRss: 0 };
      writes = { ...w, done };
    }

    await sleep(300);
    if (o.logLevel !== 'warn') process.stderr.write(`    writes ${JSON.stringify({ started: Math.round(started), ...writes, ...row })}\n${log.replace(/^/gm, '    ')}\n`);
    const rss = rssMB(pid);
    // A daemon's memory is what it settles at, not a moment after a burst: the highest RSS over
    // the next settleMs, during which weftd runs its full repair pass (every 5 s by default) several times.
    let settledRss: number | undefined;
    if (o.settleMs > 0) {
      settledRss = rss;
      for (let t = 0; t < o.settleMs; t += 1000) {
        await sleep(1000);
        failIfDead('while settling');
        settledRss = Math.max(settledRss, rssMB(pid));
      }
    }
    const dev = nl.getLink('weft.1');
    const neighs = dev ? nl.listNeigh({ link: dev.index, family: 4 }).filter((x) => x.permanent).length : 0;
    const fdb = dev ? nl.listFdb({ link: dev.index }).filter((e) => e.dst !== undefined).length : 0;
    if (neighs < n || fdb < n) throw new Error(`routes are in but only ${neighs} neighbours and ${fdb} fdb entries of ${n}`);
    const serverRss = sum(s.serverPids().map(rssMB));
    return { ...row, rss, settledRss, serverRss };
  } finally {
    unregister();
    await cleanUp();
  }
}

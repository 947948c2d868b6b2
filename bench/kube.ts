// `npm run bench -- kube`: weftd on a real kube-apiserver (--store kube: Nodes with podCIDRs and
// flannel's annotations, NetworkPolicies from the API) against weftd on etcd, measured in the same
// run, alternating which goes first, and reported as ratios kube / etcd:
//   burst    1000 Nodes created through the API as fast as it takes them (concurrent POSTs with
//            the admin client) → all 1000 routes in the host's kernel, timed from the first POST;
//            reference: the same 1000 peers as leases in etcd (bench converge's etcd path).
//            Also the API server alone taking the same POSTs with no weftd watching: the floor
//            the kube figure cannot go below on this machine.
//   rss      weftd started with N Nodes (N leases) present: time to all routes and the highest
//            RSS over a settle period.
//   policy   3 hosts with weftd; one NetworkPolicy at a time, each selecting pods on every host,
//            until enforced on all 3 (bench policy's reading of the kernel, common/policy-enforced):
//            `kubectl apply` vs `weftctl policy apply` (both run on host h0, the clock starts at
//            the command's spawn), and a write from a warm client (POST to the API vs the put
//            weftctl makes to etcd, timed from just before the request).
// Every store and weftd lives in namespaces of a throwaway topology (prefix weftbk-); the API
// server, its etcd and the reference etcd run in the topology's outside namespace on tmpfs.
// Options: --rounds=R (3), --peers=N (burst size, 1000), --rss-peers=a,b (1000,5000),
//   --settle=S (seconds of RSS watching, 20), --applies=N (per kind, 25), --parts=burst,rss,policy,
//   --kube-concurrency=C (Node POSTs in flight, 64), --profile=DIR (CPU profiles of the kube
//   burst's weftd), --log-level=debug (weftd's log of each converge measurement on stderr; the
//   policy hosts' weftd logs with --logs=DIR, next to the warm-client writes' times).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { findKubeBinaries } from '../src/kube/binaries.js';
import { stopControlPlane } from '../src/kube/controlplane.js';
import { Topology } from '../src/lab/topology.js';
import { type Cidr, formatIP, networkOf, nthAddress, parseCidr } from '../src/net/ip.js';
import { type EndpointRecord, endpointRecordDir, endpointRecordFile } from '../src/policy/endpoint-record.js';
import type { PolicyWorld } from '../src/policy/model.js';
import { type ConvergeRow, type KubeSetup, measureConverge, runWriter, startEtcd, startKube, WEFTD, weftdForm } from './common/converge-run.js';
import { EnforcementProbe, policyObjects, withPolicies, worldFromEntries } from './common/policy-enforced.js';
import { cleanEnv, cpuSeconds, inNs, median, onInterrupt, percentile, readFileSafe, stopProcess } from './common/process.js';
import type { DriverAnswer, DriverPod, DriverRequest, DriverStore } from './kube-driver.js';
import type { Benchmark, BenchResult } from './main.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEFTCTL = join(ROOT, 'bin/weftctl');
const DRIVER = fileURLToPath(new URL('./kube-driver.js', import.meta.url));
const PREFIX = 'weftbk';
const HOSTS = 3;
const NAMESPACES = 10;
/** Pods per host: one per (namespace, app) pair, so every policy of policyObjects selects pods on every host. */
const COMBOS = 70;
const ENFORCE_TIMEOUT_MS = 30_000;
const POLICY_NETWORK = '10.90.0.0/16';

type Store = 'etcd' | 'kube';

/** bench kube's driver (kube-driver.ts) in a namespace: one JSON request per line, answers in order. */
class Driver {
  private readonly waiting: ((a: DriverAnswer) => void)[] = [];
  private stderr = '';
  private readonly exited: Promise<void>;

  constructor(private readonly proc: ChildProcess) {
    createInterface({ input: proc.stdout! }).on('line', (line) => this.waiting.shift()?.(JSON.parse(line) as DriverAnswer));
    proc.stderr!.setEncoding('utf8').on('data', (c: string) => { this.stderr += c; });
    this.exited = new Promise((r) => proc.once('exit', () => {
      for (const w of this.waiting.splice(0)) w({ ok: false, error: `the driver exited: ${this.stderr}` });
      r();
    }));
  }

  static start(ns: string, store: DriverStore, procs: ChildProcess[]): Driver {
    const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, DRIVER, JSON.stringify({ store })], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
    procs.push(proc);
    return new Driver(proc);
  }

  async call(req: DriverRequest): Promise<Extract<DriverAnswer, { ok: true }>> {
    const answer = new Promise<DriverAnswer>((r) => this.waiting.push(r));
    this.proc.stdin!.write(`${JSON.stringify(req)}\n`);
    const a = await answer;
    if (!a.ok) throw new Error(`driver ${req.op}: ${a.error}`);
    return a;
  }

  async close(): Promise<void> {
    this.proc.stdin!.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}

interface PolicyFigures {
  /** CLI spawn → enforced on every host, ms (the slowest host), one per apply. */
  readonly cli: number[];
  /** CLI spawn → CLI exit, ms. */
  readonly cliExit: number[];
  /** Write request from a warm client → enforced on every host, ms. */
  readonly direct: number[];
  /** The write request itself (request → answer), ms. */
  readonly directWrite: number[];
  readonly form: 'bundle' | 'tsc';
}

/**
 * 3 hosts with weftd on `store`, 70 pods on each (bench policy's labels), then 1 + 2×applies
 * policies one after the other, alternating the CLI and the direct write.
 */
async function measurePolicy(store: Store, applies: number, logLevel: string, logsDir: string | undefined): Promise<PolicyFigures> {
  const procs: ChildProcess[] = [];
  const topo = Topology.create({ prefix: PREFIX, hosts: HOSTS });
  const dir = mkdtempSync(`/dev/shm/${PREFIX}-pol-`);
  let kube: KubeSetup | undefined;
  let etcd: ChildProcess | undefined;
  let driver: Driver | undefined;
  const weftds: ChildProcess[] = [];
  const cleanUp = async () => {
    await driver?.close().catch(() => {});
    // weftd gets a moment to stop cleanly; then everything left is killed.
    await Promise.all(weftds.map((w) => stopProcess(w, 3000)));
    for (const p of procs) if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
    await stopProcess(etcd, 2000);
    // Interrupted while the control plane was starting: its record in the directory knows the processes.
    if (kube) await kube.cp.stop(); else await stopControlPlane(join(dir, 'kube')).catch(() => false);
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = onInterrupt(cleanUp);
  try {
    const hostNs = (h: number) => topo.host(h).ns;
    const weftdLog = (h: number) => join(dir, `h${h}`, 'weftd.log');
    const logTail = (h: number) => (readFileSafe(weftdLog(h)) ?? '').split('\n').filter((l) => /"level":"(warn|error)"/.test(l)).slice(-5).join('\n');
    const probe = new EnforcementProbe(topo.hosts.map((h) => h.ns), procs, ENFORCE_TIMEOUT_MS, logTail);
    const config = JSON.stringify({ Network: POLICY_NETWORK, SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 90 } });
    const ip = formatIP(topo.outsideIP);
    const nsObjects = Array.from({ length: NAMESPACES }, (_, n) => ({ name: `ns${n}`, labels: { team: `t${n % 3}` } }));
    let storeArgs: string[];
    let driverStore: DriverStore;
    let cli: (input: string) => Promise<void>;
    if (store === 'etcd') {
      etcd = startEtcd(topo.outside, ip, join(dir, 'etcd'));
      const endpoint = `http://${ip}:2379`;
      await runWriter({ store: { type: 'etcd', endpoint }, config, peers: 0, skip: -1 }, topo.outside);
      storeArgs = ['--store', 'etcd', '--etcd-endpoints', endpoint];
      driverStore = { type: 'etcd', endpoint };
      const weftctl = async (args: string[], input = '') => {
        const r = await inNs(hostNs(0), [WEFTCTL, ...args, ...storeArgs], cleanEnv(), input);
        if (r.status !== 0) throw new Error(`weftctl ${args.join(' ')}: ${r.stderr}`);
      };
      for (const n of nsObjects) await weftctl(['ns', 'create', n.name, `team=${n.labels.team}`]);
      cli = (input) => weftctl(['policy', 'apply', '-f', '-'], input);
    } else {
      kube = await startKube(topo.outside, ip, join(dir, 'kube'), config,
        topo.hosts.map((h) => ({ name: `h${h.index}`, podCIDR: `10.90.${h.index}.0/24` })));
      const k = kube;
      storeArgs = ['--store', 'kube', '--kubeconfig', k.kubeconfig, '--net-config', k.netConfig];
      driverStore = { type: 'kube', kubeconfig: k.cp.adminKubeconfig };
      // No controller-manager: each namespace's default ServiceAccount, which admission wants
      // before it takes a Pod, is created with it.
      await k.cp.kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: nsObjects.flatMap((n) => [
        { apiVersion: 'v1', kind: 'Namespace', metadata: { name: n.name, labels: n.labels } },
        { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: n.name } },
      ]) }) });
      // kubectl on host h0 like weftctl, with its discovery cache (filled by the warm-up apply).
      const kubectl = findKubeBinaries().kubectl;
      const env = cleanEnv({ KUBECACHEDIR: join(dir, 'kubectl-cache') });
      delete env.KUBECONFIG;
      cli = async (input) => {
        const r = await inNs(hostNs(0), [kubectl, '--kubeconfig', k.cp.adminKubeconfig, 'apply', '-f', '-'], env, input);
        if (r.status !== 0) throw new Error(`kubectl apply: ${r.stderr}`);
      };
    }
    driver = Driver.start(topo.outside, driverStore, procs);

    const form = weftdForm();
    const subnetFile = (h: number) => join(dir, `h${h}`, 'subnet.env');
    for (let h = 0; h < HOSTS; h++) {
      mkdirSync(join(dir, `h${h}`), { recursive: true });
      const log = openSync(weftdLog(h), 'w');
      const p = spawn('ip', ['netns', 'exec', hostNs(h), WEFTD, '--iface', 'eth0', '--ip-masq', '--node-name', `h${h}`, '--subnet-file', subnetFile(h), ...storeArgs],
        { env: cleanEnv({ WEFT_LOG_LEVEL: logLevel }), stdio: ['ignore', 'ignore', log] });
      closeSync(log);
      procs.push(p);
      weftds.push(p);
    }
    const subnets: Cidr[] = [];
    for (let h = 0; h < HOSTS; h++) {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const m = /^FLANNEL_SUBNET=(\S+)$/m.exec(readFileSafe(subnetFile(h)) ?? '');
        if (m) { subnets.push(networkOf(parseCidr(m[1]!))); break; }
        const w = weftds[h]!;
        if (w.exitCode !== null || w.signalCode !== null || Date.now() > deadline) throw new Error(`weftd on h${h} wrote no subnet.env:\n${readFileSafe(weftdLog(h)) ?? ''}`);
        await sleep(50);
      }
    }

    // Pods: in kube mode Pod objects bound to their node with status.podIPs (what the other
    // hosts read), and on every store the record the weft plugin leaves on the pod's own host.
    const pods: (DriverPod & { host: number })[] = [];
    for (let h = 0; h < HOSTS; h++) {
      for (let c = 0; c < COMBOS; c++) {
        pods.push({ host: h, node: `h${h}`, namespace: `ns${c % NAMESPACES}`, name: `pod-h${h}-${c}`, labels: { app: `a${c % 7}`, tier: `x${c % 5}` }, ip: formatIP(nthAddress(subnets[h]!, 10n + BigInt(c))) });
      }
    }
    if (store === 'kube') await driver.call({ op: 'pods', pods });
    for (const p of pods) {
      const rdir = endpointRecordDir(subnetFile(p.host));
      mkdirSync(rdir, { recursive: true });
      const rec: EndpointRecord = { containerID: `bk-${p.name}`, ifname: 'eth0', namespace: p.namespace, pod: p.name, labels: p.labels, ips: [p.ip] };
      writeFileSync(endpointRecordFile(rdir, rec.containerID, rec.ifname), JSON.stringify(rec));
    }
    // The world as the store shows it once every endpoint is in.
    let world: PolicyWorld;
    for (const deadline = Date.now() + 30_000; ;) {
      const { world: w, skipped } = await worldFromEntries((await driver.call({ op: 'dump' })).entries ?? []);
      if (skipped.length > 0) throw new Error(`store entries that do not parse: ${JSON.stringify(skipped.slice(0, 3))}`);
      if (w.endpoints.length === pods.length) { world = w; break; }
      if (Date.now() > deadline) throw new Error(`the store holds ${w.endpoints.length} endpoints, expected ${pods.length}`);
      await sleep(100);
    }
    // Every weftd has had the endpoints for a while: what is timed below is the policy alone.
    await sleep(1000);

    const targets = subnets.map((subnet, h) => ({ name: `h${h}`, subnet }));
    const figures: PolicyFigures = { cli: [], cliExit: [], direct: [], directWrite: [], form };
    /** The warm-client writes' epoch times, for reading next to weftd's logs (--logs). */
    const writes: unknown[] = [];
    let k = 0;
    let wantNow = EnforcementProbe.wantFor(world, targets);
    const next = () => {
      const obj = policyObjects(1, NAMESPACES, k++)[0] as { metadata: { namespace: string; name: string } };
      const nextWorld = withPolicies(world, [obj]);
      const want = EnforcementProbe.wantFor(nextWorld, targets);
      // A policy that left some host's table as it was would be "enforced" at once.
      want.forEach((w, h) => { if (w === wantNow[h]) throw new Error(`policy ${obj.metadata.name} does not change h${h}'s table`); });
      return { obj, nextWorld, want };
    };
    const viaCli = async (keep: boolean) => {
      const { obj, nextWorld, want } = next();
      const start = performance.now();
      let exitMs = NaN;
      const run = cli(JSON.stringify(obj)).then(() => { exitMs = performance.now() - start; });
      // Awaited below; a failure must not count as unhandled while the kernel is being watched.
      run.catch(() => {});
      const ms = await probe.waitEnforced(want, start);
      await run;
      world = nextWorld;
      wantNow = want;
      if (keep) { figures.cli.push(Math.max(...ms)); figures.cliExit.push(exitMs); }
    };
    const direct = async () => {
      const { obj, nextWorld, want } = next();
      const sent = performance.now();
      const [ms, a] = await Promise.all([probe.waitEnforced(want, sent), driver!.call({ op: 'put-policy', obj })]);
      // Re-based from the moment the bench sent the line to the driver's own clock just before the request.
      const t0 = a.t0! - performance.timeOrigin;
      world = nextWorld;
      wantNow = want;
      figures.direct.push(Math.max(...ms) + sent - t0);
      figures.directWrite.push(a.t1! - a.t0!);
      writes.push({ policy: obj.metadata.name, t0: a.t0!, t1: a.t1!, enforcedMs: ms.map((x) => x + sent - t0) });
    };
    // The first policy creates the table and fills kubectl's discovery cache: not counted.
    await viaCli(false);
    for (let i = 0; i < applies; i++) {
      await sleep(100);
      await viaCli(true);
      await sleep(100);
      await direct();
    }
    if (logsDir !== undefined) writeFileSync(join(dir, 'writes.json'), JSON.stringify(writes, null, 1));
    return figures;
  } finally {
    unregister();
    if (logsDir !== undefined) {
      // Kept for reading the passes next to the writes (--logs with --log-level=debug).
      const keep = join(logsDir, `${store}-${Date.now()}`);
      mkdirSync(keep, { recursive: true });
      for (const f of [...topo.hosts.map((h) => join(`h${h.index}`, 'weftd.log')), 'writes.json']) {
        try { if (existsSync(join(dir, f))) cpSync(join(dir, f), join(keep, f.replace('/', '-'))); } catch { /* a diagnosis aid only */ }
      }
    }
    await cleanUp();
  }
}

/** The API server alone taking n Node POSTs (no weftd watching): the floor of the kube burst. */
export async function measureCreates(n: number, concurrency: number): Promise<{ writeMs: number; serverCpu: number }> {
  const topo = Topology.create({ prefix: PREFIX, hosts: 1 });
  const dir = mkdtempSync(`/dev/shm/${PREFIX}-api-`);
  let kube: KubeSetup | undefined;
  const cleanUp = async () => {
    if (kube) await kube.cp.stop(); else await stopControlPlane(join(dir, 'kube')).catch(() => false);
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = onInterrupt(cleanUp);
  try {
    kube = await startKube(topo.outside, formatIP(topo.outsideIP), join(dir, 'kube'), '{}', []);
    const pids = kube.cp.processes.map((p) => p.pid);
    const cpu = () => pids.map(cpuSeconds).reduce((a, b) => a + b, 0);
    const c0 = cpu();
    const w = await runWriter({ store: { type: 'kube', kubeconfig: kube.cp.adminKubeconfig, concurrency }, peers: n, skip: 0 }, topo.outside);
    return { writeMs: w.t1 - w.t0, serverCpu: cpu() - c0 };
  } finally {
    unregister();
    await cleanUp();
  }
}

interface Round {
  burst?: Record<Store, ConvergeRow>;
  createsAlone?: { writeMs: number; serverCpu: number };
  restart: Record<number, Record<Store, ConvergeRow>>;
  policy?: Record<Store, PolicyFigures>;
}

const STORES: readonly Store[] = ['etcd', 'kube'];

export const benchmark: Benchmark = {
  name: 'kube',
  summary: 'weftd on kube-apiserver vs on etcd, same run: 1000-Node burst → routes, RSS with 1000/5000 Nodes, NetworkPolicy apply → enforced on 3 hosts',
  async run(args: string[]): Promise<BenchResult> {
    const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const rounds = Number(opt('rounds') ?? '3');
    const burstN = Number(opt('peers') ?? '1000');
    const rssSizes = (opt('rss-peers') ?? '1000,5000').split(',').map(Number);
    const settleMs = Number(opt('settle') ?? '20') * 1000;
    const applies = Number(opt('applies') ?? '25');
    const parts = new Set((opt('parts') ?? 'burst,rss,policy').split(','));
    const concurrency = Number(opt('kube-concurrency') ?? '64');
    const logLevel = opt('log-level') ?? 'warn';
    const profileDir = opt('profile');
    const benchStart = performance.now();
    const phase = (what: string) => process.stderr.write(`  kube bench: ${((performance.now() - benchStart) / 1000).toFixed(0)} s ${what}\n`);
    const converge = (store: Store, mode: 'burst' | 'restart', n: number, settle: number) => measureConverge({
      store, mode, n, storeBaseDir: '/dev/shm', logLevel, settleMs: settle, prefix: PREFIX, kubeConcurrency: concurrency,
      ...(profileDir !== undefined && store === 'kube' && mode === 'burst' && { profileDir }),
    });

    const done: Round[] = [];
    for (let r = 0; r < rounds; r++) {
      // Which store goes first alternates, so a drift in the machine's load favours neither.
      const order = r % 2 === 0 ? STORES : [...STORES].reverse();
      const round: Round = { restart: {} };
      if (parts.has('burst')) {
        const b = {} as Record<Store, ConvergeRow>;
        for (const s of order) {
          b[s] = await converge(s, 'burst', burstN, 0);
          phase(`round ${r + 1}: ${s} burst of ${burstN}: writes ${b[s].writeMs.toFixed(0)} ms, all routes ${b[s].totalMs.toFixed(0)} ms`);
        }
        round.burst = b;
        round.createsAlone = await measureCreates(burstN, concurrency);
        phase(`round ${r + 1}: ${burstN} Node POSTs with no weftd: ${round.createsAlone.writeMs.toFixed(0)} ms`);
      }
      if (parts.has('rss')) {
        for (const n of rssSizes) {
          const x = {} as Record<Store, ConvergeRow>;
          for (const s of order) {
            x[s] = await converge(s, 'restart', n, settleMs);
            phase(`round ${r + 1}: ${s} start with ${n}: all routes ${x[s].totalMs.toFixed(0)} ms, settled RSS ${x[s].settledRss?.toFixed(1)} MB`);
          }
          round.restart[n] = x;
        }
      }
      if (parts.has('policy')) {
        const p = {} as Record<Store, PolicyFigures>;
        for (const s of order) {
          p[s] = await measurePolicy(s, applies, logLevel, opt('logs'));
          phase(`round ${r + 1}: ${s} policy: CLI → enforced p50 ${median(p[s].cli).toFixed(0)} ms, write → enforced p50 ${median(p[s].direct).toFixed(0)} ms`);
        }
        round.policy = p;
      }
      done.push(round);
    }
    phase('done');
    return { markdown: render(done, { rounds, burstN, rssSizes, settleMs, applies, concurrency, totalS: (performance.now() - benchStart) / 1000 }) };
  },
};

interface RenderOptions { rounds: number; burstN: number; rssSizes: number[]; settleMs: number; applies: number; concurrency: number; totalS: number }

function render(rounds: Round[], o: RenderOptions): string {
  const mr = (xs: number[], d = 0) => (xs.length === 0 ? '–' : xs.length === 1 ? xs[0]!.toFixed(d) : `${median(xs).toFixed(d)} (${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)})`);
  const rows: string[] = [];
  /** A figure per round for each store; the ratio is taken per round, then summarised. */
  const row = (what: string, ref: number[], kube: number[], target: string, d = 0) => {
    const ratios = ref.map((x, i) => kube[i]! / x);
    rows.push(`| ${what} | ${mr(ref, d)} | ${mr(kube, d)} | **${mr(ratios, 2)}** | ${target} |`);
  };
  const burst = rounds.flatMap((r) => (r.burst ? [r.burst] : []));
  if (burst.length > 0) {
    row(`burst of ${o.burstN}: first write → all routes in the kernel (ms)`, burst.map((b) => b.etcd.totalMs), burst.map((b) => b.kube.totalMs), o.burstN === 1000 ? 'kube ≤ 1000 ms' : '');
    row('  the writes, first → last (ms)', burst.map((b) => b.etcd.writeMs), burst.map((b) => b.kube.writeMs), '');
    row('  last write → all routes (ms)', burst.map((b) => b.etcd.partMs), burst.map((b) => b.kube.partMs), '');
    row('  weftd CPU over the burst (s)', burst.map((b) => b.etcd.cpu.weftd), burst.map((b) => b.kube.cpu.weftd), '', 2);
    row('  store server CPU over the burst (s; kube: apiserver + its etcd)', burst.map((b) => b.etcd.cpu.server), burst.map((b) => b.kube.cpu.server), '', 2);
  }
  for (const n of o.rssSizes) {
    const x = rounds.flatMap((r) => (r.restart[n] ? [r.restart[n]!] : []));
    if (x.length === 0) continue;
    row(`weftd settled RSS with ${n} peers (MB, highest over ${o.settleMs / 1000} s)`, x.map((b) => b.etcd.settledRss ?? NaN), x.map((b) => b.kube.settledRss ?? NaN), '', 1);
    row(`  start with ${n} peers present → all routes (ms)`, x.map((b) => b.etcd.totalMs), x.map((b) => b.kube.totalMs), '');
    row(`  store server RSS with ${n} peers (MB; kube: apiserver + its etcd)`, x.map((b) => b.etcd.serverRss), x.map((b) => b.kube.serverRss), '');
  }
  const pol = rounds.flatMap((r) => (r.policy ? [r.policy] : []));
  if (pol.length > 0) {
    const pick = (f: (p: PolicyFigures) => number[], pct: number, s: Store) => pol.map((p) => percentile(f(p[s]), pct));
    row(`policy, CLI → enforced on all ${HOSTS} hosts, p50 (ms; kubectl apply vs weftctl policy apply)`, pick((p) => p.cli, 50, 'etcd'), pick((p) => p.cli, 50, 'kube'), '');
    row('  p99 (ms)', pick((p) => p.cli, 99, 'etcd'), pick((p) => p.cli, 99, 'kube'), '');
    row('  the CLI itself, spawn → exit, p50 (ms)', pick((p) => p.cliExit, 50, 'etcd'), pick((p) => p.cliExit, 50, 'kube'), '');
    row(`policy, write from a warm client → enforced on all ${HOSTS} hosts, p50 (ms; POST vs etcd put)`, pick((p) => p.direct, 50, 'etcd'), pick((p) => p.direct, 50, 'kube'), '');
    row('  p99 (ms)', pick((p) => p.direct, 99, 'etcd'), pick((p) => p.direct, 99, 'kube'), '');
    row('  the write request alone, p50 (ms)', pick((p) => p.directWrite, 50, 'etcd'), pick((p) => p.directWrite, 50, 'kube'), '', 1);
  }
  const alone = rounds.flatMap((r) => (r.createsAlone ? [r.createsAlone] : []));
  const forms = new Set([...burst.flatMap((b) => [b.etcd.form, b.kube.form]), ...pol.flatMap((p) => [p.etcd.form, p.kube.form]),
    ...rounds.flatMap((r) => Object.values(r.restart).flatMap((x) => [x.etcd.form, x.kube.form]))]);
  const lines = [
    '# bench kube: weftd on kube-apiserver vs on etcd',
    '',
    `weftd (vxlan) with \`--store kube\` on a real kube-apiserver ${findKubeBinaries().version} (its own etcd, \`--unsafe-no-fsync\`, on tmpfs) against`,
    'weftd with `--store etcd` on Debian\'s etcd 3.4 (data on tmpfs), each in the outside namespace of its own throwaway',
    'topology and reached over the underlay. A peer is a Node with `spec.podCIDR` and flannel\'s annotations',
    '(`public-ip`, `backend-type` vxlan, `backend-data` `{"VtepMAC":…}`, `kube-subnet-manager`) or the same lease in etcd;',
    'weftd runs on the weft ServiceAccount\'s token with the RBAC of deploy/kubernetes/weft.yaml. Each figure was',
    `measured on both stores in every one of ${o.rounds} round(s) (which store goes first alternates); cells are the median`,
    '(min–max) over the rounds, and the ratio column is kube / etcd taken per round, then summarised the same way.',
    '',
    `- **burst**: weftd runs on a fresh host; ${o.burstN} peers are written as fast as the store takes them — etcd:`,
    `  transactions of 128 keys, 8 in flight (bench converge's writer); kube: \`POST /api/v1/nodes\` from the admin client, ${o.concurrency}`,
    '  in flight (16 was slower; 32–256 differed less than the run-to-run noise). Time from the first write until all routes are in the kernel (neighbours and',
    '  FDB entries checked too). CPU: /proc of weftd and of the store\'s server processes over that window.',
    '- **RSS**: weftd started on a fresh host with the peers already present; all routes, then the highest RSS over the',
    `  next ${o.settleMs / 1000} s (weftd's full repair pass runs every 5 s meanwhile).`,
    `- **policy**: ${HOSTS} hosts with weftd (\`--ip-masq\`), ${NAMESPACES} namespaces, ${COMBOS} pods per host (one per namespace × app label, so every`,
    '  policy selects pods on every host; kube: Pods bound to their node with `status.podIPs`; both: the weft plugin\'s',
    `  endpoint record on the pod's host). One new policy at a time (bench policy's mix), ${o.applies} by CLI and ${o.applies} by a write from a`,
    '  warm client, alternating, after one uncounted warm-up; "enforced" is read from each host\'s kernel as bench policy',
    '  reads it (`nft monitor` commit, then the table\'s set and chain counts equal the compiled prediction). p99 of',
    `  ${o.applies} samples is their largest. CLI: \`kubectl apply -f -\` vs \`weftctl policy apply -f -\`, both run on host h0,`,
    '  clock from the spawn. Warm client: a long-lived process in the outside namespace (kube: POST; etcd: the key',
    '  `weftctl policy apply` writes), clock from just before the request.',
    '',
    '| figure | etcd (reference) | kube | kube / etcd | target |',
    '|---|---|---|---|---|',
    ...rows,
  ];
  if (alone.length > 0) {
    lines.push('', `The API server alone, taking the same ${o.burstN} Node POSTs (${o.concurrency} in flight) with no weftd watching: ${mr(alone.map((a) => a.writeMs))} ms, `
      + `${mr(alone.map((a) => a.serverCpu), 2)} s of kube-apiserver + etcd CPU — the floor under the kube burst figure on this machine.`);
  }
  lines.push('', `weftd ran: ${[...forms].join(', ')} (bin/weftd runs its code-cached bundle while it is newer than tsc's output). Whole run: ${o.totalS.toFixed(0)} s.`);
  return lines.join('\n');
}

// The lab's lifecycle: up builds a whole cluster out of namespaces (underlay switch, hosts,
// outside, weftd per host, containers added through the CNI plugins as a runtime would, an echo
// server per container), down removes everything a lab NAME made, whatever state it was left
// in. Only namespaces named weftlab-NAME-… and files under the lab's state dir are touched.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CniCode, WeftError } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { type Cidr, formatCidr, formatIP, parseCidr } from '../net/ip.js';
import { NETNS_RUN_DIR, createNamedNetns, deleteNamedNetns, listNamedNetns, netnsExists, netnsPath } from '../netns/index.js';
import { readLeasedSubnets } from '../cni/subnet-env.js';
import { Topology, skipLinkLocalDad } from './topology.js';
import { RackTopology, parseBirdProtocols, splitHosts, type BirdSession } from './racks.js';
import { MACVLAN_SHIM_NAME, macvlanShimPlan, withLabIPv6 } from './backends.js';
import { ensureMacvlanShim } from '../plugins/macvlan/shim.js';
import { CNI_BIN_DIR, LAB_SCRIPT_DIR, WEFTCTL_BIN, WEFTD_BIN, execIn, tail } from './exec.js';
import { mapLimit } from '../map-limit.js';
import { LAB_NS_PREFIX, type LabName, labNsPrefix, labRoot } from './naming.js';
import { createPods, kubeletCniArgs, kubeStoreArgs, type LabKube, podLabels, podManifest, postPodIP, startLabKube } from './kube.js';
import { type LabProcess, isSameProcess, killAndWait, processStartTime, processesInNamespaces, startInNamespace } from './procs.js';
import type { LabSpec } from './spec.js';
import { writeSysctl } from '../netns/sysctl.js';
import { LabDirs, type LabRecord, readRecord, writeRecord } from './state.js';

/** TCP echo port of every container's (and the outside namespace's) echo server. */
export const ECHO_PORT = 7;
const ETCD_CLIENT_PORT = 2379;
/** weftd's /healthz, /readyz, /metrics inside each host namespace. */
export const HEALTH_PORT = 9417;

/** The lab exists already (exit 1: not a usage problem, the machine's state is in the way). */
export class LabExistsError extends WeftError {
  constructor(name: LabName, where: string) {
    super(CniCode.InvalidEnvironment, `lab ${JSON.stringify(name)} already exists (${where}); remove it first with: weftctl lab down --name ${name}`);
  }
}

export class LabNotFoundError extends WeftError {
  constructor(name: LabName) {
    super(CniCode.InvalidEnvironment, `no lab named ${JSON.stringify(name)}: nothing under ${LabDirs.of(name).root} and no ${labNsPrefix(name)}* namespace`);
  }
}

export type StepReporter = (what: string) => void;

/**
 * `up` was interrupted (its signal aborted, e.g. by Ctrl-C) and removed what it had built.
 * The signal's reason names the cause (the CLI passes the signal's name).
 */
export class LabInterruptedError extends WeftError {
  constructor(name: LabName, readonly reason: string) {
    super(CniCode.Internal, `lab ${name} up interrupted by ${reason}; removed what it had built`);
  }
}

/** Throws at a step boundary once `up` is interrupted, so the failed-up path removes the lab. */
type Checkpoint = () => void;

function labNamespaces(name: LabName): string[] {
  const prefix = labNsPrefix(name);
  return listNamedNetns().filter((n) => n.startsWith(prefix));
}

/**
 * Every /run/netns entry of the lab, mounted or not: a lab killed inside createNamedNetns can
 * leave the empty mount-point file without a namespace bound to it.
 */
function labNetnsEntries(name: LabName): string[] {
  const prefix = labNsPrefix(name);
  try {
    return readdirSync(NETNS_RUN_DIR).filter((n) => n.startsWith(prefix)).sort();
  } catch {
    return [];
  }
}

function storeArgs(rec: LabRecord, dirs: LabDirs): string[] {
  if (rec.store === 'kube') return kubeStoreArgs(dirs);
  return rec.store === 'etcd'
    ? ['--store', 'etcd', '--etcd-endpoints', rec.etcdUrl ?? '']
    : ['--store', 'file', '--store-dir', dirs.store];
}

async function waitUntil<T>(what: string, fn: () => T | undefined, timeoutMs: number, stepMs = 100, checkpoint: Checkpoint = () => {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    checkpoint();
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new WeftError(CniCode.Timeout, `timed out after ${timeoutMs / 1000}s waiting for ${what}`);
    await sleep(stepMs);
  }
}

function logTail(path: string): string {
  try {
    return tail(readFileSync(path, 'utf8'), 1200);
  } catch {
    return '(no log)';
  }
}

function requireAlive(p: LabProcess): void {
  if (!isSameProcess(p.pid, p.startTime)) throw new WeftError(CniCode.Internal, `${p.role} exited; its log (${p.log}):\n${logTail(p.log)}`);
}

async function startEtcd(rec: LabRecord, dirs: LabDirs, save: () => void): Promise<void> {
  const outside = rec.outside ?? '';
  // An IPv6-only lab's hosts reach "outside" over IPv6 only.
  const ip = rec.ipv6 === 'only' ? `[${rec.outsideIP6 ?? ''}]` : rec.outsideIP ?? '';
  mkdirSync(dirs.etcd, { recursive: true, mode: 0o700 });
  mkdirSync(dirs.procs, { recursive: true, mode: 0o700 });
  const peer = 'http://127.0.0.1:2380';
  const p = startInNamespace('etcd', outside, [
    '/usr/bin/etcd', '--name', 'lab', '--data-dir', dirs.etcd,
    '--listen-client-urls', `http://${ip}:${ETCD_CLIENT_PORT},http://127.0.0.1:${ETCD_CLIENT_PORT}`,
    '--advertise-client-urls', `http://${ip}:${ETCD_CLIENT_PORT}`,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `lab=${peer}`,
    '--log-level', 'error', '--heartbeat-interval', '50', '--election-timeout', '400',
  ], dirs.procLog('etcd'), { ETCD_UNSUPPORTED_ARCH: '' });
  rec.processes.push(p);
  rec.etcdUrl = `http://${ip}:${ETCD_CLIENT_PORT}`;
  save();
  const deadline = Date.now() + 20_000;
  for (;;) {
    requireAlive(p);
    const r = await execIn(outside, ['curl', '-sf', '--max-time', '1', `http://127.0.0.1:${ETCD_CLIENT_PORT}/health`], { timeoutMs: 3000 });
    if (r.code === 0 && r.stdout.includes('"true"')) return;
    if (Date.now() > deadline) throw new WeftError(CniCode.Timeout, `etcd did not become healthy in 20s; log:\n${logTail(p.log)}`);
    await sleep(150);
  }
}

/** The network config weftd reads: the backend's own, or its rack form peering with the router. */
function networkConfigFor(spec: LabSpec, racks: RackTopology | undefined): Record<string, unknown> | undefined {
  if (racks === undefined) {
    const config = spec.backend.networkConfig();
    return config && withLabIPv6(config, spec.ipv6);
  }
  const routed = spec.backend.racksNetworkConfig;
  if (!routed) throw new WeftError(CniCode.InvalidNetworkConfig, `the ${spec.backend.name} backend cannot span racks`);
  // Hold time as BIRD's (9 s): a dead host's routes leave the router within seconds.
  return routed(racks.backendConfig({ HoldTime: 9 }));
}

function birdctl(socket: string, ...args: string[]): string {
  return execFileSync('birdc', ['-s', socket, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 3000 });
}

/** BIRD on the rack router, detached and recorded like weftd, so it outlives `up` and `down` finds it. */
async function startRouterBird(racks: RackTopology, rec: LabRecord, dirs: LabDirs, save: () => void, checkpoint: Checkpoint): Promise<void> {
  mkdirSync(dirs.bird, { recursive: true, mode: 0o700 });
  mkdirSync(dirs.procs, { recursive: true, mode: 0o700 });
  const conf = join(dirs.bird, 'bird.conf');
  const socket = join(dirs.bird, 'bird.ctl');
  writeFileSync(conf, racks.birdConfig());
  const p = startInNamespace('bird', racks.router, ['bird', '-f', '-c', conf, '-s', socket, '-P', join(dirs.bird, 'bird.pid')], dirs.procLog('bird'));
  rec.processes.push(p);
  rec.birdSocket = socket;
  save();
  await waitUntil('BIRD\'s control socket', () => {
    requireAlive(p);
    try {
      birdctl(socket, 'show', 'status');
      return true;
    } catch {
      return undefined;
    }
  }, 10_000, 100, checkpoint);
}

/** macvlan --macvlan-shim: each host gets a sibling macvlan of its containers, routed to their range. */
function addMacvlanShims(rec: LabRecord, save: () => void): void {
  for (const h of rec.hostList) {
    const plan = macvlanShimPlan(h.index, rec.hosts);
    Netlink.with(netnsPath(h.ns), (nl) => ensureMacvlanShim(nl, { name: MACVLAN_SHIM_NAME, master: 'eth0', address: plan.address, routes: plan.routes }));
    h.shimAddress = formatIP(plan.address.ip);
  }
  save();
}

async function startAgents(spec: LabSpec, rec: LabRecord, dirs: LabDirs, save: () => void, report: StepReporter, config: Record<string, unknown> | undefined, checkpoint: Checkpoint): Promise<void> {
  if (config === undefined) return;
  // In kube mode the config is a file (the ConfigMap's net-conf.json), written with the Nodes.
  if (rec.store !== 'kube') {
    report(`writing the network config (Backend ${spec.backend.name}) to the ${rec.store} store`);
    const host0 = rec.hostList[0];
    if (!host0) throw new WeftError(CniCode.Internal, 'lab has no host');
    const set = await execIn(host0.ns, [WEFTCTL_BIN, 'config', 'set', '-', ...storeArgs(rec, dirs)], { input: JSON.stringify(config) });
    if (set.code !== 0) throw new WeftError(CniCode.Store, `weftctl config set failed: ${set.stderr.trim()}`);
  }

  report(`starting weftd on ${rec.hosts} host${rec.hosts > 1 ? 's' : ''}`);
  const agents: LabProcess[] = [];
  for (const h of rec.hostList) {
    const p = startInNamespace(`weftd h${h.index}`, h.ns, [
      WEFTD_BIN, '--iface', 'eth0', ...(spec.ipMasq ? ['--ip-masq'] : []), '--node-name', `h${h.index}`,
      '--subnet-file', dirs.subnetFile(h.index), '--health-addr', `127.0.0.1:${HEALTH_PORT}`, '--api-socket', dirs.apiSocket(h.index),
      ...storeArgs(rec, dirs), ...spec.backend.weftdArgs,
    ], dirs.weftdLog(h.index));
    agents.push(p);
    rec.processes.push(p);
  }
  save();

  report('waiting for every host to lease a subnet and route to the others');
  const families = spec.ipv6 === 'dual' ? 2 : 1;
  const subnets = await waitUntil('every weftd to write subnet.env', () => {
    agents.forEach(requireAlive);
    const s = rec.hostList.map((h) => {
      const leased = readLeasedSubnets(dirs.subnetFile(h.index));
      return [leased.subnet, leased.ipv6Subnet].filter((c): c is Cidr => c !== undefined);
    });
    return s.every((x) => x.length === families) ? s : undefined;
  }, 30_000, 100, checkpoint);
  rec.hostList.forEach((h, i) => {
    const [first, second] = subnets[i] as Cidr[];
    h.subnet = formatCidr(first as Cidr);
    if (second) h.subnet6 = formatCidr(second);
  });
  save();
  const converged = spec.backend.converged;
  if (converged) {
    const deadline = Date.now() + 30_000;
    const pending = new Set(rec.hostList.map((h) => h.index));
    while (pending.size > 0) {
      checkpoint();
      agents.forEach(requireAlive);
      for (const h of rec.hostList.filter((x) => pending.has(x.index))) {
        const ok = await converged({
          index: h.index, hosts: rec.hosts, subnets, nsPath: netnsPath(h.ns),
          metrics: async () => (await execIn(h.ns, ['curl', '-sf', '--max-time', '2', `http://127.0.0.1:${HEALTH_PORT}/metrics`], { timeoutMs: 4000 })).stdout,
        });
        if (ok) pending.delete(h.index);
      }
      if (pending.size === 0) break;
      if (Date.now() > deadline) {
        throw new WeftError(CniCode.Timeout, `timed out after 30s waiting for host(s) ${[...pending].map((i) => `h${i}`).join(', ')} to reach every other host; weftd log:\n${logTail(dirs.weftdLog([...pending][0] ?? 0))}`);
      }
      await sleep(100);
    }
  }
}

async function addContainers(spec: LabSpec, rec: LabRecord, dirs: LabDirs, topoId: string, save: () => void, report: StepReporter, checkpoint: Checkpoint, kube: LabKube | undefined): Promise<void> {
  for (const h of rec.hostList) {
    writeFileSync(dirs.conflist(h.index), JSON.stringify(spec.backend.conflist({
      dirs, index: h.index, hosts: rec.hosts, pods: rec.pods, outsideIP: rec.outsideIP ?? '', macvlanShim: spec.macvlanShim, ipMasq: spec.ipMasq,
      ipv6: spec.ipv6, outsideIP6: rec.outsideIP6,
    }), null, 2) + '\n');
    if (!h.subnet && spec.backend.networkConfig() === undefined) h.subnet = 'underlay';
  }
  report(`adding ${rec.hosts * rec.pods} containers through bin/cni (${spec.backend.name === 'macvlan' ? 'weft-macvlan' : 'weft'}), as a runtime would`);
  for (const h of rec.hostList) {
    for (let c = 0; c < rec.pods; c++) {
      const name = `h${h.index}c${c}`;
      const ns = `${LAB_NS_PREFIX}-${rec.name}-${topoId}-${name}`;
      createNamedNetns(ns);
      if (spec.ipv6) skipLinkLocalDad(netnsPath(ns));
      Netlink.with(netnsPath(ns), (nl) => nl.setLink('lo', { up: true }));
      rec.containers.push({ name, host: h.index, ns, containerId: `lab-${rec.name}-${name}` });
    }
  }
  save();
  // A Pod exists (bound to its node) before the kubelet runs CNI ADD for it.
  if (kube) await createPods(kube.cp, rec.containers.map((c) => podManifest(c.name, c.host, ECHO_PORT)));
  await mapLimit(rec.hostList, 2, async (h) => {
    for (const c of rec.containers.filter((x) => x.host === h.index)) {
      checkpoint();
      const r = await execIn(h.ns, [
        WEFTCTL_BIN, 'cni', 'add', '--conf', dirs.conflist(h.index), '--netns', netnsPath(c.ns),
        '--container-id', c.containerId, '--cache-dir', dirs.cniCache(h.index), '--cni-path', `${CNI_BIN_DIR}:/usr/lib/cni`,
        // Every store: the endpoint records then name the pod (lab/h0c1) and carry the labels its
        // Pod has in a kube lab, so NetworkPolicy applied with weftctl policy selects lab pods in
        // file and etcd labs too.
        '--args', kubeletCniArgs(c.name), '--runtime-config', JSON.stringify({ labels: podLabels(c.name, c.host) }),
      ], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new WeftError(CniCode.Internal, `CNI ADD of ${c.name} on h${h.index} failed: ${r.stderr.trim() || r.stdout.trim()}`);
      const result = JSON.parse(r.stdout) as { ips?: Array<{ address?: string }> };
      const addrs = (result.ips ?? []).flatMap((x) => (x.address ? [parseCidr(x.address).ip] : []));
      const first = addrs[0];
      if (!first) throw new WeftError(CniCode.Internal, `CNI ADD of ${c.name} returned no address: ${r.stdout.trim()}`);
      c.ip = formatIP(first);
      const v6 = addrs.find((a) => a.family === 6);
      if (v6 && first.family === 4) c.ip6 = formatIP(v6);
      if (spec.ipv6 === 'dual' && !c.ip6) throw new WeftError(CniCode.Internal, `CNI ADD of ${c.name} returned no IPv6 address in a dual-stack lab: ${r.stdout.trim()}`);
      if (kube) await postPodIP(kube.cp, c.name, c.ip, undefined, c.ip6);
    }
  });
  save();
}

async function startEchoServers(rec: LabRecord, dirs: LabDirs, save: () => void, report: StepReporter, checkpoint: Checkpoint): Promise<void> {
  report(`starting a TCP echo server in each container and outside`);
  mkdirSync(dirs.procs, { recursive: true, mode: 0o700 });
  const targets = [...rec.containers.map((c) => ({ role: `echo ${c.name}`, ns: c.ns })), { role: 'echo outside', ns: rec.outside ?? '' }];
  const started: Array<{ p: LabProcess; ready: string }> = [];
  for (const t of targets) {
    const ready = `${dirs.procLog(t.role)}.ready`;
    const p = startInNamespace(t.role, t.ns, [process.execPath, `${LAB_SCRIPT_DIR}echo-server.js`, String(ECHO_PORT), ready], dirs.procLog(t.role));
    rec.processes.push(p);
    started.push({ p, ready });
  }
  save();
  await waitUntil('the echo servers to listen', () => {
    for (const s of started) requireAlive(s.p);
    return started.every((s) => existsSync(s.ready)) ? true : undefined;
  }, 15_000, 50, checkpoint);
}

/**
 * Builds lab `spec.name`. On failure everything made so far is removed again and the error
 * (with the failing process's log tail) is thrown. Aborting `signal` interrupts the build at the
 * next step boundary or poll (≤ 100 ms, or when the current command returns) and takes the same
 * removal path, then throws LabInterruptedError.
 */
export async function labUp(spec: LabSpec, report: StepReporter = () => {}, signal?: AbortSignal): Promise<LabRecord> {
  const dirs = LabDirs.of(spec.name);
  const leftovers = labNetnsEntries(spec.name);
  if (leftovers.length > 0) throw new LabExistsError(spec.name, `${leftovers.length} namespace(s) ${labNsPrefix(spec.name)}*`);
  // The root goes away with the last lab's down, possibly between these two mkdirs: retry then.
  for (let attempt = 0; ; attempt++) {
    mkdirSync(labRoot(), { recursive: true, mode: 0o755 });
    try {
      mkdirSync(dirs.root, { mode: 0o700 });
      break;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new LabExistsError(spec.name, `state in ${dirs.root}`);
      if (code !== 'ENOENT' || attempt >= 3) throw WeftError.wrap(err, CniCode.IoFailure, `create ${dirs.root}`);
    }
  }
  const rec: LabRecord = {
    version: 1, name: spec.name, backend: spec.backend.name, store: spec.store, hosts: spec.hosts, pods: spec.pods,
    phase: 'creating', createdAt: new Date().toISOString(),
    controller: { pid: process.pid, startTime: processStartTime(process.pid) ?? '' },
    hostList: [], containers: [], processes: [], extraNamespaces: [],
    ...(spec.racks > 1 && { racks: spec.racks }),
    ...(spec.macvlanShim && { macvlanShim: true }),
  };
  const checkpoint: Checkpoint = () => {
    if (signal?.aborted) throw new LabInterruptedError(spec.name, String(signal.reason ?? 'abort'));
  };
  // Recorded before the check: whatever this step made is in the record `down` reads.
  const save = () => { writeRecord(dirs, rec); checkpoint(); };
  const step: StepReporter = (what) => { checkpoint(); report(what); };
  writeRecord(dirs, rec);
  try {
    checkpoint();
    const prefix = `${LAB_NS_PREFIX}-${spec.name}`;
    let topoId: string;
    let racks: RackTopology | undefined;
    if (spec.racks > 1) {
      step(`building ${spec.racks} racks (a switch each) with ${spec.hosts} hosts, a router between them and "outside" behind it`);
      racks = await RackTopology.create({ prefix, racks: spec.racks, hostsPerRack: splitHosts(spec.hosts, spec.racks), outside: true, startBird: false, stateDir: dirs.bird });
      topoId = racks.id;
      rec.switches = racks.switches;
      rec.router = racks.router;
      rec.outside = racks.outside;
      rec.outsideIP = formatIP(racks.outsideIP);
      rec.hostList = racks.hosts.map((h) => ({ index: h.index, ns: h.ns, ip: formatIP(h.ip), rack: h.rack }));
    } else {
      step(`building the underlay switch, ${spec.hosts} host namespaces and "outside"`);
      const topo = Topology.create({ prefix, hosts: spec.hosts, ipv6: spec.ipv6 });
      topoId = topo.id;
      rec.underlay = topo.underlay;
      rec.outside = topo.outside;
      rec.outsideIP = formatIP(topo.outsideIP);
      if (spec.ipv6) {
        rec.ipv6 = spec.ipv6;
        rec.outsideIP6 = formatIP(topo.outsideIP6);
      }
      rec.hostList = topo.hosts.map((h) => ({ index: h.index, ns: h.ns, ip: formatIP(h.ip), ...(h.ip6 && { ip6: formatIP(h.ip6) }) }));
    }
    // The lab's own clients (kube-apiserver → etcd in "outside") take ephemeral ports from
    // 49152 up, as IANA has it, so the lower ports stay free for the servers tests start there
    // (a policy test listens on 32768, the kernel's default first ephemeral port).
    if (rec.outside) writeSysctl('net.ipv4.ip_local_port_range', '49152 60999', netnsPath(rec.outside));
    for (const h of rec.hostList) dirs.makeHostDirs(h.index);
    save();
    if (racks) {
      step(`starting BIRD 2 on the router (route reflector for ${spec.hosts} hosts)`);
      await startRouterBird(racks, rec, dirs, save, checkpoint);
    }
    if (spec.macvlanShim) {
      step(`adding a macvlan shim (${MACVLAN_SHIM_NAME}) on every host, routed to its own containers`);
      addMacvlanShims(rec, save);
    }
    const config = networkConfigFor(spec, racks);
    if (spec.store === 'etcd' && config !== undefined) {
      step('starting etcd in the outside namespace');
      await startEtcd(rec, dirs, save);
    }
    let kube: LabKube | undefined;
    if (spec.store === 'kube' && config !== undefined) {
      step(`starting kube-apiserver in the outside namespace, registering ${spec.hosts} Nodes with podCIDRs`);
      kube = await startLabKube(rec, dirs, save, config);
    }
    await startAgents(spec, rec, dirs, save, step, config, checkpoint);
    await addContainers(spec, rec, dirs, topoId, save, step, checkpoint, kube);
    await startEchoServers(rec, dirs, save, step, checkpoint);
    rec.phase = 'up';
    writeRecord(dirs, rec);
    return rec;
  } catch (err) {
    // A step that failed because of the interruption (Ctrl-C reaches the whole foreground
    // process group, so a child may die first) is reported as the interruption.
    const e = signal?.aborted ? new LabInterruptedError(spec.name, String(signal.reason ?? 'abort')) : WeftError.wrap(err, CniCode.Internal, `lab ${spec.name} up`);
    rec.phase = 'failed';
    rec.error = e.message;
    try { writeRecord(dirs, rec); } catch { /* the state dir goes anyway */ }
    try {
      await labDown(spec.name);
    } catch (downErr) {
      throw new WeftError(e.code, `${e.message}\n(and removing the half-built lab failed too: ${(downErr as Error).message})`);
    }
    throw e;
  }
}

export interface DownReport {
  readonly namespaces: string[];
  readonly killed: number;
  readonly stateDir: string | undefined;
}

/**
 * Removes lab NAME: stops the `up` still building it (if any), kills every recorded process and
 * every process inside one of its namespaces, deletes the namespaces (their links, routes and
 * rules go with them) and the state dir. Works from the name alone after any crash.
 */
export async function labDown(name: LabName): Promise<DownReport> {
  const dirs = LabDirs.of(name);
  const hasDir = existsSync(dirs.root);
  let rec: LabRecord | undefined;
  try {
    rec = hasDir ? readRecord(dirs) : undefined;
  } catch {
    rec = undefined; // a torn record: the namespace scan below still finds everything
  }
  if (!hasDir && labNetnsEntries(name).length === 0) throw new LabNotFoundError(name);

  let killed = 0;
  if (rec && rec.controller.pid !== process.pid && isSameProcess(rec.controller.pid, rec.controller.startTime)) {
    const left = await killAndWait([rec.controller]);
    if (left.length > 0) throw new WeftError(CniCode.Internal, `could not stop the lab's controller (pid ${rec.controller.pid})`);
    killed++;
  }
  // Two rounds: a process started by a dying controller may appear after the first scan.
  for (let round = 0; round < 3; round++) {
    const nsPaths = labNamespaces(name).map(netnsPath);
    const byPid = new Map<number, { pid: number; startTime: string }>();
    for (const t of round === 0 ? rec?.processes ?? [] : []) byPid.set(t.pid, t);
    for (const pid of processesInNamespaces(nsPaths)) if (!byPid.has(pid)) byPid.set(pid, { pid, startTime: processStartTime(pid) ?? '' });
    const targets = [...byPid.values()].filter((t) => t.pid !== process.pid && isSameProcess(t.pid, t.startTime));
    if (targets.length === 0) break;
    const left = await killAndWait(targets);
    if (left.length > 0) throw new WeftError(CniCode.Internal, `could not kill pid(s) ${left.map((t) => t.pid).join(', ')} of lab ${name}`);
    killed += targets.length;
  }
  const namespaces = labNamespaces(name);
  // Containers and hosts first, the switches (holding the other veth ends) last.
  const isSwitch = (ns: string) => Number(/-(u|s\d+)$/.test(ns));
  const ordered = [...namespaces].sort((a, b) => isSwitch(a) - isSwitch(b));
  const errors: string[] = [];
  for (const ns of ordered) {
    try {
      deleteNamedNetns(ns);
    } catch (err) {
      errors.push(`${ns}: ${(err as Error).message}`);
    }
  }
  for (const entry of labNetnsEntries(name)) {
    const path = join(NETNS_RUN_DIR, entry);
    if (!netnsExists(path)) rmSync(path, { force: true });
  }
  if (hasDir) rmSync(dirs.root, { recursive: true, force: true });
  try {
    rmdirSync(labRoot()); // only when no other lab is left in it
  } catch {
    // ENOTEMPTY (other labs) or already gone
  }
  const still = labNetnsEntries(name);
  if (errors.length > 0 || still.length > 0) {
    throw new WeftError(CniCode.Namespace, `lab ${name}: could not remove ${[...errors, ...still].join('; ')}`);
  }
  return { namespaces, killed, stateDir: hasDir ? dirs.root : undefined };
}

export interface LabStatus {
  readonly name: LabName;
  readonly stateDir: string;
  readonly record: LabRecord | undefined;
  readonly namespaces: string[];
  readonly processes: ReadonlyArray<LabProcess & { alive: boolean }>;
  /** Multi-rack labs: the router's BGP sessions as BIRD reports them (birdc show protocols). */
  readonly bird?: { readonly sessions: readonly BirdSession[] } | { readonly error: string };
  /** Everything recorded is there and running. */
  readonly healthy: boolean;
}

function birdSessions(socket: string): { sessions: BirdSession[] } | { error: string } {
  try {
    return { sessions: parseBirdProtocols(birdctl(socket, 'show', 'protocols')) };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { error: (e.stdout || e.stderr || e.message).trim().split('\n').slice(-1)[0] ?? 'birdc failed' };
  }
}

export function labStatus(name: LabName): LabStatus {
  const dirs = LabDirs.of(name);
  const namespaces = labNamespaces(name);
  if (!existsSync(dirs.root) && labNetnsEntries(name).length === 0) throw new LabNotFoundError(name);
  const record = readRecord(dirs);
  const processes = (record?.processes ?? []).map((p) => ({ ...p, alive: isSameProcess(p.pid, p.startTime) }));
  const fabric = record?.racks !== undefined ? [...(record.switches ?? []), record.router] : [record?.underlay];
  const wanted = record ? [...fabric, record.outside, ...record.hostList.map((h) => h.ns), ...record.containers.map((c) => c.ns)] : [];
  const healthy = record?.phase === 'up' && processes.every((p) => p.alive) && wanted.every((n) => n !== undefined && namespaces.includes(n));
  const bird = record?.birdSocket !== undefined ? birdSessions(record.birdSocket) : undefined;
  return { name, stateDir: dirs.root, record, namespaces, processes, healthy, ...(bird && { bird }) };
}

/** The record of a lab that is up (check and bench need one). */
export function requireUpLab(name: LabName): LabRecord {
  const s = labStatus(name);
  if (!s.record) throw new WeftError(CniCode.InvalidEnvironment, `lab ${name} has no record (${s.stateDir}/lab.json); remove it with weftctl lab down --name ${name}`);
  if (s.record.phase !== 'up') throw new WeftError(CniCode.InvalidEnvironment, `lab ${name} is ${s.record.phase}, not up${s.record.error ? `: ${s.record.error}` : ''}`);
  return s.record;
}

/**
 * A namespace added to a lab after `up` (benchmark reference paths). Named with the lab's
 * prefix, so down removes it like the rest.
 */
export function addLabNamespace(name: LabName, what: string): { ns: string; path: string } {
  if (!/^[a-z0-9]{1,12}$/.test(what)) throw new WeftError(CniCode.Internal, `lab namespace suffix ${JSON.stringify(what)}: letters and digits only`);
  const dirs = LabDirs.of(name);
  const rec = readRecord(dirs);
  if (!rec) throw new LabNotFoundError(name);
  const ns = `${labNsPrefix(name)}x-${what}`;
  const path = createNamedNetns(ns);
  rec.extraNamespaces.push(ns);
  writeRecord(dirs, rec);
  Netlink.with(path, (nl) => nl.setLink('lo', { up: true }));
  return { ns, path };
}

// weftd in Kubernetes mode when things go wrong, against a real kube-apiserver. One kube lab
// (vxlan, 2 hosts × 1 pod, etcd + kube-apiserver in the lab's outside namespace) serves every
// case; nodes in trouble are extra weftd processes in namespaces added to the lab and wired to its
// underlay switch. Every process started here is recorded in the lab's record (and lives in a lab
// namespace), so `lab down` removes it like the rest — the last case checks that it did.
//
// What the API server does is never simulated: the 410 is the one a restarted kube-apiserver
// really sends for a watch from a resourceVersion older than its fresh watch cache, the 403 is
// RBAC's, the outage is a SIGKILLed kube-apiserver.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { findKubeBinaries } from '../../src/kube/binaries.js';
import { WEFTD_BIN } from '../../src/lab/exec.js';
import { HEALTH_PORT, addLabNamespace } from '../../src/lab/lab.js';
import { parseLabName } from '../../src/lab/naming.js';
import { type LabProcess, isSameProcess, killAndWait, startInNamespace } from '../../src/lab/procs.js';
import { LabDirs, type LabRecord, readRecord, writeRecord } from '../../src/lab/state.js';
import { assertGone, downQuietly, lab, labName, stateDir, upOk } from './lab-harness.js';

// The harness runs `weftctl lab` with the default lab root; so must the record this file edits.
delete process.env.WEFT_LAB_ROOT;

const K8S = findKubeBinaries();
const ANN = 'flannel.alpha.coreos.com';
const VXLAN_DEV = 'weft.1';

interface RouteJson { dst: string; gateway?: string; dev?: string; flags?: string[] }
interface NeighJson { dst: string; lladdr?: string; state?: string[] }
interface FdbJson { mac: string; dst?: string; state?: string }
interface Readyz {
  ready: boolean;
  phase?: string;
  lease?: { status: string; subnet?: string; reason?: string };
  store?: { status: string; reason?: string };
  watch?: { type: string; reason?: string };
}
interface LogLine { level?: string; msg?: string; node?: string; reason?: string; subnet?: string; [k: string]: unknown }
interface Run { code: number | null; stdout: string; stderr: string }

function run(argv: readonly string[], input?: string, timeoutMs = 30_000): Run {
  const [cmd, ...args] = argv;
  // maxBuffer: the API server's /metrics is several MB.
  const r = spawnSync(cmd ?? 'false', args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20, ...(input !== undefined && { input }) });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function runOk(argv: readonly string[], input?: string): string {
  const r = run(argv, input);
  assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr || r.stdout}`);
  return r.stdout;
}

function ipJson<T>(ns: string, args: readonly string[]): T {
  return JSON.parse(runOk(['ip', '-n', ns, '-json', ...args]) || '[]') as T;
}

const routes = (ns: string) => ipJson<RouteJson[]>(ns, ['route', 'show', 'proto', '87']);
const neighs = (ns: string) => ipJson<NeighJson[]>(ns, ['neigh', 'show', 'dev', VXLAN_DEV]);
const fdb = (ns: string) => JSON.parse(runOk(['bridge', '-n', ns, '-json', 'fdb', 'show', 'dev', VXLAN_DEV]) || '[]') as FdbJson[];

/** The route, the neighbour entry and the FDB entry weft's vxlan backend programs for a peer (flannel's three). */
function peerState(ns: string, subnet: string, publicIP: string, mac: string): { route: boolean; neigh: boolean; fdb: boolean } {
  const gw = subnet.split('/')[0];
  const r = routes(ns).find((x) => x.dst === subnet);
  const n = neighs(ns).find((x) => x.dst === gw);
  return {
    // Listed under proto 87 at all means weftd's protocol; via the peer's subnet address, onlink, as flannel does.
    route: r !== undefined && r.gateway === gw && r.dev === VXLAN_DEV && (r.flags ?? []).includes('onlink'),
    neigh: n !== undefined && n.lladdr === mac && (n.state ?? []).includes('PERMANENT'),
    fdb: fdb(ns).some((f) => f.mac === mac && f.dst === publicIP),
  };
}

function peerGone(ns: string, subnet: string, mac: string): boolean {
  const gw = subnet.split('/')[0];
  return !routes(ns).some((x) => x.dst === subnet) && !neighs(ns).some((x) => x.dst === gw) && !fdb(ns).some((f) => f.mac === mac);
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 30_000, stepMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = probe();
      if (v !== undefined && v !== false) return v;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await sleep(stepMs);
  }
}

function readyz(ns: string): Readyz | undefined {
  const r = run(['ip', 'netns', 'exec', ns, 'curl', '-s', '--max-time', '2', `http://127.0.0.1:${HEALTH_PORT}/readyz`], undefined, 5000);
  if (r.code !== 0 || r.stdout === '') return undefined;
  return JSON.parse(r.stdout) as Readyz;
}

function logLines(path: string): LogLine[] {
  let text = '';
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

function subnetEnv(file: string): string | undefined {
  if (!existsSync(file)) return undefined;
  return /^FLANNEL_SUBNET=(.*)$/m.exec(readFileSync(file, 'utf8'))?.[1];
}

/** The policy table without its verdict counters, which traffic moves while the rules stay. */
function nftTable(ns: string): string | undefined {
  const r = run(['ip', 'netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'weft-policy']);
  return r.code === 0 ? r.stdout.replace(/ counter packets \d+ bytes \d+/g, '') : undefined;
}

/** A Node as flannel v0.2x leaves it for vxlan (pkg/subnet/kube AcquireLease, pkg/backend/vxlan newSubnetAttrs). */
function flannelNode(name: string, podCIDR: string, publicIP: string, backendData: string): Record<string, unknown> {
  return {
    apiVersion: 'v1', kind: 'Node',
    metadata: {
      name,
      annotations: {
        [`${ANN}/backend-data`]: backendData,
        [`${ANN}/backend-type`]: 'vxlan',
        [`${ANN}/kube-subnet-manager`]: 'true',
        [`${ANN}/public-ip`]: publicIP,
      },
    },
    spec: { podCIDR, podCIDRs: [podCIDR] },
  };
}

/** Go's json.Marshal of flannel's vxlanLeaseAttrs: {"VNI":1,"VtepMAC":"…"} (hardwareAddr marshals as its string). */
const vxlanData = (mac: string) => `{"VNI":1,"VtepMAC":"${mac}"}`;

/** Every Background still running, for the after() hook. */
const running = new Set<Background>();

/** A long-running command inside a namespace, its output gathered; stop() kills it by its PID. */
class Background {
  readonly child: ChildProcess;
  out = '';
  readonly exited: Promise<number | null>;
  constructor(argv: readonly string[]) {
    const [cmd, ...args] = argv;
    this.child = spawn(cmd ?? 'false', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.setEncoding('utf8').on('data', (c: string) => { this.out += c; });
    this.child.stderr?.setEncoding('utf8').on('data', (c: string) => { this.out += c; });
    this.exited = new Promise((resolve) => this.child.on('close', (code) => { running.delete(this); resolve(code); }));
    running.add(this);
  }

  async stop(): Promise<string> {
    if (this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null) {
      try { process.kill(this.child.pid, 'SIGTERM'); } catch { /* already gone */ }
    }
    await this.exited;
    return this.out;
  }
}

/**
 * `ip monitor` of weftd's routes, nexthops and neighbours on the vxlan device, plus the device's
 * FDB: every write weftd makes to a peer's dataplane shows up here, a flap as a Deleted line.
 */
class DataplaneMonitor {
  private readonly ip: Background;
  private readonly bridge: Background;
  constructor(ns: string) {
    this.ip = new Background(['ip', '-n', ns, 'monitor', 'route', 'nexthop', 'neigh', 'dev', VXLAN_DEV]);
    this.bridge = new Background(['bridge', '-n', ns, 'monitor', 'fdb']);
  }

  async stop(): Promise<string[]> {
    const lines = (text: string) => text.split('\n').filter((l) => l.trim() !== '');
    // bridge monitor has no device filter; the pods' bridge learns and forgets MACs all the time.
    const fdbLines = lines(await this.bridge.stop()).filter((l) => l.includes(` dev ${VXLAN_DEV} `));
    return [...lines(await this.ip.stop()), ...fdbLines];
  }
}

describe('weftd --store kube under faults, against a real kube-apiserver (one kube lab)', { timeout: 300_000 }, () => {
  const name = labName('wak');
  const dirs = new LabDirs(stateDir(name));
  const adminKubeconfig = join(dirs.kube, 'admin.kubeconfig');
  let rec: LabRecord;
  let outside = '';
  /** Every PID this lab ever had, to check after down that none survived. */
  const everyPid = new Set<number>();
  let extras = 0;

  const hosts = () => rec.hostList.map((h) => h.ns);
  const weftdLog = (i: number) => dirs.weftdLog(i);

  function kubectl(args: readonly string[], input?: string): Run {
    return run(['ip', 'netns', 'exec', outside, 'env', `KUBECACHEDIR=${join(dirs.kube, 'kubectl-cache')}`, K8S.kubectl, '--kubeconfig', adminKubeconfig, ...args], input);
  }

  function kubectlOk(args: readonly string[], input?: string): string {
    const r = kubectl(args, input);
    assert.equal(r.code, 0, `kubectl ${args.join(' ')}: ${r.stderr || r.stdout}`);
    return r.stdout;
  }

  const apply = (...objs: Record<string, unknown>[]) => kubectlOk(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }));

  /** Adds a process to the lab's record so `lab down` stops it even if this test dies first. */
  function recordProcess(p: LabProcess, replacing?: LabProcess): void {
    const now = readRecord(dirs);
    assert.ok(now, 'lab record');
    now.processes = now.processes.filter((x) => x.pid !== replacing?.pid || x.startTime !== replacing.startTime);
    now.processes.push(p);
    writeRecord(dirs, now);
    everyPid.add(p.pid);
  }

  function apiServer(): LabProcess {
    const p = readRecord(dirs)?.processes.find((x) => x.role === 'kube-apiserver' && isSameProcess(x.pid, x.startTime));
    assert.ok(p, 'the lab\'s kube-apiserver runs');
    return p;
  }

  /** SIGKILLs the lab's kube-apiserver (its PID from the record) and returns what restarts it as it was. */
  async function killApiServer(): Promise<{ argv: string[]; proc: LabProcess }> {
    const proc = apiServer();
    // Its command line before it dies: the relaunch must be the same API server.
    const argv = readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    assert.ok(argv[0]?.endsWith('kube-apiserver'), `pid ${proc.pid} is kube-apiserver: ${argv[0]}`);
    assert.deepEqual(await killAndWait([proc]), [], 'kube-apiserver gone after SIGKILL');
    // The thread-group leader shows as a zombie while the other threads still exit, holding the
    // listening socket: the relaunch must wait for the port, not only for the PID.
    const port = argv[argv.indexOf('--secure-port') + 1] ?? '';
    await waitFor(`port ${port} free`, () => runOk(['ip', 'netns', 'exec', outside, 'ss', '-Hltn', `sport = :${port}`]).trim() === '', 10_000, 50);
    return { argv, proc };
  }

  async function waitApiReady(log: string, server?: string): Promise<void> {
    try {
      await waitFor(`kube-apiserver ${server ?? ''} ready`, () => kubectl(['get', '--raw', '/readyz', '--request-timeout', '2s', ...(server ? ['--server', server] : [])]).stdout.trim() === 'ok', 60_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${log}:\n${readFileSync(log, 'utf8').split('\n').slice(-25).join('\n')}`);
    }
  }

  /** kube-apiserver started again inside the outside namespace, detached, logging where it did, recorded in place of the old one. */
  async function startApiServer(argv: readonly string[], role: string, log: string, replacing?: LabProcess, server?: string): Promise<LabProcess> {
    const p = startInNamespace(role, outside, argv, log);
    recordProcess(p, replacing);
    await waitApiReady(log, server);
    return p;
  }

  /** A namespace of the lab wired to its underlay switch, as a host joining the cluster. */
  function addExtraHost(node: string): { ns: string; ip: string; dir: string; subnetFile: string; log: string } {
    const k = ++extras;
    const { ns } = addLabNamespace(parseLabName(name), `x${k}`);
    const underlay = rec.underlay ?? '';
    const port = `px${k}`;
    runOk(['ip', '-n', underlay, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    runOk(['ip', '-n', underlay, 'link', 'set', port, 'master', 'sw', 'up']);
    // Underlay addresses past the lab's hosts (.1…) and below outside (.254).
    const ip = `198.18.0.${200 + k}`;
    runOk(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    runOk(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
    const dir = join(dirs.root, 'extra', node);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return { ns, ip, dir, subnetFile: join(dir, 'subnet.env'), log: join(dir, 'weftd.log') };
  }

  function startExtraWeftd(host: { ns: string; subnetFile: string; log: string }, node: string, kubeconfig: string): LabProcess {
    const p = startInNamespace(`weftd ${node}`, host.ns, [
      WEFTD_BIN, '--iface', 'eth0', '--node-name', node, '--subnet-file', host.subnetFile, '--health-addr', `127.0.0.1:${HEALTH_PORT}`,
      '--store', 'kube', '--kubeconfig', kubeconfig, '--net-config', dirs.netConfig,
    ], host.log);
    recordProcess(p);
    return p;
  }

  /** SIGTERM (weftd keeps its dataplane and lease), SIGKILL if it does not go. */
  async function stopProcess(p: LabProcess): Promise<void> {
    if (isSameProcess(p.pid, p.startTime)) process.kill(p.pid, 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (isSameProcess(p.pid, p.startTime) && Date.now() < deadline) await sleep(50);
    assert.deepEqual(await killAndWait([p]), [], `${p.role} stopped`);
  }

  before(() => {
    rec = upOk(['--name', name, '--store', 'kube', '--backend', 'vxlan', '--hosts', '2', '--pods', '1']);
    outside = rec.outside ?? '';
    for (const p of rec.processes) everyPid.add(p.pid);
    assert.ok(rec.underlay && outside, 'single-segment lab with an outside namespace');
  });

  after(async () => {
    for (const b of [...running]) await b.stop();
    downQuietly(name);
  });

  it('a Node annotated the way flannel v0.2x annotates it for vxlan is programmed on every host (route proto 87, neighbour, FDB) and unprogrammed when deleted', async () => {
    const mac = '0a:58:c6:12:00:32';
    apply(flannelNode('flannel-n1', '10.244.50.0/24', '198.18.0.50', vxlanData(mac)));
    for (const ns of hosts()) {
      await waitFor(`flannel-n1 programmed in ${ns}`, () => Object.values(peerState(ns, '10.244.50.0/24', '198.18.0.50', mac)).every(Boolean));
    }
    kubectlOk(['delete', 'node', 'flannel-n1']);
    for (const ns of hosts()) await waitFor(`flannel-n1 unprogrammed in ${ns}`, () => peerGone(ns, '10.244.50.0/24', mac));
  });

  it('Nodes with backend-data that is not JSON or a public-ip that is no address are skipped with a warning naming them; other peers keep their routes; lab check passes', async () => {
    const peersBefore = hosts().map((ns) => routes(ns).map((r) => r.dst).sort());
    const goodMac = '0a:58:c6:12:00:35';
    // The bad ones first: the good one after them proves they block nothing behind them.
    apply(
      flannelNode('bad-data', '10.244.51.0/24', '198.18.0.51', '{VNI:1, "VtepMAC": oops'),
      flannelNode('bad-ip', '10.244.52.0/24', '198.18.0.300', vxlanData('0a:58:c6:12:00:34')),
    );
    apply(flannelNode('flannel-n3', '10.244.53.0/24', '198.18.0.53', vxlanData(goodMac)));
    for (const [i, ns] of hosts().entries()) {
      await waitFor(`flannel-n3 programmed in ${ns}`, () => Object.values(peerState(ns, '10.244.53.0/24', '198.18.0.53', goodMac)).every(Boolean));
      for (const node of ['bad-data', 'bad-ip']) {
        const warning = await waitFor(`h${i}'s weftd warns about ${node}`, () => logLines(weftdLog(i)).find((l) => l.level === 'warn' && l.node === node));
        assert.match(String(warning.reason), node === 'bad-data' ? /backend-data is not JSON/ : /PublicIP: expected an IPv4 address, got "198\.18\.0\.300"/);
      }
      const dsts = routes(ns).map((r) => r.dst);
      assert.ok(!dsts.includes('10.244.51.0/24') && !dsts.includes('10.244.52.0/24'), `no route to a skipped node in ${ns}: ${dsts.join(', ')}`);
      assert.deepEqual(dsts.filter((d) => d !== '10.244.53.0/24').sort(), peersBefore[i], `the other peers' routes in ${ns} are untouched`);
    }
    const check = lab(['check', '--name', name, '--json']);
    assert.equal(check.code, 0, `lab check:\n${check.stdout.slice(0, 2000)}\n${check.stderr}`);
    assert.equal((JSON.parse(check.stdout) as { ok: boolean }).ok, true);

    // A peer whose annotation goes bad is dropped, not kept with its old attributes.
    kubectlOk(['annotate', 'node', 'flannel-n3', '--overwrite', `${ANN}/public-ip=not-an-ip`]);
    for (const [i, ns] of hosts().entries()) {
      await waitFor(`flannel-n3 unprogrammed in ${ns}`, () => peerGone(ns, '10.244.53.0/24', goodMac));
      await waitFor(`h${i}'s weftd warns about flannel-n3`, () => logLines(weftdLog(i)).some((l) => l.level === 'warn' && l.node === 'flannel-n3'));
    }
    kubectlOk(['delete', 'node', 'flannel-n3']);
    // bad-data and bad-ip stay: the re-lists of the later cases must not warn about them again.
  });

  it('kube-apiserver SIGKILLed for 20 s under a steady ping between hosts: no loss, /readyz says the store is unreachable, the policy table stays, then ready again and new Nodes programmed', async () => {
    const [c0, c1] = rec.containers;
    assert.ok(c0?.ip && c1?.ip && c0.host !== c1.host, 'two pods on different hosts');
    kubectlOk(['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy',
      metadata: { name: 'lab-only', namespace: 'lab' },
      spec: { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: {} }] }] },
    }));
    const tables = await Promise.all(rec.hostList.map((h) => {
      const pod = rec.containers.find((c) => c.host === h.index)?.ip ?? '';
      return waitFor(`the policy table in ${h.ns} holds ${pod}'s ingress chain`, () => {
        const t = nftTable(h.ns);
        return t !== undefined && new RegExp(`${pod.replace(/\./g, '\\.')} : jump ing-`).test(t) ? t : undefined;
      });
    }));
    const monitors = hosts().map((ns) => new DataplaneMonitor(ns));
    await sleep(300); // the monitors subscribe before anything happens

    // 25 s at 20 packets a second, from before the kill until after the API server is back.
    const ping = new Background(['ip', 'netns', 'exec', c0.ns, 'ping', '-q', '-n', '-i', '0.05', '-c', '500', '-w', '90', c1.ip]);
    await sleep(1000);
    const killedAt = Date.now();
    const { argv, proc } = await killApiServer();

    for (const ns of hosts()) {
      const r = await waitFor(`${ns}'s weftd reports the store unreachable`, () => {
        const z = readyz(ns);
        return z?.store?.status === 'unreachable' ? z : undefined;
      });
      assert.equal(r.ready, false, `${ns} is not ready while the API server is away`);
      assert.match(r.store?.reason ?? '', /ECONNREFUSED|connect/);
    }
    // Still within the outage: the last policy the API server gave is still enforced.
    for (const [i, ns] of hosts().entries()) assert.equal(nftTable(ns), tables[i], `${ns}: weft-policy kept while the API server is away`);

    await sleep(Math.max(0, 20_000 - (Date.now() - killedAt)));
    assert.ok(!isSameProcess(proc.pid, proc.startTime));
    await startApiServer(argv, 'kube-apiserver', proc.log, proc);
    // The relaunched API server is the lab's now: status counts it, down will stop it.
    const status = lab(['status', '--name', name, '--json']);
    assert.equal(status.code, 0, status.stderr);
    assert.equal((JSON.parse(status.stdout) as { healthy: boolean }).healthy, true, 'lab status healthy with the relaunched API server');
    for (const ns of hosts()) await waitFor(`${ns}'s weftd ready again`, () => readyz(ns)?.ready === true, 60_000);

    const code = await ping.exited;
    const stats = /(\d+) packets transmitted, (\d+) received/.exec(ping.out);
    assert.ok(stats, `ping summary:\n${ping.out}`);
    assert.equal(code, 0, ping.out);
    assert.equal(Number(stats[1]), 500, ping.out);
    assert.equal(Number(stats[2]), 500, `no loss while the API server was away:\n${ping.out}`);
    for (const [i, ns] of hosts().entries()) assert.equal(nftTable(ns), tables[i], `${ns}: weft-policy unchanged after the API server returned`);

    const mac = '0a:58:c6:12:00:36';
    apply(flannelNode('flannel-n4', '10.244.54.0/24', '198.18.0.54', vxlanData(mac)));
    for (const ns of hosts()) {
      await waitFor(`flannel-n4 (added after the API server returned) programmed in ${ns}`, () => Object.values(peerState(ns, '10.244.54.0/24', '198.18.0.54', mac)).every(Boolean));
    }
    const events = await Promise.all(monitors.map((m) => m.stop()));
    for (const [i, lines] of events.entries()) {
      assert.ok(lines.some((l) => l.includes('10.244.54.0')), `h${i}'s monitor saw flannel-n4 arrive (it was listening):\n${lines.join('\n')}`);
      assert.deepEqual(lines.filter((l) => /\bDeleted\b/.test(l)), [], `h${i}: nothing of the dataplane removed across the outage`);
    }
    kubectlOk(['delete', 'node', 'flannel-n4']);
    for (const ns of hosts()) await waitFor(`flannel-n4 unprogrammed in ${ns}`, () => peerGone(ns, '10.244.54.0/24', mac));
  });

  it('a Node without podCIDR: /readyz lease "waiting" naming podCIDR; once the podCIDR is set weftd proceeds, writes subnet.env and becomes a peer', async () => {
    const node = 'h8';
    apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'kubernetes.io/hostname': node } } });
    const host = addExtraHost(node);
    const weftd = startExtraWeftd(host, node, dirs.kubeconfig);
    const waiting = await waitFor(`${node}'s weftd waiting for its podCIDR`, () => {
      const z = readyz(host.ns);
      return z?.lease?.status === 'waiting' ? z : undefined;
    });
    assert.equal(waiting.ready, false);
    assert.match(waiting.lease?.reason ?? '', /podCIDR/);
    assert.equal(subnetEnv(host.subnetFile), undefined, 'no subnet.env before the podCIDR');
    assert.ok(isSameProcess(weftd.pid, weftd.startTime), 'weftd waits, it does not exit');

    kubectlOk(['patch', 'node', node, '--type', 'merge', '-p', JSON.stringify({ spec: { podCIDR: '10.244.8.0/24', podCIDRs: ['10.244.8.0/24'] } })]);
    assert.equal(await waitFor(`${node}'s subnet.env`, () => subnetEnv(host.subnetFile)), '10.244.8.1/24');
    await waitFor(`${node}'s weftd ready`, () => readyz(host.ns)?.ready === true);
    for (const ns of hosts()) await waitFor(`${ns} routes to ${node}'s podCIDR`, () => routes(ns).some((r) => r.dst === '10.244.8.0/24'));

    await stopProcess(weftd);
    kubectlOk(['delete', 'node', node]);
    for (const ns of hosts()) await waitFor(`${ns} drops ${node}'s route`, () => !routes(ns).some((r) => r.dst === '10.244.8.0/24'));
  });

  it('a ServiceAccount without the weft ClusterRole binding: /readyz and the log name the refused verb and resource, and weftd retries with backoff instead of exiting', async () => {
    const node = 'h7';
    apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: node }, spec: { podCIDR: '10.244.7.0/24', podCIDRs: ['10.244.7.0/24'] } });
    kubectlOk(['create', 'serviceaccount', 'weft-unbound', '-n', 'kube-weft']);
    const token = kubectlOk(['create', 'token', 'weft-unbound', '-n', 'kube-weft', '--duration', '1h']).trim();
    // weftd's own kubeconfig with the other identity's token: same server, same CA.
    const doc = parseYaml(readFileSync(dirs.kubeconfig, 'utf8')) as { users: Array<{ user: Record<string, unknown> }> };
    const user = doc.users[0];
    assert.ok(user);
    user.user = { token };
    const kubeconfig = join(dirs.root, 'extra', 'unbound.kubeconfig');
    mkdirSync(join(dirs.root, 'extra'), { recursive: true, mode: 0o700 });
    writeFileSync(kubeconfig, toYaml(doc), { mode: 0o600 });

    const host = addExtraHost(node);
    const weftd = startExtraWeftd(host, node, kubeconfig);
    const refusal = /nodes "h7" is forbidden: User "system:serviceaccount:kube-weft:weft-unbound" cannot get resource "nodes"/;
    const z = await waitFor(`${node}'s weftd reports the refusal`, () => {
      const r = readyz(host.ns);
      return r?.lease?.status === 'waiting' && refusal.test(r.lease.reason ?? '') ? r : undefined;
    });
    assert.equal(z.ready, false);

    // Denials as the API server counts them (RBAC has no opinion, so the request is refused);
    // nothing else in this lab is refused, so these are this weftd's retries.
    const refused = (): number => {
      const line = kubectlOk(['get', '--raw', '/metrics']).split('\n').find((l) => l.startsWith('authorization_attempts_total{result="no-opinion"}'));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const first = { n: refused(), at: Date.now() };
    await sleep(5000);
    const second = { n: refused(), at: Date.now() };
    assert.ok(second.n > first.n, 'weftd keeps asking');
    // Not hot: the leaser backs off to one look every 2 s; a tight loop would be hundreds a second.
    const perSecond = (second.n - first.n) / ((second.at - first.at) / 1000);
    assert.ok(perSecond < 5, `refused requests per second: ${perSecond.toFixed(1)}`);
    assert.ok(isSameProcess(weftd.pid, weftd.startTime), 'weftd keeps running (no exit, no restart)');
    const warnings = logLines(host.log).filter((l) => l.level === 'warn' && refusal.test(String(l.reason)));
    assert.equal(warnings.length, 1, 'the refusal is logged once, not once per retry');

    // Granting the rights is all it takes: the same process goes on.
    apply({
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'weft-unbound' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'weft' },
      subjects: [{ kind: 'ServiceAccount', name: 'weft-unbound', namespace: 'kube-weft' }],
    });
    assert.equal(await waitFor(`${node}'s subnet.env once the binding exists`, () => subnetEnv(host.subnetFile)), '10.244.7.1/24');
    await waitFor(`${node}'s weftd ready`, () => readyz(host.ns)?.ready === true);
    assert.ok(isSameProcess(weftd.pid, weftd.startTime), 'the same weftd, not a restarted one');

    await stopProcess(weftd);
    kubectlOk(['delete', 'node', node]);
    kubectlOk(['delete', 'clusterrolebinding', 'weft-unbound']);
    kubectlOk(['delete', 'serviceaccount', 'weft-unbound', '-n', 'kube-weft']);
  });

  it('no API server at start: weftd says so in /readyz, keeps retrying, and proceeds once an API server appears at that address', async () => {
    const node = 'h6';
    apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: node }, spec: { podCIDR: '10.244.6.0/24', podCIDRs: ['10.244.6.0/24'] } });
    // A second API server of the same cluster (same etcd, certificates) on a port nothing listens on yet.
    const port = '6444';
    const lateServer = `https://${rec.outsideIP}:${port}`;
    const doc = parseYaml(readFileSync(dirs.kubeconfig, 'utf8')) as { clusters: Array<{ cluster: Record<string, unknown> }> };
    const cluster = doc.clusters[0];
    assert.ok(cluster);
    cluster.cluster.server = lateServer;
    const kubeconfig = join(dirs.root, 'extra', 'late.kubeconfig');
    mkdirSync(join(dirs.root, 'extra'), { recursive: true, mode: 0o700 });
    writeFileSync(kubeconfig, toYaml(doc), { mode: 0o600 });

    const host = addExtraHost(node);
    const weftd = startExtraWeftd(host, node, kubeconfig);
    const z = await waitFor(`${node}'s weftd reports the API server unreachable`, () => {
      const r = readyz(host.ns);
      return r?.lease?.status === 'waiting' && /ECONNREFUSED/.test(r.lease.reason ?? '') ? r : undefined;
    });
    assert.equal(z.ready, false);
    assert.match(z.lease?.reason ?? '', new RegExp(`cannot read Node ${node}: .*${rec.outsideIP?.replace(/\./g, '\\.')}:${port}`));
    // A few of the leaser's backoff periods: still there, still waiting, said once in the log.
    await sleep(4000);
    assert.ok(isSameProcess(weftd.pid, weftd.startTime), 'weftd does not exit while the API server is missing');
    assert.equal(readyz(host.ns)?.lease?.status, 'waiting');
    assert.equal(logLines(host.log).filter((l) => l.level === 'warn' && /ECONNREFUSED/.test(String(l.reason))).length, 1);

    const argv = readFileSync(`/proc/${apiServer().pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    const i = argv.indexOf('--secure-port');
    assert.ok(i > 0);
    argv[i + 1] = port;
    const late = await startApiServer(argv, 'kube-apiserver late', dirs.procLog('kube-apiserver-late'), undefined, lateServer);
    assert.equal(await waitFor(`${node}'s subnet.env once the API server is there`, () => subnetEnv(host.subnetFile), 60_000), '10.244.6.1/24');
    await waitFor(`${node}'s weftd ready`, () => readyz(host.ns)?.ready === true);
    for (const ns of hosts()) await waitFor(`${ns} routes to ${node}'s podCIDR`, () => routes(ns).some((r) => r.dst === '10.244.6.0/24'));

    await stopProcess(weftd);
    assert.deepEqual(await killAndWait([late]), []);
    kubectlOk(['delete', 'node', node]);
  });

  it('a node watch expired by the API server (410 Gone after it restarts on a newer revision) is re-listed without touching the programmed routes', async () => {
    const logSize = rec.hostList.map((h) => logLines(weftdLog(h.index)).length);
    const programmed = hosts().map((ns) => routes(ns).map((r) => r.dst).sort());
    const monitors = hosts().map((ns) => new DataplaneMonitor(ns));
    await sleep(300);
    // etcd's revision moves past the last Node event weftd saw (ConfigMaps: nothing weft watches),
    // so the restarted API server's watch cache starts after the nodes watch's resourceVersion.
    for (let i = 0; i < 3; i++) kubectlOk(['create', 'configmap', `bump${i}`, '-n', 'default', `--from-literal=i=${i}`]);
    const { argv, proc } = await killApiServer();
    await startApiServer(argv, 'kube-apiserver', proc.log, proc);

    for (const h of rec.hostList) {
      const resync = await waitFor(`h${h.index}'s node watch expires and re-lists`, () => logLines(weftdLog(h.index)).slice(logSize[h.index])
        .find((l) => l.msg === 'lease watch lost continuity; re-listing'), 60_000);
      assert.match(String(resync.reason), /\/api\/v1\/nodes: too old resource version/);
      await waitFor(`h${h.index}'s weftd ready again`, () => readyz(h.ns)?.ready === true, 60_000);
    }
    // The watch goes on after the re-list: a new Node still arrives.
    const mac = '0a:58:c6:12:00:37';
    apply(flannelNode('flannel-n5', '10.244.55.0/24', '198.18.0.55', vxlanData(mac)));
    for (const ns of hosts()) await waitFor(`flannel-n5 programmed in ${ns}`, () => Object.values(peerState(ns, '10.244.55.0/24', '198.18.0.55', mac)).every(Boolean));
    const events = await Promise.all(monitors.map((m) => m.stop()));
    for (const [i, ns] of hosts().entries()) {
      const lines = events[i] ?? [];
      // flannel-n5's own writes show the monitors were listening; nothing else was written or removed.
      assert.ok(lines.some((l) => l.includes('10.244.55.0')), `h${i}'s monitor saw flannel-n5 arrive:\n${lines.join('\n')}`);
      assert.deepEqual(lines.filter((l) => !l.includes('10.244.55.0') && !l.includes(mac) && !l.includes('198.18.0.55')), [], `h${i}: the re-list wrote nothing for the existing peers`);
      assert.deepEqual(routes(ns).map((r) => r.dst).filter((d) => d !== '10.244.55.0/24').sort(), programmed[i]);
      // Re-lists warn about a bad Node once, not on every listing (case 2's bad-data and bad-ip are still there).
      const log = logLines(weftdLog(i));
      for (const node of ['bad-data', 'bad-ip']) assert.equal(log.filter((l) => l.node === node).length, 1, `h${i} warned about ${node} once`);
      for (const subnet of ['10.244.51.0/24', '10.244.52.0/24']) {
        assert.equal(log.filter((l) => l.msg === 'skipping unreadable lease in the store' && l.subnet === subnet).length, 1, `h${i} warned about ${subnet} once`);
      }
    }
    kubectlOk(['delete', 'node', 'flannel-n5']);
  });

  it('lab down removes everything: the relaunched API server, the extra weftds and namespaces included', () => {
    for (const p of readRecord(dirs)?.processes ?? []) everyPid.add(p.pid);
    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
    assertGone(name, [...everyPid]);
  });
});

// A real, throwaway Kubernetes control plane — etcd and kube-apiserver, nothing else — for the
// tests, the lab and the benchmarks. No scheduler, controller-manager or kubelet: weft only talks
// to the API server (Nodes, Pods, Namespaces, NetworkPolicies), and objects a kubelet or
// controller would write are written by the caller with kubectl, as the real ones would.
//
// Everything lives in one state directory:
//
//   DIR/controlplane.json   the record: PIDs with their kernel start times, server URL, what to remove
//   DIR/pki/                CA, serving cert, admin client cert, service-account key (openssl)
//   DIR/etcd/               etcd's data
//   DIR/logs/               etcd.log, kube-apiserver.log
//   DIR/admin.kubeconfig    client-certificate kubeconfig, O=system:masters
//   DIR/kubectl-cache/      kubectl's discovery cache (kept out of $HOME)
//
// The processes are started detached (their own session, output to a log file) so a `weftctl kube
// up` can exit and leave them running; the record is written after each start, so
// stopControlPlane(DIR) can remove everything from the directory alone after a crash, and never
// kills a process that merely reused a recorded PID.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify as toYaml } from 'yaml';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { isSameProcess, processStartTime } from '../lab/procs.js';
import { findKubeBinaries, type KubeBinaries } from './binaries.js';

/** A process this control plane started: PID + kernel start time identify it for good. */
export interface ControlPlaneProcess {
  readonly role: ControlPlaneRole;
  readonly pid: number;
  readonly startTime: string;
  readonly log: string;
}

export type ControlPlaneRole = 'etcd' | 'kube-apiserver';

/**
 * Starts argv detached inside network namespace `ns` with its output appended to `log`, and
 * returns its PID and start time — src/lab/procs.ts startInNamespace has this shape, so the lab
 * passes a wrapper that also records the process in its own state.
 */
export type Launcher = (
  role: string,
  ns: string,
  argv: readonly string[],
  log: string,
  env: Record<string, string>,
) => { readonly pid: number; readonly startTime: string };

export interface ControlPlaneOptions {
  /** State directory; created if missing (and then removed by stop()). */
  readonly dir: string;
  /** Where etcd and the API server listen (default 127.0.0.1). */
  readonly address?: string;
  /** Run both processes inside this named network namespace (`ip netns exec`). */
  readonly netns?: string;
  /** API server port: default a free port on `address`, or 6443 inside `netns`. */
  readonly apiPort?: number;
  /** etcd client port (the peer port is the next one): default free ports, or 2379 inside `netns`. */
  readonly etcdPort?: number;
  /** Starts the processes instead of the built-in detached spawn; needs `netns`. */
  readonly launcher?: Launcher;
  /** How long to wait for /readyz (default 60 s: a busy 2-core machine may need 20). */
  readonly readyTimeoutMs?: number;
  /** Default: findKubeBinaries() (WEFT_K8S_BIN_DIR or the build cache). */
  readonly binaries?: KubeBinaries;
}

export interface KubectlOptions {
  /** Written to kubectl's stdin (e.g. a manifest for `apply -f -`). */
  readonly input?: string;
  /** Another identity, e.g. a serviceAccountKubeconfig() file (default: the admin kubeconfig). */
  readonly kubeconfig?: string;
  readonly timeoutMs?: number;
  /** Resolve with a non-zero code instead of throwing (to look at a refusal). */
  readonly allowFailure?: boolean;
}

export interface KubectlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ControlPlane {
  /** https://ADDRESS:PORT */
  readonly server: string;
  readonly adminKubeconfig: string;
  readonly caFile: string;
  readonly dir: string;
  readonly processes: readonly ControlPlaneProcess[];
  /** Wall time from the call to /readyz answering ok. */
  readonly startupMs: number;
  /** The built kubectl with the admin kubeconfig (inside `netns` when there is one). */
  kubectl(args: readonly string[], opts?: KubectlOptions): Promise<KubectlResult>;
  /**
   * A kubeconfig at `file` holding only the CA and a token of ServiceAccount namespace/name from
   * the TokenRequest API, so RBAC decides what it may do. The ServiceAccount must exist.
   */
  serviceAccountKubeconfig(namespace: string, name: string, file: string): Promise<string>;
  /** SIGTERM, SIGKILL after a grace period, wait; then remove what start created. */
  stop(): Promise<void>;
}

const RECORD = 'controlplane.json';
/** Entries start creates inside a directory it did not create; stop removes exactly these. */
const OWNED_ENTRIES = [RECORD, 'pki', 'etcd', 'logs', 'admin.kubeconfig', 'kubectl-cache'];
const STOP_GRACE_MS = 5000;
const SERVICE_CIDR = '10.96.0.0/16';
/** The `kubernetes` Service's ClusterIP: in-cluster clients reach the API server there. */
const SERVICE_IP = '10.96.0.1';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';

const recordSchema = z.object({
  version: z.literal(1),
  /** start made the directory, so stop removes all of it; else only OWNED_ENTRIES and `files`. */
  createdDir: z.boolean(),
  kubeVersion: z.string(),
  address: z.string(),
  netns: z.string().optional(),
  server: z.string(),
  etcdUrl: z.string(),
  processes: z.array(z.object({
    role: z.enum(['etcd', 'kube-apiserver']),
    pid: z.number().int().positive(),
    startTime: z.string(),
    log: z.string(),
  })),
  /** Service-account kubeconfigs written on request (anywhere), removed by stop. */
  files: z.array(z.string()),
});

type ControlPlaneRecord = z.infer<typeof recordSchema>;

interface Pki {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly saKey: string;
}

function recordPath(dir: string): string {
  return join(dir, RECORD);
}

function writeRecord(dir: string, rec: ControlPlaneRecord): void {
  const tmp = `${recordPath(dir)}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, recordPath(dir));
}

/** The record in `dir`, or undefined when there is none. */
export function readControlPlaneRecord(dir: string): ControlPlaneRecord | undefined {
  let text: string;
  try {
    text = readFileSync(recordPath(dir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WeftError(CniCode.IoFailure, `cannot read ${recordPath(dir)}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new WeftError(CniCode.DecodeFailure, `${recordPath(dir)} is not JSON: ${(err as Error).message}`);
  }
  const p = recordSchema.safeParse(raw);
  if (!p.success) {
    const issue = p.error.issues[0];
    throw new WeftError(CniCode.DecodeFailure, `${recordPath(dir)}: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'invalid'}`);
  }
  return p.data;
}

function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A port nobody listens on at `address` right now (the kernel's pick). */
async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, address, () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Two consecutive free ports: etcd's client and peer port. */
async function freePortPair(address: string): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const p = await freePort(address);
    if (p < 65535 && await portFree(address, p + 1)) return p;
  }
  throw new WeftError(CniCode.Internal, `no two consecutive free ports on ${address}`);
}

async function portFree(address: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, address, () => srv.close(() => resolve(true)));
  });
}

interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a short command to completion (no shell); a timeout kills it and reports code -1. */
function run(argv: readonly string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new WeftError(CniCode.Internal, 'empty command');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new WeftError(CniCode.Internal, `cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? -1 : 0), stdout, stderr });
    });
    child.stdin.on('error', () => { /* the command may exit without reading its input */ });
    child.stdin.end(opts.input ?? '');
  });
}

async function openssl(args: readonly string[]): Promise<void> {
  const r = await run(['openssl', ...args]);
  if (r.code !== 0) throw new WeftError(CniCode.Internal, `openssl ${args[0] ?? ''} failed (${r.code}): ${r.stderr.trim()}`);
}

/**
 * CA, serving and admin certificates (P-256: key generation is instant, unlike RSA) and the
 * service-account signing key (RSA 2048, as kubeadm makes it: every token verifier takes RS256).
 * A config file of our own keeps the system openssl.cnf's defaults (CA:TRUE on every -x509) out
 * of the leaf certs. The CA comes first (it signs the others); the rest run side by side.
 */
async function makePki(dir: string, address: string): Promise<Pki> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const pki: Pki = {
    dir,
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    serverCert: join(dir, 'apiserver.crt'),
    serverKey: join(dir, 'apiserver.key'),
    adminCert: join(dir, 'admin.crt'),
    adminKey: join(dir, 'admin.key'),
    saKey: join(dir, 'sa.key'),
  };
  const cnf = join(dir, 'openssl.cnf');
  writeFileSync(cnf, '[req]\ndistinguished_name = dn\n[dn]\n');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const leaf = (cert: string, key: string, subj: string, ext: string[]): Promise<void> =>
    openssl(['req', '-config', cnf, '-x509', '-new', ...ec, '-keyout', key, '-out', cert, '-CA', pki.caCert, '-CAkey', pki.caKey,
      '-days', '365', '-subj', subj, '-addext', 'basicConstraints=critical,CA:FALSE', ...ext.flatMap((e) => ['-addext', e])]);
  const sans = [...new Set([`IP:${address}`, 'IP:127.0.0.1', `IP:${SERVICE_IP}`, 'DNS:localhost', 'DNS:kubernetes',
    'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local'])];
  const saKey = openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', pki.saKey]);
  await openssl(['req', '-config', cnf, '-x509', '-new', ...ec, '-keyout', pki.caKey, '-out', pki.caCert, '-days', '3650',
    '-subj', '/CN=weft-kube-ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']);
  await Promise.all([
    saKey,
    leaf(pki.serverCert, pki.serverKey, '/CN=kube-apiserver', [`subjectAltName=${sans.join(',')}`, 'extendedKeyUsage=serverAuth', 'keyUsage=critical,digitalSignature,keyEncipherment']),
    leaf(pki.adminCert, pki.adminKey, '/O=system:masters/CN=weft-admin', ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature,keyEncipherment']),
  ]);
  return pki;
}

function b64(file: string): string {
  return readFileSync(file).toString('base64');
}

/** A kubeconfig with one cluster, one user and one context, everything embedded (copyable). */
function writeKubeconfig(file: string, server: string, caCert: string, user: Record<string, string>): void {
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'weft', cluster: { server, 'certificate-authority-data': b64(caCert) } }],
    users: [{ name: 'weft', user }],
    contexts: [{ name: 'weft', context: { cluster: 'weft', user: 'weft' } }],
    'current-context': 'weft',
  };
  writeFileSync(file, toYaml(doc), { mode: 0o600 });
}

/** The built-in launcher: detached in its own session so it outlives a `weftctl kube up`. */
function spawnDetached(ns: string | undefined, argv: readonly string[], log: string, role: string): { pid: number; startTime: string } {
  const full = ns === undefined ? argv : ['ip', 'netns', 'exec', ns, ...argv];
  const [cmd, ...args] = full;
  if (cmd === undefined) throw new WeftError(CniCode.Internal, `empty command for ${role}`);
  const fd = openSync(log, 'a', 0o600);
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] });
    // A missing binary is an 'error' event after spawn returns; child.pid is then undefined.
    child.on('error', () => undefined);
    child.unref();
    const pid = child.pid;
    const startTime = pid === undefined ? undefined : processStartTime(pid);
    if (pid === undefined || startTime === undefined) throw new WeftError(CniCode.Internal, `${role} (${cmd}) could not be started; see ${log}`);
    return { pid, startTime };
  } finally {
    closeSync(fd);
  }
}

function tailOf(file: string, lines = 15): string {
  try {
    const all = readFileSync(file, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).map((l) => `  ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`).join('\n');
  } catch {
    return '  (no log)';
  }
}

function logsOf(procs: readonly ControlPlaneProcess[]): string {
  return procs.map((p) => `${p.role} log (${p.log}):\n${tailOf(p.log)}`).join('\n');
}

/** GET /readyz with the admin identity; true on 200 "ok". */
function readyzOk(server: string, pki: Pki): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(`${server}/readyz`, {
      ca: readFileSync(pki.caCert), cert: readFileSync(pki.adminCert), key: readFileSync(pki.adminKey), timeout: 2000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; });
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'ok'));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

/**
 * Removes what a control plane left in `dir`: kills its recorded processes (SIGTERM, then
 * SIGKILL after a grace period; only PIDs whose start time still matches) and deletes the
 * directory if start created it, else just the entries start made. Works after a crash of the
 * process that started it; a directory with no record is left alone. Returns false then.
 */
export async function stopControlPlane(dir: string): Promise<boolean> {
  const rec = readControlPlaneRecord(dir);
  if (rec === undefined) return false;
  await terminate(rec.processes);
  removeState(dir, rec);
  return true;
}

/**
 * In reverse start order, one at a time: the API server first, because etcd's graceful stop
 * waits (about 5 s) for the API server's open watch streams to go, and then it goes at once.
 */
async function terminate(procs: readonly ControlPlaneProcess[]): Promise<void> {
  for (const p of [...procs].reverse()) await terminateOne(p);
}

async function terminateOne(p: ControlPlaneProcess): Promise<void> {
  const signal = (sig: NodeJS.Signals): void => {
    if (!isSameProcess(p.pid, p.startTime)) return;
    try {
      process.kill(p.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  const gone = async (ms: number): Promise<boolean> => {
    const deadline = Date.now() + ms;
    while (isSameProcess(p.pid, p.startTime)) {
      if (Date.now() > deadline) return false;
      await sleep(25);
    }
    return true;
  };
  signal('SIGTERM');
  if (await gone(STOP_GRACE_MS)) return;
  signal('SIGKILL');
  if (await gone(3000)) return;
  throw new WeftError(CniCode.Internal, `${p.role} (pid ${p.pid}) survived SIGKILL`);
}

function removeState(dir: string, rec: ControlPlaneRecord): void {
  for (const f of rec.files) rmSync(f, { force: true });
  if (rec.createdDir) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  // The record goes last: if removal fails half-way, the next stop still knows what is ours.
  for (const e of OWNED_ENTRIES.filter((n) => n !== RECORD)) rmSync(join(dir, e), { recursive: true, force: true });
  rmSync(recordPath(dir), { force: true });
}

/**
 * Takes the directory over: refuses one whose recorded control plane still runs, cleans up after
 * one that died. Returns whether the directory counts as ours to remove.
 */
function claimDir(dir: string): boolean {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return true;
  }
  const old = readControlPlaneRecord(dir);
  if (old === undefined) return false;
  const alive = old.processes.filter((p) => isSameProcess(p.pid, p.startTime));
  if (alive.length > 0) {
    throw new WeftError(CniCode.InvalidEnvironment,
      `a control plane is already running from ${dir} (${alive.map((p) => `${p.role} pid ${p.pid}`).join(', ')}); stop it first (weftctl kube down --dir ${dir})`);
  }
  removeState(dir, { ...old, createdDir: false });
  return old.createdDir;
}

function etcdArgs(bins: KubeBinaries, dataDir: string, address: string, clientPort: number, peerPort: number): string[] {
  const client = `http://${hostPort(address, clientPort)}`;
  const peer = `http://${hostPort(address, peerPort)}`;
  return [
    bins.etcd, '--name', 'weft', '--data-dir', dataDir,
    '--listen-client-urls', client, '--advertise-client-urls', client,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `weft=${peer}`,
    // One member on a throwaway data dir: a fast election and no fsync (nothing to lose).
    '--heartbeat-interval', '50', '--election-timeout', '400', '--unsafe-no-fsync',
    '--log-level', 'error',
  ];
}

function apiserverArgs(bins: KubeBinaries, pki: Pki, address: string, port: number, etcdUrl: string): string[] {
  return [
    bins.kubeApiserver,
    '--etcd-servers', etcdUrl,
    '--bind-address', address, '--secure-port', String(port),
    // Explicit, because the default is the default route's address and a lab namespace may have none.
    '--advertise-address', address,
    '--tls-cert-file', pki.serverCert, '--tls-private-key-file', pki.serverKey,
    '--client-ca-file', pki.caCert,
    '--authorization-mode', 'Node,RBAC',
    '--service-account-issuer', ISSUER,
    '--service-account-key-file', pki.saKey, '--service-account-signing-key-file', pki.saKey,
    '--service-cluster-ip-range', SERVICE_CIDR,
    // CNI DaemonSets run privileged; without this their manifests are refused.
    '--allow-privileged=true',
    // The lease reconciler publishes the advertise address as the `kubernetes` Service's
    // endpoint and refuses to start with a loopback one ("may not be in the loopback range");
    // no traffic goes to that Service here anyway.
    '--endpoint-reconciler-type', 'none',
    // (--enable-priority-and-fairness=false was measured: no faster start, so APF stays on as
    // in a real cluster.)
    '--cert-dir', pki.dir,
  ];
}

/** Starts etcd and kube-apiserver and waits until /readyz answers ok. */
export async function startControlPlane(o: ControlPlaneOptions): Promise<ControlPlane> {
  const t0 = performance.now();
  const bins = o.binaries ?? findKubeBinaries();
  const address = o.address ?? '127.0.0.1';
  const ns = o.netns;
  if (o.launcher !== undefined && ns === undefined) throw new WeftError(CniCode.InvalidEnvironment, 'a control plane launcher needs a netns to start the processes in');
  const createdDir = claimDir(o.dir);
  const dir = o.dir;
  const logs = join(dir, 'logs');
  mkdirSync(logs, { recursive: true, mode: 0o700 });
  const [apiPort, etcdPort] = await Promise.all([
    o.apiPort ?? (ns !== undefined ? 6443 : freePort(address)),
    o.etcdPort ?? (ns !== undefined ? 2379 : freePortPair(address)),
  ]);
  const server = `https://${hostPort(address, apiPort)}`;
  const etcdUrl = `http://${hostPort(address, etcdPort)}`;
  const rec: ControlPlaneRecord = {
    version: 1, createdDir, kubeVersion: bins.version, address, ...(ns !== undefined && { netns: ns }), server, etcdUrl, processes: [], files: [],
  };
  writeRecord(dir, rec);
  const launch = (role: ControlPlaneRole, argv: readonly string[]): ControlPlaneProcess => {
    const log = join(logs, `${role}.log`);
    const p = o.launcher !== undefined && ns !== undefined ? o.launcher(role, ns, argv, log, {}) : spawnDetached(ns, argv, log, role);
    const proc: ControlPlaneProcess = { role, pid: p.pid, startTime: p.startTime, log };
    rec.processes.push(proc);
    writeRecord(dir, rec);
    return proc;
  };

  try {
    const pki = await makePki(join(dir, 'pki'), address);
    // Both at once: the API server retries etcd until it answers, which is sooner than waiting
    // for etcd's health and then starting it.
    launch('etcd', etcdArgs(bins, join(dir, 'etcd'), address, etcdPort, etcdPort + 1));
    launch('kube-apiserver', apiserverArgs(bins, pki, address, apiPort, etcdUrl));
    const adminKubeconfig = join(dir, 'admin.kubeconfig');
    writeKubeconfig(adminKubeconfig, server, pki.caCert, { 'client-certificate-data': b64(pki.adminCert), 'client-key-data': b64(pki.adminKey) });
    const cp = controlPlaneHandle(dir, rec, bins, adminKubeconfig, pki.caCert, 0);
    await waitReady(cp, rec, pki, o.readyTimeoutMs ?? 60_000);
    return { ...cp, startupMs: Math.round(performance.now() - t0) };
  } catch (err) {
    await terminate(rec.processes).catch(() => undefined);
    removeState(dir, rec);
    throw err;
  }
}

async function waitReady(cp: ControlPlane, rec: ControlPlaneRecord, pki: Pki, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = rec.processes.find((p) => !isSameProcess(p.pid, p.startTime));
    if (dead !== undefined) throw new WeftError(CniCode.Internal, `${dead.role} exited while the control plane started\n${logsOf(rec.processes)}`);
    // Our process cannot reach into a namespace, so there kubectl asks from inside it.
    const ok = rec.netns === undefined
      ? await readyzOk(rec.server, pki)
      : (await cp.kubectl(['get', '--raw', '/readyz', '--request-timeout', '2s'], { allowFailure: true, timeoutMs: 5000 })).stdout.trim() === 'ok';
    if (ok) return;
    if (Date.now() > deadline) {
      throw new WeftError(CniCode.Timeout, `kube-apiserver at ${rec.server} not ready after ${timeoutMs} ms\n${logsOf(rec.processes)}`);
    }
    await sleep(100);
  }
}

/** The handle for a started control plane (also what stop() works from). */
function controlPlaneHandle(dir: string, rec: ControlPlaneRecord, bins: KubeBinaries, adminKubeconfig: string, caFile: string, startupMs: number): ControlPlane {
  const kubectl = async (args: readonly string[], opts: KubectlOptions = {}): Promise<KubectlResult> => {
    const argv = [bins.kubectl, '--kubeconfig', opts.kubeconfig ?? adminKubeconfig, ...args];
    const env: NodeJS.ProcessEnv = { ...process.env, KUBECACHEDIR: join(dir, 'kubectl-cache') };
    delete env.KUBECONFIG;
    const r = await run(rec.netns === undefined ? argv : ['ip', 'netns', 'exec', rec.netns, ...argv], {
      ...(opts.input !== undefined && { input: opts.input }), timeoutMs: opts.timeoutMs ?? 30_000, env,
    });
    if (r.code !== 0 && opts.allowFailure !== true) {
      throw new WeftError(CniCode.Internal, `kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
    }
    return r;
  };
  return {
    server: rec.server,
    adminKubeconfig,
    caFile,
    dir,
    processes: rec.processes,
    startupMs,
    kubectl,
    async serviceAccountKubeconfig(namespace, name, file) {
      const token = (await kubectl(['create', 'token', name, '--namespace', namespace, '--duration', '24h'])).stdout.trim();
      if (token === '') throw new WeftError(CniCode.Internal, `kubectl create token ${namespace}/${name} printed no token`);
      if (!rec.files.includes(file)) {
        rec.files.push(file);
        writeRecord(dir, rec);
      }
      writeKubeconfig(file, rec.server, caFile, { token });
      return file;
    },
    async stop() {
      await terminate(rec.processes);
      removeState(dir, rec);
    },
  };
}

// Test support for CNI plugins on the real kernel: run a plugin binary (or `weftctl cni`) with
// env + stdin inside a "host" namespace, the way a runtime on that host would, and read what it
// printed. The plugin's own network namespace is the host, so nothing here touches the root
// namespace. nsenter is used rather than `ip netns exec`: it only switches the network
// namespace (no private mount namespace + sysfs remount per process), which keeps 100
// concurrent plugin starts cheap.
import { after, before } from 'node:test';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ipJson, NetnsPool } from '../../src/netns/testing.js';
import { netnsPath } from '../../src/netns/index.js';

export const REPO = resolve(fileURLToPath(import.meta.url), '../../../..');
export const WEFT_CNI_DIR = join(REPO, 'bin/cni');
export const REF_CNI_DIR = '/usr/lib/cni';
export const CNI_PATH = `${WEFT_CNI_DIR}:${REF_CNI_DIR}`;
export const WEFT_BRIDGE = join(WEFT_CNI_DIR, 'weft-bridge');
export const WEFTCTL = join(REPO, 'bin/weftctl');
export const ALL_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type SpecVersion = (typeof ALL_VERSIONS)[number];

export interface ProcRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Environment for spawned Node processes: a plain PATH and no NODE_EXTRA_CA_CERTS (45 ms each). */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/** A namespace path as is; a bare name means /run/netns/NAME. */
/**
 * A test file's namespaces (prefix `prefix`) and scratch directory (`<tmp>/<dirName>-…`), made
 * before its tests and removed after them, even when one fails.
 */
export function cniSuite(prefix: string, dirName = prefix): { readonly pool: NetnsPool; dir(): string } {
  const pool = new NetnsPool(prefix);
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), `${dirName}-`)); });
  after(() => {
    pool.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  return { pool, dir: () => dir };
}

export function nsPathOf(ns: string): string {
  return ns.startsWith('/') ? ns : netnsPath(ns);
}

/** Runs argv inside a network namespace (path or name), feeding stdin; never rejects on exit codes. */
export function runInNs(ns: string, argv: readonly string[], env: Record<string, string | undefined>, stdin = '', timeoutMs = 30_000): Promise<ProcRun> {
  return spawnInNs(nsPathOf(ns), argv, { env: childEnv(env), stdin, timeoutMs });
}

/**
 * The one way test code runs a program in a namespace: nsenter (which execs, so the process is
 * the program itself), stdin fed, output collected, killed after timeoutMs.
 */
export function spawnInNs(nsPath: string, argv: readonly string[], o: { env: NodeJS.ProcessEnv; cwd?: string; stdin?: string; timeoutMs?: number }): Promise<ProcRun> {
  return new Promise((res, rej) => {
    const child = spawn('/usr/bin/nsenter', [`--net=${nsPath}`, '--', ...argv], { env: o.env, ...(o.cwd !== undefined && { cwd: o.cwd }), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 30_000);
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', (e) => { clearTimeout(timer); rej(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      res({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
    child.stdin.on('error', () => { /* the child may exit before reading stdin (e.g. env errors) */ });
    child.stdin.end(o.stdin ?? '');
  });
}

export interface CniCall {
  command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  /** Override or remove (undefined) individual CNI_* variables. */
  envOverride?: Record<string, string | undefined>;
}

export function cniEnv(call: CniCall): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {
    CNI_COMMAND: call.command,
    CNI_CONTAINERID: call.containerId,
    CNI_NETNS: call.netns,
    CNI_IFNAME: call.ifname ?? (call.containerId !== undefined ? 'eth0' : undefined),
    CNI_ARGS: call.args,
    CNI_PATH: CNI_PATH,
  };
  return { ...env, ...call.envOverride };
}

export interface PluginRun extends ProcRun {
  /** stdout parsed as JSON, when it was JSON. */
  json?: Record<string, unknown>;
}

function withJson(r: ProcRun): PluginRun {
  const text = r.stdout.trim();
  if (text === '') return r;
  try {
    return { ...r, json: JSON.parse(text) as Record<string, unknown> };
  } catch {
    return r;
  }
}

/** Runs a CNI plugin binary inside the host namespace. conf may be an object or raw stdin text. */
export async function runPlugin(hostNs: string, bin: string, call: CniCall, conf: unknown): Promise<PluginRun> {
  const stdin = typeof conf === 'string' ? conf : JSON.stringify(conf);
  return withJson(await runInNs(hostNs, [bin], cniEnv(call), stdin));
}

export function runBridge(hostNs: string, call: CniCall, conf: unknown): Promise<PluginRun> {
  return runPlugin(hostNs, WEFT_BRIDGE, call, conf);
}

/** `weftctl cni ARGS…` inside the host namespace. */
export async function runWeftctlCni(hostNs: string, args: readonly string[]): Promise<PluginRun> {
  return withJson(await runInNs(hostNs, [WEFTCTL, 'cni', ...args], {}, ''));
}

/** The spec's error object, asserted by the caller. */
export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function asCniError(r: PluginRun): CniErrorJson | undefined {
  const j = r.json;
  if (!j || typeof j.code !== 'number' || typeof j.msg !== 'string' || typeof j.cniVersion !== 'string') return undefined;
  return j as unknown as CniErrorJson;
}

// ---- the kernel's and the disk's view ----

export interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  master?: string;
  flags: string[];
  promiscuity?: number;
  link_netnsid?: number;
  linkinfo?: {
    info_kind?: string;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
    info_data?: Record<string, unknown>;
  };
}

export interface IpAddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  scope?: string;
}

export function links(ns: string, detailed = false): IpLink[] {
  return ipJson<IpLink[]>(ns, [...(detailed ? ['-d'] : []), 'link', 'show']);
}

export function link(ns: string, name: string, detailed = true): IpLink | undefined {
  return links(ns, detailed).find((l) => l.ifname === name);
}

export function addrs(ns: string, name: string): IpAddrInfo[] {
  const out = ipJson<Array<{ addr_info: IpAddrInfo[] }>>(ns, ['addr', 'show', 'dev', name]);
  return out[0]?.addr_info ?? [];
}

/** Host-side veths (every veth in the host namespace). */
export function hostVeths(hostNs: string): IpLink[] {
  return links(hostNs, true).filter((l) => l.linkinfo?.info_kind === 'veth');
}

/** Bridge ports of `bridge` in the host namespace. */
export function bridgePorts(hostNs: string, bridge: string): IpLink[] {
  return links(hostNs).filter((l) => l.master === bridge);
}

/** The allocation files for a network in a weft-ipam dataDir (IPs only, no bookkeeping). */
export function allocations(dataDir: string, network: string): string[] {
  const dir = join(dataDir, network);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/i.test(f) && (f.includes('.') || f.includes(':')) && !f.startsWith('last_reserved'));
}

export interface NftRuleView {
  family: string;
  chain: string;
  comment?: string;
  expr: unknown[];
}

/** The rules of table `weft-cni` (both families) in the host namespace, from `nft -j`. */
export async function cniRules(hostNs: string): Promise<NftRuleView[]> {
  const r = await runInNs(hostNs, ['nft', '-j', 'list', 'ruleset'], {});
  if (r.code !== 0) throw new Error(`nft list ruleset failed: ${r.stderr}`);
  const items = (JSON.parse(r.stdout) as { nftables: Array<Record<string, unknown>> }).nftables;
  const out: NftRuleView[] = [];
  for (const it of items) {
    const rule = it.rule as (Record<string, unknown> & { table: string; family: string; chain: string; expr: unknown[]; comment?: string }) | undefined;
    if (rule?.table === 'weft-cni') out.push({ family: rule.family, chain: rule.chain, expr: rule.expr, ...(rule.comment !== undefined && { comment: rule.comment }) });
  }
  return out;
}

/** `ping -c1` from a namespace (path or name); true when a reply came back. */
export async function ping(fromNs: string, target: string, timeoutS = 2): Promise<boolean> {
  const argv = ['ping', '-c', '1', '-W', String(timeoutS), ...(target.includes(':') ? ['-6'] : []), target];
  const r = await runInNs(fromNs, argv, {});
  return r.code === 0;
}

export interface Server {
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * Starts a long-running process in a namespace (nsenter execs it, so the PID is the process
 * itself) and waits until it prints `ready` on stdout. stop() kills exactly that PID.
 */
export function startInNs(ns: string, argv: readonly string[], ready: string, timeoutMs = 10_000): Promise<Server> {
  return new Promise((res, rej) => {
    const child = spawn('nsenter', [`--net=${nsPathOf(ns)}`, '--', ...argv], { env: childEnv({}), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const closed = new Promise<void>((r) => child.on('close', () => r()));
    const stop = async (): Promise<void> => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await closed;
    };
    const timer = setTimeout(() => { void stop(); rej(new Error(`${argv.join(' ')} not ready after ${timeoutMs} ms: ${err}`)); }, timeoutMs);
    child.stderr.on('data', (c: Buffer) => { err += c.toString(); });
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes(ready)) {
        clearTimeout(timer);
        res({ pid: child.pid ?? -1, stop });
      }
    });
    child.on('error', (e) => { clearTimeout(timer); rej(e); });
    child.on('close', (code) => { clearTimeout(timer); rej(new Error(`${argv.join(' ')} exited (${code}) before ready: ${err}`)); });
  });
}

/** A TCP server that answers each connection with the peer's address, then closes it. */
export function peerEchoServer(nsPath: string, host: string, port: number): Promise<Server> {
  const js = `require('net').createServer((s)=>s.end(s.remoteAddress)).listen(${port}, ${JSON.stringify(host)}, ()=>console.log('ready'))`;
  return startInNs(nsPath, ['node', '-e', js], 'ready');
}

/** Connects from a namespace and returns what the server sent (or undefined on failure). */
export async function tcpFetch(fromNs: string, host: string, port: number, timeoutMs = 3000): Promise<string | undefined> {
  const js = `const s=require('net').connect(${port}, ${JSON.stringify(host)});let d='';s.setTimeout(${timeoutMs},()=>process.exit(2));s.on('data',(c)=>d+=c);s.on('end',()=>{process.stdout.write(d);process.exit(0)});s.on('error',()=>process.exit(1))`;
  const r = await runInNs(fromNs, ['node', '-e', js], {});
  return r.code === 0 ? r.stdout : undefined;
}

export interface BridgeConfOptions {
  version?: SpecVersion;
  name?: string;
  bridge?: string;
  dataDir: string;
  ranges: Array<Array<Record<string, unknown>>>;
  routes?: Array<Record<string, unknown>>;
  extra?: Record<string, unknown>;
}

export function bridgeConf(o: BridgeConfOptions): Record<string, unknown> {
  return {
    cniVersion: o.version ?? '1.1.0',
    name: o.name ?? 'wbtnet',
    type: 'weft-bridge',
    bridge: o.bridge ?? 'wbr0',
    ...o.extra,
    ipam: { type: 'weft-ipam', dataDir: o.dataDir, ranges: o.ranges, ...(o.routes && { routes: o.routes }) },
  };
}

// Test support for weftd suites: start weftd inside a host namespace (ip netns exec), read its
// subnet.env and /readyz, run probes inside namespaces. Every process started here is tracked
// and killed by PID in stopAll().
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type Cidr, networkOf, parseCidr } from '../../src/net/ip.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const WEFTD = join(ROOT, 'bin/weftd');
export const WEFTCTL = join(ROOT, 'bin/weftctl');

export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

export interface Weftd {
  readonly ns: string;
  readonly subnetFile: string;
  readonly proc: ChildProcess;
  readonly stderr: string[];
  exited: Promise<number | null>;
  healthPort: number;
}

const started = new Set<ChildProcess>();

export function startWeftd(ns: string, args: readonly string[], subnetFile: string, healthPort = 9417): Weftd {
  const proc = spawn('ip', ['netns', 'exec', ns, WEFTD, '--subnet-file', subnetFile, '--health-addr', `127.0.0.1:${healthPort}`, '--repair-interval', '1', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'], env: cleanEnv(),
  });
  started.add(proc);
  const stderr: string[] = [];
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (c: string) => { stderr.push(c); if (stderr.length > 400) stderr.shift(); });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => { started.delete(proc); resolve(code); }));
  return { ns, subnetFile, proc, stderr, exited, healthPort };
}

/** Runs weftd to completion (for start-up failures): exit code and stderr. */
export function runWeftd(ns: string, args: readonly string[], timeoutMs = 20_000): { code: number | null; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, WEFTD, ...args], { encoding: 'utf8', env: cleanEnv(), timeout: timeoutMs });
  return { code: r.status, stderr: r.stderr };
}

export async function stopWeftd(w: Weftd, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (w.proc.exitCode !== null || w.proc.signalCode !== null) return w.proc.exitCode;
  if (w.proc.pid !== undefined) process.kill(w.proc.pid, signal);
  return w.exited;
}

/** SIGKILLs every child the test started that still runs (by PID; one already gone is fine). */
export function killChildren(children: Iterable<ChildProcess | undefined>): void {
  for (const c of children) {
    if (c?.pid === undefined || c.exitCode !== null || c.signalCode !== null) continue;
    try { process.kill(c.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

export async function stopAll(): Promise<void> {
  for (const p of [...started]) {
    if (p.pid !== undefined && p.exitCode === null) {
      try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  started.clear();
}

export function inNs(ns: string, argv: readonly string[], timeoutMs = 15_000): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', env: cleanEnv(), timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export interface Readyz { ready: boolean; lease?: { subnet?: string; status?: string }; problems?: string[]; store?: { status: string } ; [k: string]: unknown }

export function readyz(w: Weftd): { status: number; body: Readyz | undefined } {
  const r = inNs(w.ns, ['curl', '-s', '-o', '-', '-w', '\n%{http_code}', `http://127.0.0.1:${w.healthPort}/readyz`], 5000);
  const lines = r.stdout.trim().split('\n');
  const status = Number(lines.pop());
  try {
    return { status, body: JSON.parse(lines.join('\n')) as Readyz };
  } catch {
    return { status, body: undefined };
  }
}

export function metricsText(w: Weftd): string {
  return inNs(w.ns, ['curl', '-s', `http://127.0.0.1:${w.healthPort}/metrics`], 5000).stdout;
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, stepMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(stepMs);
  }
}

export async function waitReady(w: Weftd, timeoutMs = 20_000): Promise<Readyz> {
  return waitFor(`weftd in ${w.ns} to be ready (log: ${w.stderr.join('').slice(-1500)})`, () => {
    if (w.proc.exitCode !== null) throw new Error(`weftd exited ${w.proc.exitCode}: ${w.stderr.join('').slice(-1500)}`);
    const r = readyz(w);
    return r.status === 200 && r.body?.ready ? r.body : undefined;
  }, timeoutMs, 150);
}

export function subnetEnv(path: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) m.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return m;
}

/** The subnet (network form) and MTU weftd wrote. */
export function leasedSubnet(path: string): { subnet: Cidr; mtu: number } {
  const env = subnetEnv(path);
  return { subnet: networkOf(parseCidr(env.get('FLANNEL_SUBNET') ?? '')), mtu: Number(env.get('FLANNEL_MTU')) };
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Writes the network config through weftctl (same store flags as weftd), run inside `ns`. */
export function setConfig(ns: string, storeArgs: readonly string[], config: unknown): void {
  const r = spawnSync('ip', ['netns', 'exec', ns, WEFTCTL, 'config', 'set', '-', ...storeArgs], { input: JSON.stringify(config), encoding: 'utf8', env: cleanEnv() });
  if (r.status !== 0) throw new Error(`weftctl config set failed: ${r.stderr}`);
}

/**
 * A probe server inside a namespace: TCP echo and UDP echo on `port`. Started via node; killed
 * by PID with stopAll().
 */
export function startEchoServer(ns: string, port: number): ChildProcess {
  const code = `const net=require('net'),dgram=require('dgram');
net.createServer(s=>s.pipe(s)).listen(${port},'0.0.0.0');
const u=dgram.createSocket('udp4');u.on('message',(m,r)=>u.send(m,r.port,r.address));u.bind(${port},'0.0.0.0',()=>process.stdout.write('up\\n'));`;
  const p = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'], env: cleanEnv() });
  started.add(p);
  p.on('exit', () => started.delete(p));
  return p;
}

export async function waitUp(p: ChildProcess): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    p.stdout?.once('data', () => resolve());
    p.once('exit', (c) => reject(new Error(`echo server exited ${c}`)));
  });
}

/**
 * From `ns`, one TCP and one UDP round trip to each target; returns the targets that failed
 * (`tcp 10.244.1.2`, `udp …`).
 */
export function echoProbe(ns: string, targets: readonly string[], port: number): string[] {
  const code = `const net=require('net'),dgram=require('dgram');const t=${JSON.stringify(targets)};const bad=[];
const tcp=h=>new Promise(r=>{const s=net.connect(${port},h);const to=setTimeout(()=>{s.destroy();r(false)},2000);s.on('data',d=>{clearTimeout(to);s.destroy();r(d.toString()==='ping')});s.on('error',()=>{clearTimeout(to);r(false)});s.write('ping')});
const udp=h=>new Promise(r=>{const u=dgram.createSocket('udp4');let tries=0;const send=()=>{u.send('ping',${port},h);if(++tries<4)to=setTimeout(send,400);else to=setTimeout(()=>{u.close();r(false)},600)};let to;u.on('message',m=>{clearTimeout(to);u.close();r(m.toString()==='ping')});send()});
Promise.all(t.map(async h=>{if(!await tcp(h))bad.push('tcp '+h);if(!await udp(h))bad.push('udp '+h)})).then(()=>{process.stdout.write(JSON.stringify(bad))});`;
  const r = inNs(ns, [process.execPath, '-e', code], 20_000);
  if (r.code !== 0) throw new Error(`probe from ${ns} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

/** ICMP from ns to each target in parallel (one process): the targets that did not answer. */
export function pingAll(ns: string, targets: readonly string[]): string[] {
  const script = targets.map((t) => `(ping -c1 -W2 -q ${t} >/dev/null 2>&1 || echo ${t}) &`).join('\n') + '\nwait\n';
  const r = inNs(ns, ['sh', '-c', script], 20_000);
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

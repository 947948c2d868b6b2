// Test support for installed weft: install into a temporary root with the checkout's weftctl,
// then act like a container runtime against what was installed — exec each plugin of a conflist
// from the installed CNI bin dir (libcni's rules: ADD in order with prevResult, CHECK and DEL
// with the cached result, DEL in reverse, runtimeConfig only for declared capabilities), from a
// current directory outside the checkout, with a minimal PATH and nothing else in the
// environment but the CNI_* variables.
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { parseEnvFile } from '../../src/install/files.js';
import { spawnInNs } from './cni-harness.js';
import { mkdirSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
/** What a runtime started by systemd typically has; no node, no checkout. */
export const MINIMAL_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

export interface Installed {
  readonly root: string;
  readonly cniBinDir: string;
  readonly conflist: string;
  readonly libDir: string;
  readonly weftd: string;
  readonly weftctl: string;
  readonly envFile: string;
  readonly manifest: string;
  readonly subnetFile: string;
  readonly stdout: string;
}

/** `bin/weftctl install --root ROOT ARGS…` from the checkout; throws with its output on failure. */
export function installInto(root: string, args: readonly string[] = []): Installed {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(join(REPO, 'bin/weftctl'), ['install', '--root', root, ...args], { encoding: 'utf8', env, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`weftctl install failed (${r.status}): ${r.stdout}${r.stderr}`);
  return {
    root,
    cniBinDir: join(root, 'opt/cni/bin'),
    conflist: join(root, 'etc/cni/net.d/10-weft.conflist'),
    libDir: join(root, 'opt/weft'),
    weftd: join(root, 'opt/weft/bin/weftd'),
    weftctl: join(root, 'opt/weft/bin/weftctl'),
    envFile: join(root, 'etc/weft/weftd.env'),
    manifest: join(root, 'var/lib/weft/install-manifest.json'),
    subnetFile: join(root, 'run/weft/subnet.env'),
    stdout: r.stdout,
  };
}

/** The [Service] keys systemd would act on, read from the installed unit. */
export function unitService(path: string): { env: Record<string, string>; pre: string[][]; start: string[] } {
  const text = readFileSync(path, 'utf8');
  const service = text.split(/^\[Service\]$/m)[1]?.split(/^\[/m)[0] ?? '';
  const values = (key: string) => [...service.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());
  const env: Record<string, string> = {};
  for (const f of values('EnvironmentFile')) for (const [k, v] of parseEnvFile(readFileSync(f, 'utf8'))) env[k] = v;
  const start = values('ExecStart')[0];
  assert.ok(start, 'the unit has an ExecStart');
  return { env, pre: values('ExecStartPre').map((l) => l.split(/\s+/)), start: start.split(/\s+/) };
}

/** SIGTERM to a process this test started (SIGKILL after 10 s), resolved once it has exited. */
export async function stopProcess(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null || p.pid === undefined) return;
  const exited = new Promise<void>((r) => p.on('exit', () => r()));
  process.kill(p.pid, 'SIGTERM');
  const t = setTimeout(() => { if (p.pid !== undefined && p.exitCode === null) process.kill(p.pid, 'SIGKILL'); }, 10_000);
  await exited;
  clearTimeout(t);
}

export function uninstallFrom(root: string): string {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(join(REPO, 'bin/weftctl'), ['uninstall', '--root', root], { encoding: 'utf8', env, timeout: 30_000 });
  if (r.status !== 0) throw new Error(`weftctl uninstall failed (${r.status}): ${r.stdout}${r.stderr}`);
  return r.stdout;
}

export interface Exec {
  code: number;
  stdout: string;
  stderr: string;
  json?: Record<string, unknown>;
}

/**
 * Runs `argv` inside the namespace at `nsPath` (nsenter by absolute path; it execs, so the
 * process is the program itself) with exactly `env` and the given current directory.
 */
export async function execIn(nsPath: string, argv: readonly string[], env: Record<string, string>, cwd: string, stdin = '', timeoutMs = 30_000): Promise<Exec> {
  const out: Exec = await spawnInNs(nsPath, argv, { env: { PATH: MINIMAL_PATH, ...env }, cwd, stdin, timeoutMs });
  try {
    if (out.stdout.trim() !== '') out.json = JSON.parse(out.stdout) as Record<string, unknown>;
  } catch { /* not JSON */ }
  return out;
}

export interface Attachment {
  readonly containerId: string;
  /** A netns path as the runtime passes it; '' on a DEL after the namespace is gone, if wanted. */
  readonly netns: string;
  readonly ifname: string;
  readonly args?: string;
  /** Capability arguments; each plugin gets the ones it declares. */
  readonly runtimeConfig?: Readonly<Record<string, unknown>>;
}

interface ConfList {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown> & { type: string; capabilities?: Record<string, boolean> }>;
}

export interface ChainOutcome {
  /** The failing plugin's output, or the last plugin's on success. */
  readonly last: Exec;
  readonly ok: boolean;
  readonly failedPlugin?: string;
  readonly result?: Record<string, unknown>;
}

/**
 * A runtime in miniature: one network (conflist) against containers, plugins exec'd from
 * `cniPath`, results cached per (network, container, ifname) in `cacheDir` like libcni's
 * /var/lib/cni/results, and fed to CHECK and DEL.
 */
export class MiniRuntime {
  readonly list: ConfList;

  constructor(
    readonly hostNsPath: string,
    conflistPath: string,
    readonly cniPath: string,
    readonly cacheDir: string,
    readonly cwd: string,
  ) {
    this.list = JSON.parse(readFileSync(conflistPath, 'utf8')) as ConfList;
  }

  private cacheFile(a: Attachment): string {
    return join(this.cacheDir, `${this.list.name}-${a.containerId}-${a.ifname}`);
  }

  cachedResult(a: Attachment): Record<string, unknown> | undefined {
    const f = this.cacheFile(a);
    return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>) : undefined;
  }

  dropCache(a: Attachment): void {
    rmSync(this.cacheFile(a), { force: true });
  }

  private pluginConf(p: ConfList['plugins'][number], a: Attachment, prevResult: Record<string, unknown> | undefined): string {
    const { capabilities, ...rest } = p;
    const conf: Record<string, unknown> = { ...rest, cniVersion: this.list.cniVersion, name: this.list.name };
    const rc: Record<string, unknown> = {};
    for (const [cap, on] of Object.entries(capabilities ?? {})) {
      if (on && a.runtimeConfig && cap in a.runtimeConfig) rc[cap] = a.runtimeConfig[cap];
    }
    if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
    if (prevResult) conf.prevResult = prevResult;
    return JSON.stringify(conf);
  }

  private env(command: string, a: Attachment): Record<string, string> {
    return {
      CNI_COMMAND: command,
      CNI_CONTAINERID: a.containerId,
      CNI_NETNS: a.netns,
      CNI_IFNAME: a.ifname,
      CNI_ARGS: a.args ?? '',
      CNI_PATH: this.cniPath,
    };
  }

  private binary(type: string): string {
    for (const dir of this.cniPath.split(':')) {
      const p = join(dir, type);
      if (existsSync(p)) return p;
    }
    throw new Error(`plugin ${type} not in CNI_PATH ${this.cniPath}`);
  }

  private run(command: string, p: ConfList['plugins'][number], a: Attachment, prev: Record<string, unknown> | undefined): Promise<Exec> {
    return execIn(this.hostNsPath, [this.binary(p.type)], this.env(command, a), this.cwd, this.pluginConf(p, a, prev));
  }

  async add(a: Attachment): Promise<ChainOutcome> {
    let prev: Record<string, unknown> | undefined;
    let last: Exec | undefined;
    for (const p of this.list.plugins) {
      last = await this.run('ADD', p, a, prev);
      if (last.code !== 0) return { last, ok: false, failedPlugin: p.type };
      prev = last.json;
    }
    mkdirSync(this.cacheDir, { recursive: true });
    writeFileSync(this.cacheFile(a), JSON.stringify(prev));
    return { last: last!, ok: true, ...(prev && { result: prev }) };
  }

  async check(a: Attachment): Promise<ChainOutcome> {
    const prev = this.cachedResult(a);
    if (!prev) throw new Error('CHECK needs a cached result');
    let last: Exec | undefined;
    for (const p of this.list.plugins) {
      last = await this.run('CHECK', p, a, prev);
      if (last.code !== 0) return { last, ok: false, failedPlugin: p.type };
    }
    return { last: last!, ok: true };
  }

  /** DEL in reverse with the cached result when there is one (libcni does the same). */
  async del(a: Attachment): Promise<ChainOutcome> {
    const prev = this.cachedResult(a);
    let last: Exec | undefined;
    for (const p of [...this.list.plugins].reverse()) {
      last = await this.run('DEL', p, a, prev);
      if (last.code !== 0) return { last, ok: false, failedPlugin: p.type };
    }
    this.dropCache(a);
    return { last: last!, ok: true };
  }
}

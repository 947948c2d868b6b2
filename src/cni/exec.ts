// Invoking another plugin: either exec a binary found in CNI_PATH (env + stdin → stdout), or call
// a plugin module in this process (same skeleton, no second Node start). Both give typed results;
// a delegate's CNI error is rethrown as a WeftError with the delegate's own code.
import { spawn } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import type { Logger } from '../log.js';
import { cniEnvToProcessEnv, type CniEnv } from './env.js';
import { parseResult, type CniResult } from './result.js';
import { invokePlugin, type CniPlugin, type PluginHost } from './skel.js';
import type { CniCommand, CniVersion } from './version.js';

export type DelegateTarget =
  /** A binary named `type`, looked up in env.path. */
  | { kind: 'exec'; type: string }
  /** A plugin run in this process, on the caller's host (a delegate sees what its caller sees). */
  | { kind: 'in-process'; plugin: CniPlugin<any>; host: PluginHost };

export interface DelegateRequest {
  target: DelegateTarget;
  command: CniCommand;
  /** The environment the delegate sees; command is taken from `command`. */
  env: CniEnv;
  /** The delegate's network config (it carries its cniVersion, and prevResult when chaining). */
  conf: Record<string, unknown>;
  /** Exec only: kill the delegate after this long (default 60 s). */
  timeoutMs?: number;
  log?: Logger;
}

export type DelegateOutcome =
  | { kind: 'result'; version: CniVersion; result: CniResult }
  | { kind: 'versions'; version: string; supportedVersions: string[] }
  | { kind: 'done' };

export async function findPluginBinary(type: string, path: readonly string[]): Promise<string> {
  if (type === '' || type.includes('/') || type === '.' || type === '..') {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid plugin type ${JSON.stringify(type)}`);
  }
  for (const dir of path) {
    const candidate = join(dir, type);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new WeftError(CniCode.InvalidNetworkConfig, `failed to find plugin ${JSON.stringify(type)} in path [${path.join(' ')}]`);
}

const errorSchema = z.object({ code: z.number().int(), msg: z.string(), details: z.string().optional() });
const versionsSchema = z.object({ cniVersion: z.string(), supportedVersions: z.array(z.string()) });

/** Interprets what a delegate printed. Exported so callers with their own exec can reuse it. */
export function parseDelegateOutput(name: string, command: CniCommand, exitCode: number, stdout: string, stderr = ''): DelegateOutcome {
  const text = stdout.trim();
  if (exitCode !== 0) {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const e = errorSchema.safeParse(json);
    if (e.success) throw new WeftError(e.data.code, e.data.msg, e.data.details ?? '');
    const tail = (stderr.trim() || text).split('\n').slice(-3).join(' | ');
    throw new WeftError(CniCode.Internal, `plugin ${name} ${command} failed with exit code ${exitCode}${tail ? `: ${tail}` : ''}`);
  }
  if (command === 'VERSION') {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new WeftError(CniCode.DecodeFailure, `plugin ${name} VERSION printed invalid JSON: ${(err as Error).message}`);
    }
    const v = versionsSchema.safeParse(json);
    if (!v.success) throw new WeftError(CniCode.DecodeFailure, `plugin ${name} VERSION printed no supportedVersions`);
    return { kind: 'versions', version: v.data.cniVersion, supportedVersions: v.data.supportedVersions };
  }
  if (command !== 'ADD') return { kind: 'done' };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new WeftError(CniCode.DecodeFailure, `plugin ${name} ADD printed invalid JSON: ${(err as Error).message}`);
  }
  const { version, result } = parseResult(json, undefined, `result of plugin ${name}`);
  return { kind: 'result', version, result };
}

/** SIGKILL to the process group led by pid (a detached child leads its own). */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // the group is already gone
  }
}

function runBinary(binary: string, env: NodeJS.ProcessEnv, stdin: string, timeoutMs: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // Its own process group: a plugin that is a shell shim (bin/cni/*) runs node below it, and on
    // timeout the whole group must go, not just the shim (its children would hold our pipes open).
    const child = spawn(binary, [], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new WeftError(CniCode.IoFailure, `cannot run plugin ${binary}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new WeftError(CniCode.Timeout, `plugin ${binary} did not finish within ${timeoutMs} ms`));
        return;
      }
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    // A plugin that exits without reading stdin closes the pipe; that is its business, not an error.
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

/** Runs one command on a delegate and returns its typed outcome, or throws its CNI error. */
export async function invokeDelegate(req: DelegateRequest): Promise<DelegateOutcome> {
  const env = { ...req.env, command: req.command };
  const stdin = JSON.stringify(req.conf);
  if (req.target.kind === 'in-process') {
    const procEnv: NodeJS.ProcessEnv = { ...cniEnvToProcessEnv(env) };
    const o = await invokePlugin(req.target.plugin, procEnv, stdin, { host: req.target.host, ...(req.log && { log: req.log }) });
    switch (o.kind) {
      case 'error':
        throw o.error;
      case 'versions':
        return { kind: 'versions', version: o.version, supportedVersions: [...o.supportedVersions] };
      case 'result':
        return o;
      case 'done':
        return o;
    }
  }
  const binary = await findPluginBinary(req.target.type, env.path);
  const procEnv: NodeJS.ProcessEnv = { ...process.env, ...cniEnvToProcessEnv(env) };
  delete procEnv.NODE_EXTRA_CA_CERTS;
  const r = await runBinary(binary, procEnv, stdin, req.timeoutMs ?? 60_000);
  return parseDelegateOutput(req.target.type, req.command, r.code, r.stdout, r.stderr);
}

/** ADD on a delegate, returning its result (an ADD that prints nothing is a broken plugin). */
export async function delegateAdd(req: Omit<DelegateRequest, 'command'>): Promise<{ version: CniVersion; result: CniResult }> {
  const o = await invokeDelegate({ ...req, command: 'ADD' });
  if (o.kind !== 'result') throw new WeftError(CniCode.Internal, `delegate ${describeTarget(req.target)} ADD returned no result`);
  return { version: o.version, result: o.result };
}

/** DEL/CHECK/STATUS/GC on a delegate; resolves when it succeeded. */
export async function delegateCommand(req: DelegateRequest): Promise<void> {
  await invokeDelegate(req);
}

export function describeTarget(t: DelegateTarget): string {
  return t.kind === 'exec' ? t.type : `${t.plugin.name} (in-process)`;
}

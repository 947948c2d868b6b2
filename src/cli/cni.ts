// `weftctl cni`: a cnitool for people. Runs a network config list against a container the way a
// runtime does (ADD in order passing prevResult, DEL in reverse, result cached per attachment and
// fed to CHECK/DEL, GC with the cached attachments as the valid set).
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { CniCode, WeftError } from '../errors.js';
import { decodeJsonObject } from '../cni/conf.js';
import { parseCniArgs, validateContainerId, validateIfname, type CniEnv } from '../cni/env.js';
import { invokeDelegate } from '../cni/exec.js';
import { parseResult, resultToJson, type CniResult } from '../cni/result.js';
import { SUPPORTED_VERSIONS, requireCommandAllowed, requireSupportedVersion, type CniCommand, type CniVersion } from '../cni/version.js';
import { describeLaggards, highestVersion, negotiateVersion, type PluginVersions } from '../cni/negotiate.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src/cli → the project's bin/cni, then the distribution's reference plugins. */
export const DEFAULT_CNI_PATH = [resolve(here, '../../../bin/cni'), '/usr/lib/cni'];
export const DEFAULT_CACHE_DIR = '/var/lib/weft/cni-cache';

const HELP = `weftctl cni — run CNI plugins by hand, like a container runtime would

Usage:
  weftctl cni add|check|del --conf FILE [--netns PATH] [options]
  weftctl cni status|gc|version --conf FILE [options]

--conf FILE          a .conf (one plugin) or .conflist (a "plugins" list); required
--netns PATH         network namespace path (required for add and check)
--ifname NAME        interface name in the container (default eth0)
--container-id ID    container ID (default derived from the netns path)
--args K=V;K=V       CNI_ARGS passed to every plugin
--cni-path DIRS      ':'-separated plugin directories (default ${DEFAULT_CNI_PATH.join(':')})
--runtime-config JSON capability arguments, e.g. '{"portMappings":[…],"ips":["10.1.0.9/24"]}';
                     each plugin gets the ones its "capabilities" declare, as runtimeConfig
--cache-dir DIR      where results are cached per network/container/ifname (default ${DEFAULT_CACHE_DIR})

add    runs the plugins in order, each getting the previous result as prevResult; prints and
       caches the final result. If a plugin fails, DEL is run over the list to undo.
check  runs CHECK on every plugin with the cached result (cniVersion 0.4.0+).
del    runs DEL in reverse order with the cached result, then drops the cache entry.
status runs STATUS on every plugin (cniVersion 1.1.0).
gc     runs GC with cni.dev/valid-attachments = the attachments cached for this network.
version prints each plugin's VERSION answer, and names any plugin that lacks the list's
       cniVersion with the highest version all of them support (add and the others print
       the same hint when a plugin refuses the version).
`;

const pluginSchema = z.object({ type: z.string() }).passthrough();
const listSchema = z
  .object({
    cniVersion: z.string(),
    name: z.string(),
    plugins: z.array(pluginSchema).min(1),
    disableCheck: z.boolean().optional(),
    disableGC: z.boolean().optional(),
  })
  .passthrough();

export interface NetworkList {
  cniVersion: CniVersion;
  name: string;
  plugins: Array<Record<string, unknown> & { type: string }>;
  disableCheck: boolean;
  disableGC: boolean;
}

/** A .conflist as is; a single-plugin .conf wrapped into a one-element list. */
export function parseNetworkList(text: string, source = 'config'): NetworkList {
  const raw = decodeJsonObject(text, source);
  const obj = 'plugins' in raw ? raw : { cniVersion: raw.cniVersion, name: raw.name, plugins: [raw] };
  const p = listSchema.safeParse(obj);
  if (!p.success) {
    const issue = p.error.issues[0];
    throw new WeftError(CniCode.InvalidNetworkConfig, `${source}: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`);
  }
  return {
    cniVersion: requireSupportedVersion(p.data.cniVersion),
    name: p.data.name,
    plugins: p.data.plugins,
    disableCheck: p.data.disableCheck ?? false,
    disableGC: p.data.disableGC ?? false,
  };
}

/**
 * libcni's per-plugin config: the list's name and version injected, prevResult when given, and
 * `runtimeConfig` holding only the capability arguments the plugin declares in `capabilities`.
 */
export function pluginConf(
  list: NetworkList,
  plugin: Record<string, unknown>,
  prev?: CniResult,
  extra: Record<string, unknown> = {},
  capabilityArgs: Record<string, unknown> = {},
): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion, ...extra };
  if (prev) conf.prevResult = resultToJson(prev, list.cniVersion);
  const caps = plugin.capabilities;
  if (typeof caps === 'object' && caps !== null) {
    const rc: Record<string, unknown> = {};
    for (const [cap, on] of Object.entries(caps)) if (on === true && cap in capabilityArgs) rc[cap] = capabilityArgs[cap];
    if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
  }
  return conf;
}

// ---- result cache (same layout idea as libcni: results/<network>-<container>-<ifname>) ----

const cacheSchema = z.object({
  kind: z.literal('cniCacheV1'),
  containerId: z.string(),
  ifName: z.string(),
  networkName: z.string(),
  cniArgs: z.array(z.tuple([z.string(), z.string()])).optional(),
  result: z.record(z.unknown()),
});

export class ResultCache {
  constructor(readonly dir: string) {}

  private file(network: string, containerId: string, ifname: string): string {
    return join(this.dir, 'results', `${network}-${containerId}-${ifname}`);
  }

  save(list: NetworkList, env: CniEnv, result: CniResult): void {
    const path = this.file(list.name, env.containerId, env.ifname);
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    const entry = {
      kind: 'cniCacheV1',
      containerId: env.containerId,
      ifName: env.ifname,
      networkName: list.name,
      cniArgs: env.args,
      result: resultToJson(result, list.cniVersion),
    };
    writeFileSync(`${path}.tmp`, JSON.stringify(entry));
    renameSync(`${path}.tmp`, path);
  }

  load(network: string, containerId: string, ifname: string): CniResult | undefined {
    let text: string;
    try {
      text = readFileSync(this.file(network, containerId, ifname), 'utf8');
    } catch {
      return undefined;
    }
    const p = cacheSchema.safeParse(JSON.parse(text));
    if (!p.success) throw new WeftError(CniCode.DecodeFailure, `corrupt cache entry ${this.file(network, containerId, ifname)}`);
    return parseResult(p.data.result, undefined, 'cached result').result;
  }

  drop(network: string, containerId: string, ifname: string): void {
    rmSync(this.file(network, containerId, ifname), { force: true });
  }

  /** Attachments of a network known to the cache (the runtime's view of live containers). */
  attachments(network: string): Array<{ containerID: string; ifname: string }> {
    let names: string[];
    try {
      names = readdirSync(join(this.dir, 'results'));
    } catch {
      return [];
    }
    const out: Array<{ containerID: string; ifname: string }> = [];
    for (const n of names) {
      if (!n.startsWith(`${network}-`) || n.endsWith('.tmp')) continue;
      try {
        const p = cacheSchema.safeParse(JSON.parse(readFileSync(join(this.dir, 'results', n), 'utf8')));
        if (p.success && p.data.networkName === network) out.push({ containerID: p.data.containerId, ifname: p.data.ifName });
      } catch {
        // unreadable entry: not a known attachment
      }
    }
    return out;
  }
}

// ---- running the list ----

export interface ListRun {
  list: NetworkList;
  env: CniEnv;
  cache: ResultCache;
  /** Capability arguments (portMappings, ips, bandwidth…), given to plugins that declare them. */
  capabilityArgs?: Record<string, unknown>;
}

function confFor(run: ListRun, p: Record<string, unknown>, prev?: CniResult, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return pluginConf(run.list, p, prev, extra, run.capabilityArgs ?? {});
}

async function call(run: ListRun, command: CniCommand, plugin: Record<string, unknown> & { type: string }, conf: Record<string, unknown>) {
  try {
    return await invokeDelegate({ target: { kind: 'exec', type: plugin.type }, command, env: run.env, conf });
  } catch (err) {
    const e = WeftError.wrap(err);
    throw new WeftError(e.code, `plugin ${plugin.type} ${command}: ${e.message}`, e.details, { cause: err });
  }
}

export async function listAdd(run: ListRun): Promise<CniResult> {
  let prev: CniResult | undefined;
  try {
    for (const p of run.list.plugins) {
      const o = await call(run, 'ADD', p, confFor(run, p, prev));
      if (o.kind !== 'result') throw new WeftError(CniCode.Internal, `plugin ${p.type} ADD printed no result`);
      prev = o.result;
    }
  } catch (err) {
    // Undo like a runtime would: DEL over the whole list. Every plugin gets its DEL even when
    // one fails (often the one that broke ADD), so what the others made is still released.
    await listDel(run, prev, { keepGoing: true }).catch(() => undefined);
    throw err;
  }
  const result = prev ?? { interfaces: [], ips: [], routes: [], dns: {} };
  run.cache.save(run.list, run.env, result);
  return result;
}

export async function listDel(run: ListRun, prevOverride?: CniResult, opts: { keepGoing?: boolean } = {}): Promise<void> {
  const prev = prevOverride ?? run.cache.load(run.list.name, run.env.containerId, run.env.ifname);
  let first: unknown;
  for (const p of [...run.list.plugins].reverse()) {
    try {
      await call(run, 'DEL', p, confFor(run, p, prev));
    } catch (err) {
      // Like libcni, a plain DEL stops at the first failure (and keeps the cache for a retry).
      if (!opts.keepGoing) throw err;
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
  run.cache.drop(run.list.name, run.env.containerId, run.env.ifname);
}

export async function listCheck(run: ListRun): Promise<void> {
  requireCommandAllowed(run.list.cniVersion, 'CHECK');
  if (run.list.disableCheck) return;
  const prev = run.cache.load(run.list.name, run.env.containerId, run.env.ifname);
  if (!prev) {
    throw new WeftError(CniCode.UnknownContainer, `no cached result for ${run.list.name}/${run.env.containerId}/${run.env.ifname} in ${run.cache.dir} (was it added with weftctl cni add?)`);
  }
  for (const p of run.list.plugins) await call(run, 'CHECK', p, confFor(run, p, prev));
}

export async function listStatus(run: ListRun): Promise<void> {
  requireCommandAllowed(run.list.cniVersion, 'STATUS');
  for (const p of run.list.plugins) await call(run, 'STATUS', p, confFor(run, p));
}

export async function listGc(run: ListRun): Promise<Array<{ containerID: string; ifname: string }>> {
  requireCommandAllowed(run.list.cniVersion, 'GC');
  const valid = run.cache.attachments(run.list.name);
  if (run.list.disableGC) return valid;
  for (const p of run.list.plugins) await call(run, 'GC', p, confFor(run, p, undefined, { 'cni.dev/valid-attachments': valid }));
  return valid;
}

export async function listVersions(run: ListRun): Promise<Array<{ type: string; cniVersion: string; supportedVersions: string[] }>> {
  const out: Array<{ type: string; cniVersion: string; supportedVersions: string[] }> = [];
  for (const p of run.list.plugins) {
    const o = await call(run, 'VERSION', p, { cniVersion: run.list.cniVersion });
    if (o.kind === 'versions') out.push({ type: p.type, cniVersion: o.version, supportedVersions: o.supportedVersions });
  }
  return out;
}

/**
 * Which plugins of the list lack its cniVersion and the version all of them share — the fix a
 * runtime's bare "incompatible CNI versions" never names. Undefined when every plugin has it.
 */
export async function versionHint(run: ListRun): Promise<string | undefined> {
  const answers: PluginVersions[] = [];
  for (const p of run.list.plugins) {
    try {
      const o = await call(run, 'VERSION', p, { cniVersion: '0.3.0' });
      answers.push(o.kind === 'versions' ? { type: p.type, kind: 'versions', supported: o.supportedVersions } : { type: p.type, kind: 'unknown', reason: 'no answer' });
    } catch (err) {
      answers.push({ type: p.type, kind: 'unknown', reason: WeftError.wrap(err).message });
    }
  }
  const lacking = answers.filter((a) => a.kind === 'versions' && !a.supported.includes(run.list.cniVersion));
  if (lacking.length === 0) return undefined;
  const n = negotiateVersion(SUPPORTED_VERSIONS, answers);
  const who = describeLaggards(lacking.map((a) => ({ type: a.type, highest: (a.kind === 'versions' ? highestVersion(a.supported) : undefined) ?? 'nothing' })));
  return `cniVersion ${run.list.cniVersion}: ${who}; ${n.version ? `the highest version every plugin in the list supports is ${n.version}: set "cniVersion": "${n.version}"` : 'no version is supported by every plugin'}`;
}

const SUBCOMMANDS = ['add', 'check', 'del', 'status', 'gc', 'version'] as const;
type Sub = (typeof SUBCOMMANDS)[number];

function deriveContainerId(netns: string, network: string): string {
  return `weftctl-${createHash('sha256').update(`${network}\0${netns}`).digest('hex').slice(0, 16)}`;
}

export const cniCommand: CliCommand = {
  name: 'cni',
  summary: 'run CNI plugins by hand (add, check, del, status, gc, version) like a runtime',
  help: HELP,
  async run(argv: string[]): Promise<number> {
    const [sub, ...rest] = argv;
    if (!sub || !(SUBCOMMANDS as readonly string[]).includes(sub)) {
      throw new UsageError(`expected one of ${SUBCOMMANDS.join(', ')}${sub ? `, got ${JSON.stringify(sub)}` : ''}`);
    }
    let values;
    try {
      ({ values } = parseArgs({
        args: rest,
        options: {
          conf: { type: 'string' },
          netns: { type: 'string' },
          ifname: { type: 'string', default: 'eth0' },
          'container-id': { type: 'string' },
          args: { type: 'string', default: '' },
          'cni-path': { type: 'string' },
          'cache-dir': { type: 'string', default: DEFAULT_CACHE_DIR },
          'runtime-config': { type: 'string' },
        },
        allowPositionals: false,
      }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (!values.conf) throw new UsageError('--conf FILE is required');
    const command = sub as Sub;
    if ((command === 'add' || command === 'check') && !values.netns) throw new UsageError(`--netns PATH is required for ${command}`);
    let text: string;
    try {
      text = readFileSync(values.conf, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --conf ${values.conf}: ${(err as Error).message}`);
    }
    const list = parseNetworkList(text, values.conf);
    const netns = values.netns ?? '';
    const containerId = values['container-id'] ?? deriveContainerId(netns, list.name);
    validateContainerId(containerId);
    validateIfname(values.ifname);
    const env: CniEnv = {
      command: 'VERSION',
      containerId,
      netns,
      ifname: values.ifname,
      args: parseCniArgs(values.args),
      path: values['cni-path'] ? values['cni-path'].split(':').filter((p) => p !== '') : DEFAULT_CNI_PATH,
    };
    const run: ListRun = { list, env, cache: new ResultCache(values['cache-dir']) };
    if (values['runtime-config'] !== undefined) {
      let rc: unknown;
      try {
        rc = JSON.parse(values['runtime-config']);
      } catch (err) {
        throw new UsageError(`--runtime-config is not JSON: ${(err as Error).message}`);
      }
      if (typeof rc !== 'object' || rc === null || Array.isArray(rc)) throw new UsageError('--runtime-config must be a JSON object');
      run.capabilityArgs = rc as Record<string, unknown>;
    }
    try {
      switch (command) {
        case 'add': {
          const r = await listAdd(run);
          process.stdout.write(JSON.stringify(resultToJson(r, list.cniVersion), null, 2) + '\n');
          break;
        }
        case 'check':
          await listCheck(run);
          break;
        case 'del':
          await listDel(run);
          break;
        case 'status':
          await listStatus(run);
          process.stdout.write(`${list.name}: ready\n`);
          break;
        case 'gc': {
          const valid = await listGc(run);
          process.stdout.write(`${list.name}: gc done, ${valid.length} valid attachment(s) kept\n`);
          break;
        }
        case 'version': {
          process.stdout.write(JSON.stringify(await listVersions(run), null, 2) + '\n');
          const hint = await versionHint(run);
          if (hint) process.stderr.write(`weftctl cni version: ${hint}\n`);
          break;
        }
      }
    } catch (err) {
      const e = WeftError.wrap(err);
      process.stderr.write(`weftctl cni ${command}: ${e.message} (CNI code ${e.code})${e.details ? `\n  details: ${e.details}` : ''}\n`);
      if (e.code === CniCode.IncompatibleVersion && command !== 'version') {
        const hint = await versionHint(run).catch(() => undefined);
        if (hint) process.stderr.write(`  hint: ${hint}\n`);
      }
      return ExitCode.Failure;
    }
    return ExitCode.Ok;
  },
};

export default cniCommand;

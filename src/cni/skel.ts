// The plugin skeleton: env + stdin → one typed call into the plugin → stdout + exit code.
// `invokePlugin` is the pure core (also used for in-process delegation); `runPlugin` binds it to
// the real process.
import { statSync } from 'node:fs';
import type { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { parseNetConf, parsePluginConfig, sniffVersion, type NetConf } from './conf.js';
import { parseCniEnv, type CniEnv } from './env.js';
import type { EndpointChange } from '../policy/endpoint-record.js';
import { resultToJson, type CniResult } from './result.js';
import {
  isCniVersion,
  LATEST_VERSION,
  requireCommandAllowed,
  SUPPORTED_VERSIONS,
  type CniVersion,
} from './version.js';

/** How DEL removes a container's interface (the veth's container end, and with it the host end). */
export type ContainerInterfaceDeleter = (env: { readonly netns: string; readonly ifname: string }) => void | Promise<void>;

/**
 * What a plugin gets from whoever runs it, instead of module state someone swaps: a plugin
 * process's entry point passes the standalone host (src/plugins/pkg/host.ts), weftd's CNI server
 * its own (a worker pool that deletes interfaces off its event loop, the policy service's
 * endpoint sink), so two agents in one process, or a test beside weftd, never see each other's.
 */
export interface PluginHost {
  readonly deleteContainerInterface: ContainerInterfaceDeleter;
  /**
   * Told of the endpoint record an ADD wrote or a DEL removed; ADD returns only once this
   * resolves (weftd: once the pod's network policy is in the kernel).
   */
  readonly endpointChanged: (change: EndpointChange) => Promise<void>;
}

export interface PluginContext<C> {
  env: CniEnv;
  conf: NetConf;
  /** The plugin's own keys, parsed by its confSchema. */
  config: C;
  log: Logger;
  host: PluginHost;
}

export interface CniPlugin<C> {
  /** Binary name, used in logs and the about text. */
  readonly name: string;
  readonly confSchema: z.ZodType<C, z.ZodTypeDef, unknown>;
  add(ctx: PluginContext<C>): Promise<CniResult>;
  /** Must succeed when whatever it would remove is already gone. */
  del(ctx: PluginContext<C>): Promise<void>;
  /** Absent: CHECK succeeds (the plugin keeps no state worth verifying). */
  check?(ctx: PluginContext<C>): Promise<void>;
  /** Absent: the plugin is always ready. */
  status?(ctx: PluginContext<C>): Promise<void>;
  /** Absent: the plugin leaves nothing behind to collect. */
  gc?(ctx: PluginContext<C>): Promise<void>;
}

/** What one invocation produced, before printing. */
export type InvocationOutcome =
  | { kind: 'result'; version: CniVersion; result: CniResult }
  | { kind: 'versions'; version: CniVersion; supportedVersions: readonly CniVersion[] }
  | { kind: 'done' }
  | { kind: 'error'; version: CniVersion; error: WeftError };

export function errorToJson(err: WeftError, version: CniVersion): Record<string, unknown> {
  return { cniVersion: version, code: err.code, msg: err.message, details: err.details };
}

export function renderOutcome(o: InvocationOutcome): { stdout: string; exitCode: number } {
  switch (o.kind) {
    case 'result':
      return { stdout: JSON.stringify(resultToJson(o.result, o.version)) + '\n', exitCode: 0 };
    case 'versions':
      return { stdout: JSON.stringify({ cniVersion: o.version, supportedVersions: o.supportedVersions }) + '\n', exitCode: 0 };
    case 'done':
      return { stdout: '', exitCode: 0 };
    case 'error':
      return { stdout: JSON.stringify(errorToJson(o.error, o.version)) + '\n', exitCode: 1 };
  }
}

/** A namespace's identity (device and inode of its nsfs file), or undefined when nothing is there. */
function netnsIdentity(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** Whether path is this thread's own network namespace; false for '' and for nothing at path. */
export function isOwnNetns(path: string): boolean {
  if (path === '') return false;
  const theirs = netnsIdentity(path);
  if (theirs === undefined) return false;
  return theirs === (netnsIdentity('/proc/thread-self/ns/net') ?? netnsIdentity('/proc/self/ns/net'));
}

/**
 * Refuses a CNI_NETNS that is the plugin's own network namespace, as the reference skel does
 * (compared by device and inode, so /proc/self/ns/net, /proc/<pid>/ns/net of a host process and a
 * bind mount of the host's namespace are all caught). Taken for the container's, it would get the
 * pod's address, routes and a default route put into the host — and a DEL would delete the host's
 * own interface of that name. A path with nothing behind it is left to the plugin: ADD reports it,
 * DEL treats the namespace as already gone. The calling thread's namespace rather than the
 * process's: namespaces are per thread, and the thread's is the one its host-side netlink uses.
 */
export function refuseOwnNetns(netns: string): void {
  if (isOwnNetns(netns)) {
    throw new WeftError(
      CniCode.InvalidEnvironment,
      `CNI_NETNS ${netns} is the plugin's own network namespace, not a container's`,
      "plugin's netns and netns from CNI_NETNS should not be the same",
    );
  }
}

export interface InvokeOptions {
  log?: Logger;
  host: PluginHost;
}

/** Runs one CNI command against a plugin without touching process state. */
export async function invokePlugin<C>(
  plugin: CniPlugin<C>,
  processEnv: NodeJS.ProcessEnv,
  stdin: string | Buffer,
  opts: InvokeOptions,
): Promise<InvocationOutcome> {
  const sniffed = sniffVersion(stdin);
  let version: CniVersion = isCniVersion(sniffed) ? sniffed : LATEST_VERSION;
  const baseLog = opts.log ?? createLogger({ plugin: plugin.name });
  try {
    const env = parseCniEnv(processEnv);
    if (env.command === 'VERSION') {
      // The spec answers in the version asked for; an unknown one gets our latest.
      return { kind: 'versions', version, supportedVersions: SUPPORTED_VERSIONS };
    }
    const conf = parseNetConf(stdin);
    version = conf.cniVersion;
    requireCommandAllowed(conf.cniVersion, env.command);
    const config = parsePluginConfig(plugin.confSchema, conf.raw);
    if (env.command === 'ADD' || env.command === 'CHECK' || env.command === 'DEL') refuseOwnNetns(env.netns);
    const log = baseLog.child({ cmd: env.command, containerId: env.containerId || undefined, ifname: env.ifname || undefined, network: conf.name });
    const ctx: PluginContext<C> = { env, conf, config, log, host: opts.host };
    switch (env.command) {
      case 'ADD':
        return { kind: 'result', version, result: await plugin.add(ctx) };
      case 'DEL':
        await plugin.del(ctx);
        return { kind: 'done' };
      case 'CHECK':
        if (plugin.check) await plugin.check(ctx);
        return { kind: 'done' };
      case 'STATUS':
        if (plugin.status) await plugin.status(ctx);
        return { kind: 'done' };
      case 'GC':
        if (plugin.gc) await plugin.gc(ctx);
        return { kind: 'done' };
    }
  } catch (err) {
    const error = err instanceof WeftError ? err : WeftError.wrap(err, CniCode.Internal);
    baseLog.debug('cni command failed', { code: error.code, error: error.message });
    return { kind: 'error', version, error };
  }
}

function readStdin(): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks)));
    process.stdin.on('error', reject);
  });
}

function aboutText(name: string): string {
  return `CNI ${name} plugin (weft)\nCNI protocol versions supported: ${SUPPORTED_VERSIONS.join(', ')}\n`;
}

/**
 * Entry point of a plugin binary: reads env + stdin, prints the outcome, sets the exit code. The
 * binary's main passes the host it runs on (the standalone one).
 */
export async function runPlugin<C>(plugin: CniPlugin<C>, host: PluginHost): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h') || argv.includes('--version') || (!process.env.CNI_COMMAND && process.stdin.isTTY)) {
    process.stderr.write(
      aboutText(plugin.name) +
        'Run by a container runtime: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH in the\n' +
        'environment and the network config on stdin (CNI spec). CNI_COMMAND=VERSION lists the versions.\n',
    );
    process.exitCode = argv.length > 0 ? 0 : 1;
    return;
  }
  const stdin = process.env.CNI_COMMAND === 'VERSION' && process.stdin.isTTY ? Buffer.alloc(0) : await readStdin();
  const outcome = await invokePlugin(plugin, process.env, stdin, { host });
  const { stdout, exitCode } = renderOutcome(outcome);
  if (stdout) process.stdout.write(stdout);
  process.exitCode = exitCode;
}

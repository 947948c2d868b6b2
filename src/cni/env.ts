// The CNI_* environment: ONE table says which variables each command needs; everything else
// (ifname rules, container ID charset, CNI_ARGS pairs) is checked here so plugins get typed values.
import { CniCode, WeftError } from '../errors.js';
import { isCniCommand, type CniCommand } from './version.js';

export type CniEnvVar = 'CNI_COMMAND' | 'CNI_CONTAINERID' | 'CNI_NETNS' | 'CNI_IFNAME' | 'CNI_ARGS' | 'CNI_PATH';

/** Required variables per command. DEL tolerates a missing NETNS (the namespace may be gone). */
export const REQUIRED_ENV: Readonly<Record<CniCommand, readonly CniEnvVar[]>> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  GC: ['CNI_PATH'],
  STATUS: ['CNI_PATH'],
  VERSION: [],
};

export interface CniEnv {
  command: CniCommand;
  /** Empty string when the command does not need it (GC, STATUS, VERSION). */
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as ordered key/value pairs. */
  args: ReadonlyArray<readonly [string, string]>;
  /** CNI_PATH split on ':' with empty entries dropped. */
  path: string[];
}

/**
 * The kernel's limit on a device name: IFNAMSIZ (16) bytes with the terminating NUL. Bytes of
 * UTF-8, not characters: a 15-character name of two-byte characters passed a character count and
 * then failed in the kernel with ERANGE, after IPAM had allocated (the reference's Go len()
 * counts bytes too).
 */
export const MAX_IFNAME_BYTES = 15;
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function ifnameBytes(name: string): number {
  return Buffer.byteLength(name, 'utf8');
}

/** Same rules and codes as the reference skel (utils.ValidateInterfaceName): all code 4. */
export function validateIfname(name: string): void {
  const bad = (msg: string, details = ''): never => {
    throw new WeftError(CniCode.InvalidEnvironment, msg, details);
  };
  if (name.length === 0) bad('interface name is empty');
  const bytes = ifnameBytes(name);
  if (bytes > MAX_IFNAME_BYTES) {
    bad('interface name is too long', `CNI_IFNAME ${JSON.stringify(name)} is ${bytes} bytes; the kernel allows at most ${MAX_IFNAME_BYTES} (IFNAMSIZ-1)`);
  }
  if (name === '.' || name === '..') bad('interface name is . or ..');
  if (/[/:\s]/u.test(name)) bad('interface name contains / or : or whitespace characters');
}

export function validateContainerId(id: string): void {
  if (id === '') throw new WeftError(CniCode.UnknownContainer, 'missing containerID');
  if (!CONTAINER_ID.test(id)) {
    throw new WeftError(CniCode.InvalidEnvironment, 'invalid characters in containerID', id);
  }
}

/** "K1=V1;K2=V2" → pairs. An entry without '=' is an error naming CNI_ARGS. */
export function parseCniArgs(raw: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const part of raw.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) {
      throw new WeftError(CniCode.InvalidEnvironment, `CNI_ARGS: invalid pair ${JSON.stringify(part)} (expected KEY=VALUE)`);
    }
    out.push([part.slice(0, eq), part.slice(eq + 1)]);
  }
  return out;
}

export function cniArg(env: Pick<CniEnv, 'args'>, key: string): string | undefined {
  for (const [k, v] of env.args) if (k === key) return v;
  return undefined;
}

/**
 * Reads and checks the environment for one invocation. Missing variables are reported together,
 * in the reference's wording, so a runtime author sees every gap at once.
 */
export function parseCniEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND;
  if (command === undefined || command === '') {
    throw new WeftError(CniCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing');
  }
  if (!isCniCommand(command)) {
    throw new WeftError(CniCode.InvalidEnvironment, `unknown CNI_COMMAND: ${command}`);
  }
  const required = REQUIRED_ENV[command];
  const missing = required.filter((v) => env[v] === undefined || env[v] === '');
  if (missing.length > 0) {
    throw new WeftError(CniCode.InvalidEnvironment, `required env variables [${missing.join(',')}] missing`);
  }
  const containerId = env.CNI_CONTAINERID ?? '';
  const ifname = env.CNI_IFNAME ?? '';
  if (required.includes('CNI_CONTAINERID')) validateContainerId(containerId);
  if (required.includes('CNI_IFNAME')) validateIfname(ifname);
  return {
    command,
    containerId,
    netns: env.CNI_NETNS ?? '',
    ifname,
    args: parseCniArgs(env.CNI_ARGS ?? ''),
    path: (env.CNI_PATH ?? '').split(':').filter((p) => p !== ''),
  };
}

/** The inverse, for invoking delegates: only set variables the command carries. */
export function cniEnvToProcessEnv(e: CniEnv): Record<CniEnvVar, string> {
  return {
    CNI_COMMAND: e.command,
    CNI_CONTAINERID: e.containerId,
    CNI_NETNS: e.netns,
    CNI_IFNAME: e.ifname,
    CNI_ARGS: e.args.map(([k, v]) => `${k}=${v}`).join(';'),
    CNI_PATH: e.path.join(':'),
  };
}

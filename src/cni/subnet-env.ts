// The node's subnet file (flannel's subnet.env, written by weftd): KEY=VALUE lines → a typed
// SubnetEnv. Kept free of zod and the plugins so the fast-path client can read the socket path
// from it without loading anything heavy.
import { constants, readFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { CniCode, WeftError } from '../errors.js';
import { cidrContainsCidr, formatCidr, networkOf, tryParseCidr, type Cidr } from '../net/ip.js';

export const DEFAULT_SUBNET_FILE = '/run/weft/subnet.env';

/** Raw key/value pairs as written; later lines win, like a shell sourcing the file. */
export type SubnetEnvText = ReadonlyMap<string, string>;

export interface SubnetEnv {
  /** The whole cluster network (FLANNEL_NETWORK); absent on an IPv6-only node. */
  network?: Cidr;
  /** This node's pod subnet as written: first host address with prefix (FLANNEL_SUBNET). */
  subnet?: Cidr;
  ipv6Network?: Cidr;
  ipv6Subnet?: Cidr;
  mtu: number;
  /** FLANNEL_IPMASQ: weftd masquerades pod egress itself (so the bridge must not). */
  ipMasq: boolean;
  /** WEFT_BACKEND, else FLANNEL_BACKEND (lower-cased), when weftd wrote one. */
  backend?: string;
  /** WEFT_CNI_SOCKET: where weftd serves the CNI fast path. */
  cniSocket?: string;
}

/** Parses the file's text; blank lines and `#` comments are skipped, surrounding quotes dropped. */
export function parseSubnetEnvText(text: string): SubnetEnvText {
  const out = new Map<string, string>();
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) value = value.slice(1, -1);
    out.set(key, value);
  }
  return out;
}

/** weftd writes a few hundred bytes; anything this large is not a subnet.env. */
export const MAX_SUBNET_FILE_BYTES = 64 * 1024;

function fileKind(st: { isDirectory(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isFIFO(): boolean; isSocket(): boolean }): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}

/**
 * The file's pairs, or undefined when there is no file (weftd has not written it yet). Only a
 * regular file of at most MAX_SUBNET_FILE_BYTES is read: a subnetFile of /dev/zero was read
 * until memory ran out, and a FIFO nobody writes blocked the plugin forever (opened non-blocking
 * here, so that open returns). Those are code 7: the config points at something else.
 */
export async function readSubnetEnvText(path: string): Promise<SubnetEnvText | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WeftError(CniCode.IoFailure, `cannot read subnet file ${path}: ${(err as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      throw new WeftError(CniCode.InvalidNetworkConfig, `subnet file ${path} is not a regular file (${fileKind(st)})`, 'subnetFile must name the subnet.env weftd writes');
    }
    // One byte more than allowed tells a file at the limit from one past it, whatever stat said.
    const buf = Buffer.alloc(MAX_SUBNET_FILE_BYTES + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, null);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n === buf.length) {
        throw new WeftError(CniCode.InvalidNetworkConfig, `subnet file ${path} is larger than ${MAX_SUBNET_FILE_BYTES} bytes: not a subnet.env`, 'subnetFile must name the subnet.env weftd writes');
      }
    }
    return parseSubnetEnvText(buf.toString('utf8', 0, n));
  } catch (err) {
    if (err instanceof WeftError) throw err;
    throw new WeftError(CniCode.IoFailure, `cannot read subnet file ${path}: ${(err as Error).message}`);
  } finally {
    await fh.close();
  }
}

function notReady(path: string, what: string): WeftError {
  return new WeftError(
    CniCode.TryAgainLater,
    `weftd is not ready yet: ${what}`,
    `the CNI plugin reads this node's subnet from ${path}, which weftd writes once it holds a lease; check that weftd runs and that the file is there and complete`,
  );
}

function cidrKey(path: string, pairs: SubnetEnvText, key: string, family: 4 | 6): Cidr | undefined {
  const v = pairs.get(key);
  if (v === undefined || v === '') return undefined;
  const c = tryParseCidr(v);
  if (!c || c.ip.family !== family) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: ${key}=${v} is not an IPv${family} CIDR`);
  }
  return c;
}

/**
 * Pairs → SubnetEnv. A key weftd always writes that is missing means the file is not (yet)
 * complete: code 11, so the runtime retries. A key with a malformed value is code 7 naming it.
 */
export function parseSubnetEnv(pairs: SubnetEnvText, path = DEFAULT_SUBNET_FILE): SubnetEnv {
  const network = cidrKey(path, pairs, 'FLANNEL_NETWORK', 4);
  const subnet = cidrKey(path, pairs, 'FLANNEL_SUBNET', 4);
  const ipv6Network = cidrKey(path, pairs, 'FLANNEL_IPV6_NETWORK', 6);
  const ipv6Subnet = cidrKey(path, pairs, 'FLANNEL_IPV6_SUBNET', 6);

  const missing: string[] = [];
  if (!network && !ipv6Network) missing.push('FLANNEL_NETWORK');
  if (network && !subnet) missing.push('FLANNEL_SUBNET');
  if (ipv6Network && !ipv6Subnet) missing.push('FLANNEL_IPV6_SUBNET');
  if (!pairs.has('FLANNEL_MTU')) missing.push('FLANNEL_MTU');
  if (!pairs.has('FLANNEL_IPMASQ')) missing.push('FLANNEL_IPMASQ');
  if (missing.length > 0) throw notReady(path, `${path} lacks ${missing.join(', ')}`);

  if (subnet && !network) throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: FLANNEL_SUBNET without FLANNEL_NETWORK`);
  if (ipv6Subnet && !ipv6Network) throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: FLANNEL_IPV6_SUBNET without FLANNEL_IPV6_NETWORK`);
  if (subnet && network && !cidrContainsCidr(network, subnet)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: FLANNEL_SUBNET ${formatCidr(subnet)} is outside FLANNEL_NETWORK ${formatCidr(network)}`);
  }
  if (ipv6Subnet && ipv6Network && !cidrContainsCidr(ipv6Network, ipv6Subnet)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: FLANNEL_IPV6_SUBNET ${formatCidr(ipv6Subnet)} is outside FLANNEL_IPV6_NETWORK ${formatCidr(ipv6Network)}`);
  }

  const mtuText = pairs.get('FLANNEL_MTU') ?? '';
  const mtu = /^\d+$/.test(mtuText) ? Number(mtuText) : Number.NaN;
  if (!(mtu >= 68 && mtu <= 65535)) throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: FLANNEL_MTU=${mtuText} is not an MTU (68–65535)`);

  const masqText = (pairs.get('FLANNEL_IPMASQ') ?? '').toLowerCase();
  if (masqText !== 'true' && masqText !== 'false') {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${path}: FLANNEL_IPMASQ=${pairs.get('FLANNEL_IPMASQ') ?? ''} is not true or false`);
  }

  const env: SubnetEnv = { mtu, ipMasq: masqText === 'true' };
  if (network) env.network = network;
  if (subnet) env.subnet = subnet;
  if (ipv6Network) env.ipv6Network = ipv6Network;
  if (ipv6Subnet) env.ipv6Subnet = ipv6Subnet;
  const backend = pairs.get('WEFT_BACKEND') || pairs.get('FLANNEL_BACKEND');
  if (backend) env.backend = backend.toLowerCase();
  const socket = pairs.get('WEFT_CNI_SOCKET');
  if (socket) env.cniSocket = socket;
  return env;
}

/** Reads and parses the file; a missing file is code 11 (weftd has not leased a subnet yet). */
export async function loadSubnetEnv(path: string): Promise<SubnetEnv> {
  const pairs = await readSubnetEnvText(path);
  if (!pairs) throw notReady(path, `${path} does not exist`);
  return parseSubnetEnv(pairs, path);
}

/**
 * The subnet a node leased, as its subnet.env says (FLANNEL_SUBNET's network, or
 * FLANNEL_IPV6_SUBNET's on an IPv6-only node): undefined while weftd has not written one yet. A
 * lab waits on it; the web view matches a weftd to its lease.
 */
export function readLeasedSubnet(file: string): Cidr | undefined {
  const s = readLeasedSubnets(file);
  return s.subnet ?? s.ipv6Subnet;
}

/**
 * The subnets a subnet.env names, network form: FLANNEL_SUBNET's and FLANNEL_IPV6_SUBNET's. A file
 * that is missing, unreadable, or names a subnet of the wrong family reads as not naming it: a
 * restarted weftd takes its previous run's file as a hint only, and a lab polls until it is there.
 */
export function readLeasedSubnets(file: string): { readonly subnet?: Cidr; readonly ipv6Subnet?: Cidr } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  const pairs = parseSubnetEnvText(text);
  const read = (key: string, family: 4 | 6): Cidr | undefined => {
    const c = tryParseCidr(pairs.get(key) ?? '');
    return c && c.ip.family === family ? networkOf(c) : undefined;
  };
  const subnet = read('FLANNEL_SUBNET', 4);
  const ipv6Subnet = read('FLANNEL_IPV6_SUBNET', 6);
  return { ...(subnet && { subnet }), ...(ipv6Subnet && { ipv6Subnet }) };
}

// The network config stored at <prefix>/config, with flannel's keys, defaults and rules.
// parseNetworkConfig is the only way to get a NetworkConfig, so every holder has a valid one;
// every error names the offending key and what was expected.
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import {
  type Cidr, bitsOf, cidrContains, cidrOverlaps, formatCidr, formatIP, isNetworkAddress, networkOf,
  nthSubnet, parseCidr, tryParseCidr, tryParseIP, ipFromValue,
} from '../net/ip.js';
import { type BackendConfig, backendTypes, parseBackendKeys } from '../backends/registry.js';

export type { BackendConfig } from '../backends/registry.js';

export interface AddressPlan {
  readonly network: Cidr;
  readonly subnetLen: number;
  /** First and last subnet a node may lease (inclusive), both on subnetLen boundaries. */
  readonly subnetMin: Cidr;
  readonly subnetMax: Cidr;
}

export interface NetworkConfig {
  readonly ipv4: AddressPlan | undefined;
  readonly ipv6: AddressPlan | undefined;
  /** The backend's own keys after its module's schema applied defaults (e.g. vxlan VNI 1, Port 8472). */
  readonly backend: BackendConfig;
}

const topLevel = z.object({
  Network: z.string().optional(),
  SubnetLen: z.number().int().optional(),
  SubnetMin: z.string().optional(),
  SubnetMax: z.string().optional(),
  EnableIPv4: z.boolean().optional(),
  EnableIPv6: z.boolean().optional(),
  IPv6Network: z.string().optional(),
  IPv6SubnetLen: z.number().int().optional(),
  IPv6SubnetMin: z.string().optional(),
  IPv6SubnetMax: z.string().optional(),
  Backend: z.record(z.unknown()).optional(),
}).strict();

function configError(key: string, what: string): WeftError {
  return new WeftError(CniCode.InvalidNetworkConfig, `network config: ${key}: ${what}`);
}

/** Turns the first zod issue into "Key.Path: what was expected". */
function fromZod(err: z.ZodError, prefix: string): WeftError {
  const issue = err.issues[0];
  if (!issue) return configError(prefix || '(root)', 'invalid');
  const path = [prefix, ...issue.path.map(String)].filter((p) => p !== '').join('.');
  if (issue.code === 'unrecognized_keys') {
    const key = [path, issue.keys[0] ?? ''].filter((p) => p !== '').join('.');
    return configError(key, 'unknown key');
  }
  return configError(path || '(root)', issue.message);
}

/**
 * Addresses no pod can have: a packet to or from them means something else to every host (the
 * host itself, a link, a group). `config set` took 224.0.0.0/4 and 0.0.0.0/0 before.
 */
const UNUSABLE: Record<4 | 6, readonly { readonly range: Cidr; readonly what: string }[]> = {
  4: [
    { range: parseCidr('0.0.0.0/8'), what: '"this network" 0.0.0.0/8' },
    { range: parseCidr('127.0.0.0/8'), what: 'loopback 127.0.0.0/8' },
    { range: parseCidr('169.254.0.0/16'), what: 'link-local 169.254.0.0/16 (weft-routed\'s gateway is 169.254.1.1)' },
    { range: parseCidr('224.0.0.0/4'), what: 'multicast 224.0.0.0/4' },
    { range: parseCidr('240.0.0.0/4'), what: 'reserved 240.0.0.0/4 (with the broadcast address)' },
  ],
  6: [
    { range: parseCidr('::/128'), what: 'the unspecified address ::' },
    { range: parseCidr('::1/128'), what: 'loopback ::1' },
    { range: parseCidr('fe80::/10'), what: 'link-local fe80::/10' },
    { range: parseCidr('ff00::/8'), what: 'multicast ff00::/8' },
  ],
};

function plan(
  family: 4 | 6,
  keys: { network: string; len: string; min: string; max: string },
  raw: { network: string | undefined; len: number | undefined; min: string | undefined; max: string | undefined },
): AddressPlan {
  if (raw.network === undefined) throw configError(keys.network, `is required (an IPv${family} CIDR such as ${family === 4 ? '10.244.0.0/16' : 'fd00:10:244::/56'})`);
  const parsed = tryParseCidr(raw.network);
  if (!parsed || parsed.ip.family !== family) {
    throw configError(keys.network, `expected an IPv${family} CIDR, got ${JSON.stringify(raw.network)}`);
  }
  const network = networkOf(parsed);
  const unusable = UNUSABLE[family].find((u) => cidrOverlaps(network, u.range));
  if (unusable) {
    throw configError(keys.network, `${formatCidr(network)} overlaps ${unusable.what}; pods need ordinary unicast addresses (e.g. ${family === 4 ? '10.244.0.0/16' : 'fd00:10:244::/56'})`);
  }
  const maxLen = family === 4 ? 30 : 126;
  // flannel: a /24 per host when the network is big enough, else split it in at least four.
  const defaultLen = family === 4 ? (network.prefix <= 22 ? 24 : network.prefix + 2) : (network.prefix <= 62 ? 64 : network.prefix + 2);
  const subnetLen = raw.len ?? defaultLen;
  if (subnetLen > maxLen) throw configError(keys.len, `must be at most ${maxLen}, got ${subnetLen}`);
  if (subnetLen < network.prefix + 2) {
    throw configError(keys.len, `must be at least ${network.prefix + 2} so ${formatCidr(network)} holds four or more subnets, got ${subnetLen}`);
  }
  const count = 1n << BigInt(subnetLen - network.prefix);
  const boundary = (key: string, s: string | undefined, fallback: Cidr): Cidr => {
    if (s === undefined) return fallback;
    const ip = tryParseIP(s.includes('/') ? s.slice(0, s.indexOf('/')) : s);
    if (!ip || ip.family !== family) throw configError(key, `expected an IPv${family} address, got ${JSON.stringify(s)}`);
    if (!cidrContains(network, ip)) throw configError(key, `${s} is not inside Network ${formatCidr(network)}`);
    const c: Cidr = { ip, prefix: subnetLen };
    if (!isNetworkAddress(c)) throw configError(key, `${s} is not on a /${subnetLen} subnet boundary`);
    return c;
  };
  // Like flannel, the network's first subnet is skipped by default (its .0/.1 look like the gateway's).
  const subnetMin = boundary(keys.min, raw.min, nthSubnet(network, subnetLen, 1));
  const subnetMax = boundary(keys.max, raw.max, nthSubnet(network, subnetLen, count - 1n));
  if (subnetMin.ip.value > subnetMax.ip.value) {
    throw configError(keys.min, `${formatIP(subnetMin.ip)} is above ${keys.max} ${formatIP(subnetMax.ip)}`);
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/** Parses and validates the JSON text of a network config. */
export function parseNetworkConfig(text: string): NetworkConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new WeftError(CniCode.DecodeFailure, `network config is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  return networkConfigFromObject(json);
}

export function networkConfigFromObject(json: unknown): NetworkConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw configError('(root)', 'expected a JSON object');
  }
  const top = topLevel.safeParse(json);
  if (!top.success) throw fromZod(top.error, '');
  const c = top.data;
  const enableIPv4 = c.EnableIPv4 ?? true;
  const enableIPv6 = c.EnableIPv6 ?? false;
  if (!enableIPv4 && !enableIPv6) throw configError('EnableIPv4', 'at least one of EnableIPv4 and EnableIPv6 must be true');
  const ipv4 = enableIPv4
    ? plan(4, { network: 'Network', len: 'SubnetLen', min: 'SubnetMin', max: 'SubnetMax' },
      { network: c.Network, len: c.SubnetLen, min: c.SubnetMin, max: c.SubnetMax })
    : undefined;
  if (!enableIPv6 && c.IPv6Network !== undefined) throw configError('IPv6Network', 'is set but EnableIPv6 is not true');
  const ipv6 = enableIPv6
    ? plan(6, { network: 'IPv6Network', len: 'IPv6SubnetLen', min: 'IPv6SubnetMin', max: 'IPv6SubnetMax' },
      { network: c.IPv6Network, len: c.IPv6SubnetLen, min: c.IPv6SubnetMin, max: c.IPv6SubnetMax })
    : undefined;
  return { ipv4, ipv6, backend: parseBackend(c.Backend ?? {}) };
}

function parseBackend(raw: Record<string, unknown>): BackendConfig {
  const { Type, ...rest } = raw;
  const type = Type ?? 'vxlan';
  if (typeof type !== 'string') throw configError('Backend.Type', `expected a string (one of ${backendTypes().join(', ')})`);
  const parsed = parseBackendKeys(type, rest);
  if (!parsed) throw configError('Backend.Type', `unknown backend ${JSON.stringify(type)} (expected one of ${backendTypes().join(', ')})`);
  if (!parsed.success) throw fromZod(parsed.error, 'Backend');
  return parsed.config;
}

/** The number of subnets a node may choose from (SubnetMin..SubnetMax). */
export function subnetCount(p: AddressPlan): bigint {
  const step = 1n << BigInt(bitsOf(p.network.ip.family) - p.subnetLen);
  return (p.subnetMax.ip.value - p.subnetMin.ip.value) / step + 1n;
}

/** The i-th leasable subnet, counting from SubnetMin. */
export function leasableSubnet(p: AddressPlan, i: bigint): Cidr {
  const step = 1n << BigInt(bitsOf(p.network.ip.family) - p.subnetLen);
  return { ip: ipFromValue(p.network.ip.family, p.subnetMin.ip.value + i * step), prefix: p.subnetLen };
}

/** True when s is a subnet this plan could hand out (right length, within Min..Max). */
export function planAllows(p: AddressPlan, s: Cidr): boolean {
  return s.prefix === p.subnetLen && s.ip.family === p.network.ip.family && isNetworkAddress(s)
    && s.ip.value >= p.subnetMin.ip.value && s.ip.value <= p.subnetMax.ip.value;
}

// CNI results. One typed, version-independent form (addresses already parsed) plus the two wire
// layouts: 0.3.0–0.4.0 (ips carry "version") and 1.x (1.1.0 adds route/interface attributes).
// Converting is parse-from-any-version then print-in-the-wanted-version, so every pair works.
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { formatCidr, formatIP, tryParseCidr, tryParseIP, type Cidr, type IP } from '../net/ip.js';
import { compareVersions, isLegacyResultVersion, requireSupportedVersion, type CniVersion } from './version.js';

export interface CniInterface {
  name: string;
  mac?: string;
  /** 1.1.0+ */
  mtu?: number;
  sandbox?: string;
  /** 1.1.0+ */
  socketPath?: string;
  /** 1.1.0+ */
  pciID?: string;
}

export interface CniIPConfig {
  address: Cidr;
  gateway?: IP;
  /** Index into interfaces. */
  interface?: number;
}

export interface CniRoute {
  dst: Cidr;
  gw?: IP;
  /** 1.1.0+ attributes */
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface CniDNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  interfaces: CniInterface[];
  ips: CniIPConfig[];
  routes: CniRoute[];
  dns: CniDNS;
}

export function emptyResult(): CniResult {
  return { interfaces: [], ips: [], routes: [], dns: {} };
}

// ---- wire schemas (zod) ----

export const ipSchema = z.string().transform((s, ctx) => {
  const ip = tryParseIP(s);
  if (!ip) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid IP address ${JSON.stringify(s)}` });
    return z.NEVER;
  }
  return ip;
});

export const cidrSchema = z.string().transform((s, ctx) => {
  const c = tryParseCidr(s);
  if (!c) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `invalid CIDR ${JSON.stringify(s)}` });
    return z.NEVER;
  }
  return c;
});

const int = z.number().int();

const interfaceSchema = z.object({
  name: z.string(),
  mac: z.string().optional(),
  mtu: int.optional(),
  sandbox: z.string().optional(),
  socketPath: z.string().optional(),
  pciID: z.string().optional(),
});

const ipConfigSchema = z.object({
  version: z.enum(['4', '6']).optional(),
  address: cidrSchema,
  gateway: ipSchema.optional(),
  interface: int.nonnegative().optional(),
});

const routeSchema = z.object({
  dst: cidrSchema,
  gw: ipSchema.optional(),
  mtu: int.optional(),
  advmss: int.optional(),
  priority: int.optional(),
  table: int.optional(),
  scope: int.optional(),
});

export const dnsSchema = z.object({
  nameservers: z.array(z.string()).optional(),
  domain: z.string().optional(),
  search: z.array(z.string()).optional(),
  options: z.array(z.string()).optional(),
});

const wireResultSchema = z.object({
  cniVersion: z.string().optional(),
  interfaces: z.array(interfaceSchema).nullish(),
  ips: z.array(ipConfigSchema).nullish(),
  routes: z.array(routeSchema).nullish(),
  dns: dnsSchema.nullish(),
});

/** Copies only the keys whose value is defined (exactOptionalPropertyTypes forbids `k: undefined`). */
function defined<T extends object>(o: { [K in keyof T]: T[K] | undefined }): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}

/** Names the first failing path of a zod error, e.g. "ips.0.address: invalid CIDR …". */
export function describeZodError(err: z.ZodError, root = ''): string {
  const issue = err.issues[0];
  if (!issue) return 'invalid value';
  const path = [root, ...issue.path.map(String)].filter((p) => p !== '').join('.');
  return path ? `${path}: ${issue.message}` : issue.message;
}

/**
 * Parses a result printed in any supported version. `fallbackVersion` is used when the JSON has
 * no cniVersion (a prevResult embedded in a conf inherits the conf's version).
 */
export function parseResult(json: unknown, fallbackVersion?: CniVersion, what = 'result'): { version: CniVersion; result: CniResult } {
  const parsed = wireResultSchema.safeParse(json);
  if (!parsed.success) {
    throw new WeftError(CniCode.DecodeFailure, `invalid ${what}: ${describeZodError(parsed.error)}`);
  }
  const w = parsed.data;
  const version = w.cniVersion === undefined && fallbackVersion ? fallbackVersion : requireSupportedVersion(w.cniVersion);
  const interfaces = (w.interfaces ?? []).map((i) => defined<CniInterface>(i));
  const ips = (w.ips ?? []).map((ip, idx): CniIPConfig => {
    if (ip.version !== undefined && ip.version !== String(ip.address.ip.family)) {
      throw new WeftError(CniCode.DecodeFailure, `invalid ${what}: ips.${idx}.version ${ip.version} does not match address ${formatCidr(ip.address)}`);
    }
    if (ip.interface !== undefined && ip.interface >= interfaces.length) {
      throw new WeftError(CniCode.DecodeFailure, `invalid ${what}: ips.${idx}.interface ${ip.interface} is not an index into interfaces`);
    }
    return defined<CniIPConfig>({ address: ip.address, gateway: ip.gateway, interface: ip.interface });
  });
  const routes = (w.routes ?? []).map((r) => defined<CniRoute>(r));
  return { version, result: { interfaces, ips, routes, dns: defined<CniDNS>(w.dns ?? {}) } };
}

/** The result as JSON in the given version; fields the version lacks are dropped. */
export function resultToJson(r: CniResult, version: CniVersion): Record<string, unknown> {
  const legacy = isLegacyResultVersion(version);
  const v11 = compareVersions(version, '1.1.0') >= 0;
  const out: Record<string, unknown> = { cniVersion: version };
  if (r.interfaces.length > 0) {
    out.interfaces = r.interfaces.map((i) =>
      defined<Record<string, unknown>>({
        name: i.name,
        mac: i.mac,
        mtu: v11 ? i.mtu : undefined,
        sandbox: i.sandbox,
        socketPath: v11 ? i.socketPath : undefined,
        pciID: v11 ? i.pciID : undefined,
      }),
    );
  }
  if (r.ips.length > 0) {
    out.ips = r.ips.map((ip) =>
      defined<Record<string, unknown>>({
        version: legacy ? String(ip.address.ip.family) : undefined,
        interface: ip.interface,
        address: formatCidr(ip.address),
        gateway: ip.gateway ? formatIP(ip.gateway) : undefined,
      }),
    );
  }
  if (r.routes.length > 0) {
    out.routes = r.routes.map((rt) =>
      defined<Record<string, unknown>>({
        dst: formatCidr(rt.dst),
        gw: rt.gw ? formatIP(rt.gw) : undefined,
        mtu: v11 ? rt.mtu : undefined,
        advmss: v11 ? rt.advmss : undefined,
        priority: v11 ? rt.priority : undefined,
        table: v11 ? rt.table : undefined,
        scope: v11 ? rt.scope : undefined,
      }),
    );
  }
  out.dns = { ...r.dns };
  return out;
}

/** Re-expresses result JSON of one version in another (both directions, any supported pair). */
export function convertResultJson(json: unknown, to: CniVersion): Record<string, unknown> {
  return resultToJson(parseResult(json).result, to);
}

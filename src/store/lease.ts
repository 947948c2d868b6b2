// A lease's value, flannel-compatible: {"PublicIP","PublicIPv6","BackendType","BackendData",
// "BackendV6Data"} (the last is what a dual-stack node's IPv6 dataplane publishes, e.g. the
// VtepMAC of its IPv6 VXLAN device). A host with only an IPv6 underlay writes PublicIP "0.0.0.0"
// (flanneld's PublicIP is a plain IPv4 field) and is read back with publicIP = its IPv6 address.
// Values come from a shared store anyone can write to, so parsing never throws: garbage is
// reported to the caller, who skips the entry with a warning. Read as flanneld (v0.20–v0.28)
// writes them: its LeaseAttrs has PublicIPv6 as a pointer without omitempty, so every IPv4-only
// lease says `"PublicIPv6":null`, and BackendType is omitempty (its udp backend sets none).
import { z } from 'zod';
import { type Cidr, type IP, formatCidr, formatIP, tryParseIP } from '../net/ip.js';
import type { RawEntry } from './types.js';

export interface LeaseAttrs {
  /**
   * The address the host is known by: its IPv4 underlay address, or its IPv6 one on a host with
   * no IPv4 underlay (then equal to publicIPv6).
   */
  readonly publicIP: IP;
  /** The host's IPv6 underlay address (IPv6 tunnels and next hops), if it has one. */
  readonly publicIPv6: IP | undefined;
  readonly backendType: string;
  /**
   * As the peer wrote it (null when absent): the store does not know what a backend publishes;
   * the backend that uses it checks it (src/backends/lease-data.ts).
   */
  readonly backendData: unknown;
  /** BackendData of the host's IPv6 dataplane (null when absent), checked the same way. */
  readonly backendV6Data?: unknown;
}

export interface Lease {
  /** The IPv4 subnet, or the IPv6 one on an IPv6-only network (the lease's identity). */
  readonly subnet: Cidr;
  /** The IPv6 subnet of a dual-stack or IPv6-only lease (on IPv6-only, `subnet` itself). */
  readonly ipv6Subnet?: Cidr | undefined;
  readonly attrs: LeaseAttrs;
  /** Epoch ms, null for a reservation, undefined when the store did not resolve it. */
  readonly expiresAt: number | null | undefined;
  readonly revision: bigint;
}

const wire = z.object({
  PublicIP: z.string(),
  PublicIPv6: z.string().nullish(),
  BackendType: z.string().optional(),
  BackendData: z.unknown().optional(),
  BackendV6Data: z.unknown().optional(),
});

type Wire = z.infer<typeof wire>;

/**
 * The common case by hand (every field of the right type), the zod schema for anything else so
 * its message names the field: a watcher parses thousands of values in a burst, and zod's object
 * parse dominated that.
 */
function parseWire(json: unknown): { success: true; data: Wire } | { success: false; reason: string } {
  if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
    const o = json as Record<string, unknown>;
    if (typeof o.PublicIP === 'string' && typeof o.BackendType === 'string'
      && (o.PublicIPv6 === undefined || o.PublicIPv6 === null || typeof o.PublicIPv6 === 'string')) {
      return { success: true, data: { PublicIP: o.PublicIP, BackendType: o.BackendType, ...(typeof o.PublicIPv6 === 'string' && { PublicIPv6: o.PublicIPv6 }), BackendData: o.BackendData, BackendV6Data: o.BackendV6Data } };
    }
  }
  const w = wire.safeParse(json);
  if (w.success) return { success: true, data: w.data };
  const i = w.error.issues[0];
  return { success: false, reason: `${i?.path.join('.') || 'value'}: ${i?.message ?? 'invalid'}` };
}

export type ParsedLease = { readonly ok: true; readonly lease: Lease } | { readonly ok: false; readonly reason: string };

export function parseLeaseValue(value: string): { ok: true; attrs: LeaseAttrs } | { ok: false; reason: string } {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    return { ok: false, reason: `value is not JSON: ${JSON.stringify(value.slice(0, 60))}` };
  }
  const w = parseWire(json);
  if (!w.success) return { ok: false, reason: w.reason };
  const publicIPv4 = tryParseIP(w.data.PublicIP);
  if (!publicIPv4 || publicIPv4.family !== 4) return { ok: false, reason: `PublicIP: expected an IPv4 address, got ${JSON.stringify(w.data.PublicIP)}` };
  let publicIPv6: IP | undefined;
  if (typeof w.data.PublicIPv6 === 'string' && w.data.PublicIPv6 !== '') {
    publicIPv6 = tryParseIP(w.data.PublicIPv6);
    if (!publicIPv6 || publicIPv6.family !== 6) return { ok: false, reason: `PublicIPv6: expected an IPv6 address, got ${JSON.stringify(w.data.PublicIPv6)}` };
  }
  let publicIP = publicIPv4;
  if (publicIPv4.value === 0n) {
    if (!publicIPv6) return { ok: false, reason: 'PublicIP: 0.0.0.0 without a PublicIPv6' };
    publicIP = publicIPv6;
  }
  const backendData: unknown = w.data.BackendData ?? null;
  const backendV6Data: unknown = w.data.BackendV6Data ?? null;
  // No BackendType is flanneld's udp (or alloc) backend: a lease of no backend weft runs.
  const backendType = w.data.BackendType ?? '';
  return { ok: true, attrs: { publicIP, publicIPv6, backendType, backendData, ...(backendV6Data !== null && { backendV6Data }) } };
}

export function parseLease(entry: RawEntry): ParsedLease {
  const r = parseLeaseValue(entry.value);
  if (!r.ok) return { ok: false, reason: `lease ${formatCidr(entry.subnet)}: ${r.reason}` };
  return { ok: true, lease: { subnet: entry.subnet, ...(entry.ipv6Subnet && { ipv6Subnet: entry.ipv6Subnet }), attrs: r.attrs, expiresAt: entry.expiresAt, revision: entry.revision } };
}

export function encodeLeaseAttrs(a: LeaseAttrs): string {
  const out: Record<string, unknown> = { PublicIP: a.publicIP.family === 4 ? formatIP(a.publicIP) : '0.0.0.0' };
  const v6 = a.publicIPv6 ?? (a.publicIP.family === 6 ? a.publicIP : undefined);
  if (v6) out.PublicIPv6 = formatIP(v6);
  out.BackendType = a.backendType;
  if (a.backendData !== undefined && a.backendData !== null) out.BackendData = a.backendData;
  if (a.backendV6Data !== undefined && a.backendV6Data !== null) out.BackendV6Data = a.backendV6Data;
  return JSON.stringify(out);
}

/**
 * One address family's half of a lease — its subnet, the address it is reached at, its backend
 * data — for the backends and doctor, which program and check each family on its own.
 */
export interface LeaseFamily {
  readonly family: 4 | 6;
  readonly subnet: Cidr;
  /** PublicIP, or PublicIPv6 for the IPv6 half; undefined when the lease publishes none. */
  readonly publicIP: IP | undefined;
  /** BackendData, or BackendV6Data for the IPv6 half. */
  readonly backendData: unknown;
}

export function leaseFamily(l: Lease, family: 4 | 6): LeaseFamily | undefined {
  if (family === 4) return l.subnet.ip.family === 4 ? { family, subnet: l.subnet, publicIP: l.attrs.publicIP.family === 4 ? l.attrs.publicIP : undefined, backendData: l.attrs.backendData } : undefined;
  if (l.ipv6Subnet === undefined) return undefined;
  // An IPv6-only lease's BackendData is its IPv6 dataplane's (there is no other).
  const onlyV6 = l.subnet.ip.family === 6;
  return { family, subnet: l.ipv6Subnet, publicIP: l.attrs.publicIPv6, backendData: l.attrs.backendV6Data ?? (onlyV6 ? l.attrs.backendData : null) };
}

/** The lease's IPv4 subnet (undefined on an IPv6-only lease). */
export function ipv4SubnetOf(l: { readonly subnet: Cidr }): Cidr | undefined {
  return l.subnet.ip.family === 4 ? l.subnet : undefined;
}

/** "10.244.3.0/24 fd00:10:244:3::/64": every subnet of the lease, for logs and tables. */
export function formatLeaseSubnets(l: { readonly subnet: Cidr; readonly ipv6Subnet?: Cidr | undefined }): string {
  return l.ipv6Subnet && l.ipv6Subnet !== l.subnet && l.subnet.ip.family === 4 ? `${formatCidr(l.subnet)} ${formatCidr(l.ipv6Subnet)}` : formatCidr(l.subnet);
}

/** Equality of what a lease publishes (not of its expiry), for deciding whether a put is news. */
export function sameAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return encodeLeaseAttrs(a) === encodeLeaseAttrs(b);
}

// A lease's value, flannel-compatible: {"PublicIP","PublicIPv6","BackendType","BackendData"}.
// Values come from a shared store anyone can write to, so parsing never throws: garbage is
// reported to the caller, who skips the entry with a warning. Read as flanneld (v0.20–v0.28)
// writes them: its LeaseAttrs has PublicIPv6 as a pointer without omitempty, so every IPv4-only
// lease says `"PublicIPv6":null`, and BackendType is omitempty (its udp backend sets none).
import { z } from 'zod';
import { type Cidr, type IP, formatCidr, formatIP, tryParseIP } from '../net/ip.js';
import type { RawEntry } from './types.js';

export interface LeaseAttrs {
  readonly publicIP: IP;
  readonly publicIPv6: IP | undefined;
  readonly backendType: string;
  /**
   * As the peer wrote it (null when absent): the store does not know what a backend publishes;
   * the backend that uses it checks it (src/backends/lease-data.ts).
   */
  readonly backendData: unknown;
}

export interface Lease {
  readonly subnet: Cidr;
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
      return { success: true, data: { PublicIP: o.PublicIP, BackendType: o.BackendType, ...(typeof o.PublicIPv6 === 'string' && { PublicIPv6: o.PublicIPv6 }), BackendData: o.BackendData } };
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
  const publicIP = tryParseIP(w.data.PublicIP);
  if (!publicIP || publicIP.family !== 4) return { ok: false, reason: `PublicIP: expected an IPv4 address, got ${JSON.stringify(w.data.PublicIP)}` };
  let publicIPv6: IP | undefined;
  if (typeof w.data.PublicIPv6 === 'string' && w.data.PublicIPv6 !== '') {
    publicIPv6 = tryParseIP(w.data.PublicIPv6);
    if (!publicIPv6 || publicIPv6.family !== 6) return { ok: false, reason: `PublicIPv6: expected an IPv6 address, got ${JSON.stringify(w.data.PublicIPv6)}` };
  }
  const backendData: unknown = w.data.BackendData ?? null;
  // No BackendType is flanneld's udp (or alloc) backend: a lease of no backend weft runs.
  const backendType = w.data.BackendType ?? '';
  return { ok: true, attrs: { publicIP, publicIPv6, backendType, backendData } };
}

export function parseLease(entry: RawEntry): ParsedLease {
  const r = parseLeaseValue(entry.value);
  if (!r.ok) return { ok: false, reason: `lease ${formatCidr(entry.subnet)}: ${r.reason}` };
  return { ok: true, lease: { subnet: entry.subnet, attrs: r.attrs, expiresAt: entry.expiresAt, revision: entry.revision } };
}

export function encodeLeaseAttrs(a: LeaseAttrs): string {
  const out: Record<string, unknown> = { PublicIP: formatIP(a.publicIP) };
  if (a.publicIPv6) out.PublicIPv6 = formatIP(a.publicIPv6);
  out.BackendType = a.backendType;
  if (a.backendData !== undefined && a.backendData !== null) out.BackendData = a.backendData;
  return JSON.stringify(out);
}

/** Equality of what a lease publishes (not of its expiry), for deciding whether a put is news. */
export function sameAttrs(a: LeaseAttrs, b: LeaseAttrs): boolean {
  return encodeLeaseAttrs(a) === encodeLeaseAttrs(b);
}

// The network configuration on stdin → a typed NetConf. Common keys are checked here; the
// plugin's own keys by the zod schema it supplies. Unknown keys are allowed (as in the reference
// plugins); a known key with the wrong type is code 7 naming the key; bad JSON is code 6.
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { describeZodError, dnsSchema, parseResult, type CniDNS, type CniResult } from './result.js';
import { requireSupportedVersion, type CniVersion } from './version.js';
import { ifnameBytes, MAX_IFNAME_BYTES } from './env.js';

export interface Attachment {
  containerID: string;
  ifname: string;
}

export interface IpamSection {
  /**
   * Optional here: the spec requires it of whoever runs the section, and the weft plugin fills
   * in weft-ipam where flannel fills in its default. Main plugins refuse a section without it.
   */
  type?: string;
  [key: string]: unknown;
}

export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  ipam?: IpamSection;
  dns?: CniDNS;
  prevResult?: CniResult;
  runtimeConfig: Record<string, unknown>;
  args: Record<string, unknown>;
  /** GC only: `cni.dev/valid-attachments` (absent means "none given", not "none valid"). */
  validAttachments?: Attachment[];
  /** The whole object as received, for delegation and for the plugin schema. */
  raw: Record<string, unknown>;
}

const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

const attachmentSchema = z.object({ containerID: z.string(), ifname: z.string() });

const baseSchema = z
  .object({
    name: z.string(),
    type: z.string(),
    ipam: z.object({ type: z.string().optional() }).passthrough().optional(),
    dns: dnsSchema.optional(),
    prevResult: z.record(z.unknown()).optional(),
    runtimeConfig: z.record(z.unknown()).optional(),
    args: z.record(z.unknown()).optional(),
    'cni.dev/valid-attachments': z.array(attachmentSchema).optional(),
  })
  .passthrough();

/**
 * A device name in a plugin's config (bridge, master): the kernel's rules, length in bytes (see
 * MAX_IFNAME_BYTES), so a bad name is code 7 naming the key before anything is created.
 */
export const deviceNameSchema = z
  .string()
  .min(1)
  .refine((s) => ifnameBytes(s) <= MAX_IFNAME_BYTES, (s) => ({ message: `${JSON.stringify(s)} is ${ifnameBytes(s)} bytes; a device name has at most ${MAX_IFNAME_BYTES}` }))
  .refine((s) => /^[^\s/:]+$/u.test(s) && s !== '.' && s !== '..', 'a device name without /, : or whitespace, and not . or ..');

/** JSON text → plain object, code 6 when it is not a JSON object. */
export function decodeJsonObject(text: string | Buffer, what = 'network config'): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(typeof text === 'string' ? text : text.toString('utf8'));
  } catch (err) {
    throw new WeftError(CniCode.DecodeFailure, `error decoding ${what}: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new WeftError(CniCode.DecodeFailure, `error decoding ${what}: expected a JSON object`);
  }
  return v as Record<string, unknown>;
}

/** Best-effort cniVersion of unparsed stdin, so even early errors print in the caller's version. */
export function sniffVersion(text: string | Buffer): string | undefined {
  try {
    const v: unknown = JSON.parse(typeof text === 'string' ? text : text.toString('utf8'));
    if (typeof v === 'object' && v !== null && 'cniVersion' in v && typeof v.cniVersion === 'string') return v.cniVersion;
  } catch {
    // not JSON: no version to honour
  }
  return undefined;
}

export function parseNetConf(text: string | Buffer): NetConf {
  const raw = decodeJsonObject(text);
  const cniVersion = requireSupportedVersion(raw.cniVersion);
  const parsed = baseSchema.safeParse(raw);
  if (!parsed.success) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid network config: ${describeZodError(parsed.error)}`);
  }
  const c = parsed.data;
  if (!NETWORK_NAME.test(c.name)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, 'invalid characters found in network name', c.name);
  }
  const conf: NetConf = {
    cniVersion,
    name: c.name,
    type: c.type,
    runtimeConfig: c.runtimeConfig ?? {},
    args: c.args ?? {},
    raw,
  };
  if (c.ipam) {
    const { type, ...rest } = c.ipam;
    conf.ipam = type !== undefined ? { ...rest, type } : rest;
  }
  if (c.dns) {
    const dns: CniDNS = {};
    if (c.dns.nameservers) dns.nameservers = c.dns.nameservers;
    if (c.dns.domain !== undefined) dns.domain = c.dns.domain;
    if (c.dns.search) dns.search = c.dns.search;
    if (c.dns.options) dns.options = c.dns.options;
    conf.dns = dns;
  }
  if (c.prevResult) {
    try {
      conf.prevResult = parseResult(c.prevResult, cniVersion, 'prevResult').result;
    } catch (err) {
      // A malformed prevResult is a bad key in a well-formed conf: code 7, like other keys.
      if (err instanceof WeftError && err.code === CniCode.DecodeFailure) {
        throw new WeftError(CniCode.InvalidNetworkConfig, err.message, err.details);
      }
      throw err;
    }
  }
  const va = c['cni.dev/valid-attachments'];
  if (va) conf.validAttachments = va;
  return conf;
}

/** Applies a plugin's own schema to the raw conf; failures are code 7 naming the key. */
export function parsePluginConfig<C>(schema: z.ZodType<C, z.ZodTypeDef, unknown>, raw: Record<string, unknown>): C {
  const r = schema.safeParse(raw);
  if (!r.success) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid network config: ${describeZodError(r.error)}`);
  }
  return r.data;
}

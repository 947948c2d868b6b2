// Backend types and the keys each one owns. The store's config parser asks this registry to
// validate `Backend`, and a lease's BackendData is parsed with the schema of its BackendType.
// The agent's backends attach their behaviour to these same entries by type name.
import { z } from 'zod';

export interface BackendSpec {
  readonly type: string;
  /** Schema for the keys of `Backend` other than `Type` (strict: unknown keys are rejected). */
  readonly config: z.ZodTypeAny;
  /** Schema for the lease's `BackendData` published by nodes running this backend. */
  readonly leaseData: z.ZodTypeAny;
  /**
   * True when `data` certainly passes `leaseData` as it is (the shape every node writes), so a
   * watcher decoding thousands of leases in a burst skips zod's object parse; false sends it to the
   * schema, whose message names what is wrong.
   */
  readonly leaseDataIsPlain?: (data: unknown) => boolean;
}

const specs = new Map<string, BackendSpec>();

export function registerBackend(spec: BackendSpec): void {
  if (specs.has(spec.type)) throw new Error(`backend type ${JSON.stringify(spec.type)} is registered twice`);
  specs.set(spec.type, spec);
}

export function backendSpec(type: string): BackendSpec | undefined {
  return specs.get(type);
}

export function backendTypes(): string[] {
  return [...specs.keys()];
}

const port = z.number().int().min(1).max(65535);
const mtu = z.number().int().min(576).max(65535);
const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const mac = z.string().regex(MAC_RE, 'expected a MAC address like 0a:58:0a:f4:03:01');
const asn = z.number().int().min(1).max(4294967295);
const ipv4 = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/, 'expected an IPv4 address');
const ipv4Cidr = z.string().regex(/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\/(3[0-2]|[12]?\d)$/, 'expected an IPv4 CIDR such as 10.99.0.0/16');

export const vxlanConfig = z.object({
  VNI: z.number().int().min(1).max(16777215).default(1),
  Port: port.default(8472),
  DirectRouting: z.boolean().default(false),
  MTU: mtu.optional(),
  GBP: z.boolean().default(false),
  Learning: z.boolean().default(false),
}).strict();
export type VxlanConfig = z.infer<typeof vxlanConfig>;

export const vxlanLeaseData = z.object({ VtepMAC: mac }).passthrough();
export type VxlanLeaseData = z.infer<typeof vxlanLeaseData>;
/** The shape every vxlan node writes, checked without zod (see BackendSpec.leaseDataIsPlain). */
export function vxlanLeaseDataIsPlain(d: unknown): boolean {
  return typeof d === 'object' && d !== null && !Array.isArray(d) && typeof (d as { VtepMAC?: unknown }).VtepMAC === 'string' && MAC_RE.test((d as { VtepMAC: string }).VtepMAC);
}

export const hostGwConfig = z.object({}).strict();

export const udpConfig = z.object({
  Port: port.default(8285),
  MTU: mtu.optional(),
}).strict();
export type UdpConfig = z.infer<typeof udpConfig>;

// bgp: every node speaks iBGP (AS `ASN`) to every other node (full mesh) and to `Peers` (eBGP
// when their ASN differs). `NodeMesh: false` drops the node-to-node sessions (nodes talk only to
// `Peers`, e.g. top-of-rack routers over eBGP). `RouteReflector: true` replaces the mesh: nodes peer only with the
// reflectors — the iBGP `Peers` (routers outside the cluster) and the cluster nodes whose PublicIP
// is in `RouteReflectorNodes`; those nodes reflect (RFC 4456) for every other node, with
// `RouteReflectorClusterID` (default: their own address) as the cluster id.
// `ImportPrefixes` opens the import policy beyond the cluster `Network`: a learned prefix is
// used (installed, passed on) only inside one of those ranges — and, whatever they say, never
// when it overlaps a subnet the host is connected to, contains its own next hop or a peer's
// address. `["0.0.0.0/0"]` lets any prefix in that passes those checks.
export const bgpConfig = z.object({
  ASN: asn.default(64512),
  Peers: z.array(z.object({ Address: ipv4, ASN: asn }).strict()).default([]),
  RouteReflector: z.boolean().default(false),
  RouteReflectorClusterID: ipv4.optional(),
  RouteReflectorNodes: z.array(ipv4).default([]),
  NodeMesh: z.boolean().default(true),
  /** Proposed BGP hold time, seconds (0 or 3..65535). */
  HoldTime: z.number().int().refine((h) => h === 0 || (h >= 3 && h <= 65535), 'expected 0 or 3..65535 seconds').default(90),
  /** How long peers keep our routes while weftd restarts (RFC 4724), and we keep theirs. */
  GracefulRestartTime: z.number().int().min(1).max(4095).default(120),
  /** IPv4 ranges, besides the cluster Network, whose learned prefixes may be installed. */
  ImportPrefixes: z.array(ipv4Cidr).default([]),
}).strict();
export type BgpConfig = z.infer<typeof bgpConfig>;

// Backends without lease data publish `null` or nothing; anything else is tolerated and ignored.
const noLeaseData = z.unknown();

registerBackend({
  type: 'vxlan', config: vxlanConfig, leaseData: vxlanLeaseData,
  leaseDataIsPlain: vxlanLeaseDataIsPlain,
});
registerBackend({ type: 'host-gw', config: hostGwConfig, leaseData: noLeaseData });
registerBackend({ type: 'udp', config: udpConfig, leaseData: noLeaseData });
registerBackend({ type: 'bgp', config: bgpConfig, leaseData: noLeaseData });

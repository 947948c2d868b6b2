// weftd's half of the subnet.env contract: write it atomically (temp file + rename, so a CNI
// plugin never reads half a file). A restarted node reads back the subnets its previous run held
// with readLeasedSubnets (src/cni/subnet-env.ts), the same reader as everyone else's.
import { renameSync, writeFileSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';
import { mkdirp } from '../fs/mkdir.js';
import { type Cidr, formatCidr, formatIP, nthAddress } from '../net/ip.js';

export interface SubnetFileContent {
  /** The IPv4 cluster network and the node's IPv4 subnet; absent on an IPv6-only network. */
  readonly network?: Cidr | undefined;
  /** The node's subnet (network address form); written as its first host address. */
  readonly subnet?: Cidr | undefined;
  /** The IPv6 cluster network and the node's IPv6 subnet (dual-stack or IPv6-only). */
  readonly ipv6Network?: Cidr | undefined;
  readonly ipv6Subnet?: Cidr | undefined;
  /** The pods' MTU: the smallest of what each family's dataplane carries. */
  readonly mtu: number;
  /** What the IPv6 dataplane carries (FLANNEL_IPV6_MTU), when IPv6 is on. */
  readonly ipv6Mtu?: number | undefined;
  readonly ipMasq: boolean;
  readonly backend: string;
  /** More KEY=VALUE lines from agent services (e.g. the CNI fast-path socket). */
  readonly extra?: ReadonlyMap<string, string>;
}

/** "10.244.3.1/24": the subnet's first host address with its prefix, as flanneld writes it. */
const firstHost = (c: Cidr): string => `${formatIP(nthAddress(c, 1))}/${c.prefix}`;

/** In flanneld's order: the IPv4 pair, the IPv6 pair, MTU and masquerade, then weft's own keys. */
export function renderSubnetFile(c: SubnetFileContent): string {
  const lines = [
    ...(c.network && c.subnet ? [`FLANNEL_NETWORK=${formatCidr(c.network)}`, `FLANNEL_SUBNET=${firstHost(c.subnet)}`] : []),
    ...(c.ipv6Network && c.ipv6Subnet ? [`FLANNEL_IPV6_NETWORK=${formatCidr(c.ipv6Network)}`, `FLANNEL_IPV6_SUBNET=${firstHost(c.ipv6Subnet)}`] : []),
    `FLANNEL_MTU=${c.mtu}`,
    ...(c.ipv6Mtu !== undefined && c.ipv6Subnet ? [`FLANNEL_IPV6_MTU=${c.ipv6Mtu}`] : []),
    `FLANNEL_IPMASQ=${c.ipMasq ? 'true' : 'false'}`,
    `WEFT_BACKEND=${c.backend}`,
  ];
  for (const [k, v] of c.extra ?? []) lines.push(`${k}=${v}`);
  return lines.join('\n') + '\n';
}

export function writeSubnetFile(path: string, c: SubnetFileContent): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  try {
    mkdirp(dir);
    writeFileSync(tmp, renderSubnetFile(c), { mode: 0o644 });
    renameSync(tmp, path);
  } catch (err) {
    throw new WeftError(CniCode.IoFailure, `cannot write subnet file ${path}: ${(err as Error).message}`);
  }
}

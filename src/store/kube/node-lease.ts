// A Node as a lease, read the way flannel's kube subnet manager reads one (pkg/subnet/kube,
// nodeToLease): the subnets are spec.podCIDRs, the rest is annotations under flannel's names.
// Which of them count depends on the network's address families, as flannel's EnableIPv4 /
// EnableIPv6 decide it: an IPv4-only network ignores a Node's IPv6 podCIDR and public-ipv6, an
// IPv6-only one its IPv4 podCIDR, public-ip and backend-data. Pure functions of the Node object,
// so the store's list, its watch and the node's own leaser agree on what a Node says.
import { type Cidr, tryParseCidr } from '../../net/ip.js';
import type { KubeObject } from '../../kube/informer.js';
import type { NetworkConfig } from '../config.js';
import { parseLeaseValue } from '../lease.js';
import type { RawEntry } from '../types.js';

export interface NodeObject extends KubeObject {
  readonly spec?: { readonly podCIDR?: string; readonly podCIDRs?: readonly string[] };
}

export interface NodeAnnotations {
  readonly publicIP: string;
  readonly publicIPv6: string;
  readonly backendType: string;
  readonly backendData: string;
  readonly backendV6Data: string;
  readonly subnetManager: string;
  /** Set by an operator to override what the node's agent publishes as public-ip. */
  readonly publicIPOverwrite: string;
  readonly publicIPv6Overwrite: string;
}

export function annotationNames(prefix: string): NodeAnnotations {
  return {
    publicIP: `${prefix}/public-ip`,
    publicIPv6: `${prefix}/public-ipv6`,
    backendType: `${prefix}/backend-type`,
    backendData: `${prefix}/backend-data`,
    backendV6Data: `${prefix}/backend-v6-data`,
    subnetManager: `${prefix}/kube-subnet-manager`,
    publicIPOverwrite: `${prefix}/public-ip-overwrite`,
    publicIPv6Overwrite: `${prefix}/public-ipv6-overwrite`,
  };
}

/** The network's address families: which halves of a Node make its lease. */
export interface LeaseFamilies {
  readonly ipv4: boolean;
  readonly ipv6: boolean;
}

export function familiesOf(config: NetworkConfig): LeaseFamilies {
  return { ipv4: config.ipv4 !== undefined, ipv6: config.ipv6 !== undefined };
}

export interface NodePodCidrs {
  readonly ipv4?: Cidr;
  readonly ipv6?: Cidr;
}

/**
 * The Node's pod CIDR of each family. spec.podCIDRs holds at most one per family, in either order
 * (an IPv6-primary cluster lists its IPv6 one first); podCIDR is its first entry, and the only
 * field an old API server or a hand-written Node may have. Entries that do not parse are skipped.
 */
export function nodePodCidrs(node: NodeObject): NodePodCidrs {
  const all = [...(node.spec?.podCIDRs ?? []), ...(node.spec?.podCIDR !== undefined ? [node.spec.podCIDR] : [])];
  let ipv4: Cidr | undefined;
  let ipv6: Cidr | undefined;
  for (const s of all) {
    const c = tryParseCidr(s);
    if (c?.ip.family === 4) ipv4 ??= c;
    else if (c?.ip.family === 6) ipv6 ??= c;
  }
  return { ...(ipv4 && { ipv4 }), ...(ipv6 && { ipv6 }) };
}

/** What a Node says as a lease entry, with what is wrong or missing in it. */
export interface NodeEntry {
  readonly entry: RawEntry;
  /**
   * Why the lease parser will reject the entry's value (the watcher then skips the Node): said
   * here with the annotation's name, because the watcher's own warning can only name the subnet.
   */
  readonly unreadable?: string;
  /** The IPv6 half a dual-stack network expects and the Node lacks: delivered without it. */
  readonly missing?: string;
}

/** A resourceVersion as the store's revision (opaque to clients, but etcd's counter in practice). */
export function revisionOf(rv: string | undefined): bigint {
  return rv !== undefined && /^\d+$/.test(rv) ? BigInt(rv) : 0n;
}

/**
 * The Node's lease entry, or undefined while it is not a lease yet: no pod CIDR of the lease's
 * own family (IPv4, or IPv6 on an IPv6-only network), or no public address or backend type
 * published (registered, agent not up). A dual-stack network's peer without an IPv6 podCIDR or
 * public-ipv6 is still a lease, of IPv4 only: the backends skip the IPv6 half of such a peer, so
 * its IPv4 pods stay reachable while the cluster is being moved to dual-stack.
 *
 * `families` undefined (a reader without the network config, e.g. weftctl): every family the
 * Node has.
 */
export function nodeLeaseEntry(node: NodeObject, names: NodeAnnotations, families?: LeaseFamilies): NodeEntry | undefined {
  const cidrs = nodePodCidrs(node);
  const fam = families ?? { ipv4: cidrs.ipv4 !== undefined, ipv6: cidrs.ipv6 !== undefined };
  const a = node.metadata.annotations ?? {};
  const pick = (overwrite: string, own: string): { name: string; value: string } | undefined => {
    const o = a[overwrite];
    if (o) return { name: overwrite, value: o };
    const v = a[own];
    return v ? { name: own, value: v } : undefined;
  };
  const publicIP = fam.ipv4 ? pick(names.publicIPOverwrite, names.publicIP) : undefined;
  const publicIPv6 = fam.ipv6 ? pick(names.publicIPv6Overwrite, names.publicIPv6) : undefined;
  const backendType = a[names.backendType];
  const subnet = fam.ipv4 ? cidrs.ipv4 : cidrs.ipv6;
  // An IPv6-only lease is known by its IPv6 address alone (flannel does not read public-ip there).
  if (!subnet || !backendType || !(fam.ipv4 ? publicIP : publicIPv6)) return undefined;
  const ipv6Subnet = fam.ipv6 ? cidrs.ipv6 : undefined;
  const base = { subnet, ...(ipv6Subnet && { ipv6Subnet }), revision: revisionOf(node.metadata.resourceVersion), expiresAt: null };
  const name = node.metadata.name;

  const json = (annotation: string): { ok: true; value: unknown } | { ok: false; reason: string } => {
    const raw = a[annotation];
    // flannel writes "null" where a backend publishes nothing (host-gw).
    if (raw === undefined || raw === '' || raw === 'null') return { ok: true, value: null };
    try {
      return { ok: true, value: JSON.parse(raw) };
    } catch {
      return { ok: false, reason: `annotation ${annotation} is not JSON: ${JSON.stringify(raw.slice(0, 120))}` };
    }
  };
  const data = fam.ipv4 ? json(names.backendData) : { ok: true as const, value: null };
  const data6 = fam.ipv6 ? json(names.backendV6Data) : { ok: true as const, value: null };
  for (const d of [data, data6]) {
    if (!d.ok) return { entry: { ...base, value: `node ${name}: ${d.reason}` }, unreadable: d.reason };
  }
  const value = JSON.stringify({
    PublicIP: publicIP?.value ?? '0.0.0.0',
    ...(publicIPv6 && { PublicIPv6: publicIPv6.value }),
    BackendType: backendType,
    ...(data.ok && data.value !== null && { BackendData: data.value }),
    ...(data6.ok && data6.value !== null && { BackendV6Data: data6.value }),
  });
  const parsed = parseLeaseValue(value);
  if (!parsed.ok) {
    // The parser names the lease field; the operator fixes the annotation it came from.
    const from = parsed.reason.startsWith('PublicIPv6:') ? publicIPv6?.name : parsed.reason.startsWith('PublicIP:') ? publicIP?.name : undefined;
    return { entry: { ...base, value }, unreadable: from ? `${parsed.reason} (annotation ${from})` : parsed.reason };
  }
  let missing: string | undefined;
  if (fam.ipv4 && fam.ipv6) {
    const lacks = [...(ipv6Subnet ? [] : ['IPv6 spec.podCIDR']), ...(publicIPv6 ? [] : [`annotation ${names.publicIPv6}`])];
    if (lacks.length > 0) missing = `no ${lacks.join(' and no ')}; its pods are reached over IPv4 only`;
  }
  return { entry: { ...base, value }, ...(missing && { missing }) };
}

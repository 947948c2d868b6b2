// Nodes as flannel's kube subnet manager leaves them, and leases as text, for the kube store's
// tests: the Node → lease unit tests (kube-node-lease) and the suite against a real kube-apiserver
// (test/cluster/kube-store-dualstack). Pure data, nothing to start.
import { formatCidr, formatIP } from '../../src/net/ip.js';
import type { Lease } from '../../src/store/lease.js';

/** flannel's annotation prefix (its --kube-annotation-prefix default). */
export const FLANNEL_PREFIX = 'flannel.alpha.coreos.com';

export interface FlannelNode {
  readonly publicIP: string;
  readonly publicIPv6: string;
  /** The VTEP MACs of the IPv4 and the IPv6 vxlan device. */
  readonly mac4: string;
  readonly mac6: string;
}

/** What flanneld v0.2x publishes on a dual-stack vxlan node (pkg/subnet/kube AcquireLease with PublicIPv6 set); `extra` overrides. */
export function flannelDualAnnotations(n: FlannelNode, extra: Record<string, string> = {}): Record<string, string> {
  const P = FLANNEL_PREFIX;
  return {
    [`${P}/backend-type`]: 'vxlan',
    [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${n.mac4}"}`,
    [`${P}/backend-v6-data`]: `{"VNI":1,"VtepMAC":"${n.mac6}"}`,
    [`${P}/public-ip`]: n.publicIP,
    [`${P}/public-ipv6`]: n.publicIPv6,
    [`${P}/kube-subnet-manager`]: 'true',
    ...extra,
  };
}

/** A lease as text, every field a backend reads; no lease, undefined. */
export function showLease(l: Lease | undefined): Record<string, unknown> | undefined {
  if (!l) return undefined;
  return {
    subnet: formatCidr(l.subnet),
    ipv6Subnet: l.ipv6Subnet && formatCidr(l.ipv6Subnet),
    publicIP: formatIP(l.attrs.publicIP),
    publicIPv6: l.attrs.publicIPv6 && formatIP(l.attrs.publicIPv6),
    backendType: l.attrs.backendType,
    backendData: l.attrs.backendData,
    backendV6Data: l.attrs.backendV6Data,
  };
}

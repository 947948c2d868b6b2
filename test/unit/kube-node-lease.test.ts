// A Node as a lease (src/store/kube/node-lease.ts), as flannel's kube subnet manager reads one:
// both families of spec.podCIDRs, the IPv6 annotations, IPv6-only networks, a dual-stack peer
// still without its IPv6 half, and annotations nobody can read. The Nodes are what the API server
// hands out (flannel v0.2x's annotations for vxlan and host-gw); the lease is checked through
// parseLease, the same parser the lease watcher applies to every store's entries.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, formatIP } from '../../src/net/ip.js';
import { type Lease, parseLease } from '../../src/store/lease.js';
import { type LeaseFamilies, type NodeEntry, type NodeObject, annotationNames, nodeLeaseEntry, nodePodCidrs } from '../../src/store/kube/node-lease.js';
import { FLANNEL_PREFIX, flannelDualAnnotations, showLease } from './kube-node-fixtures.js';

const P = FLANNEL_PREFIX;
const names = annotationNames(P);
const DUAL: LeaseFamilies = { ipv4: true, ipv6: true };
const V4: LeaseFamilies = { ipv4: true, ipv6: false };
const V6: LeaseFamilies = { ipv4: false, ipv6: true };

const MAC4 = '0a:58:c6:12:00:0b';
const MAC6 = '0a:58:c6:12:06:0b';

function node(podCIDRs: readonly string[] | undefined, annotations: Record<string, string>, name = 'n1'): NodeObject {
  return {
    metadata: { name, resourceVersion: '4711', annotations },
    ...(podCIDRs !== undefined && { spec: { ...(podCIDRs[0] !== undefined && { podCIDR: podCIDRs[0] }), podCIDRs } }),
  };
}

/** What flanneld v0.2x writes on this dual-stack vxlan node; `extra` overrides. */
const flannelDual = (extra: Record<string, string> = {}): Record<string, string> =>
  flannelDualAnnotations({ publicIP: '198.18.0.11', publicIPv6: '2001:2::11', mac4: MAC4, mac6: MAC6 }, extra);

function lease(r: NodeEntry | undefined): Lease {
  assert.ok(r, 'the Node is a lease');
  assert.equal(r.unreadable, undefined);
  const p = parseLease(r.entry);
  assert.ok(p.ok, p.ok ? '' : p.reason);
  return p.lease;
}

/** The entry is skipped by the watcher (its value does not parse) and why, as the store warns. */
function unreadable(r: NodeEntry | undefined): string {
  assert.ok(r, 'an unreadable Node is still an entry (the watcher drops what it had for it)');
  assert.equal(parseLease(r.entry).ok, false, 'the lease parser rejects it');
  assert.ok(r.unreadable !== undefined);
  return r.unreadable;
}

describe('nodePodCidrs', () => {
  it('takes one CIDR per family from podCIDRs in either order, falls back to podCIDR, skips garbage', () => {
    const show2 = (n: NodeObject) => {
      const c = nodePodCidrs(n);
      return [c.ipv4 && formatCidr(c.ipv4), c.ipv6 && formatCidr(c.ipv6)];
    };
    assert.deepEqual(show2(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], {})), ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    assert.deepEqual(show2(node(['fd00:10:244:1::/64', '10.244.1.0/24'], {})), ['10.244.1.0/24', 'fd00:10:244:1::/64']);
    assert.deepEqual(show2({ metadata: { name: 'old' }, spec: { podCIDR: 'fd00:10:244:2::/64' } }), [undefined, 'fd00:10:244:2::/64']);
    assert.deepEqual(show2(node(['nonsense', '10.244.1.0/24'], {})), ['10.244.1.0/24', undefined]);
    assert.deepEqual(show2(node(undefined, {})), [undefined, undefined]);
  });
});

describe('a Node as a lease', () => {
  it('dual-stack: IPv4 podCIDR → subnet, IPv6 → ipv6Subnet, public-ipv6 and backend-v6-data as flannel writes them', () => {
    const want = {
      subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64', publicIP: '198.18.0.11', publicIPv6: '2001:2::11',
      backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: MAC4 }, backendV6Data: { VNI: 1, VtepMAC: MAC6 },
    };
    const r = nodeLeaseEntry(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], flannelDual()), names, DUAL);
    assert.deepEqual(showLease(lease(r)), want);
    assert.equal(r?.missing, undefined);
    assert.equal(r?.entry.revision, 4711n);
    assert.equal(r?.entry.expiresAt, null, 'a Node has no TTL');
    // An IPv6-primary cluster lists the IPv6 CIDR first (and podCIDR is it): the same lease.
    assert.deepEqual(showLease(lease(nodeLeaseEntry(node(['fd00:10:244:1::/64', '10.244.1.0/24'], flannelDual()), names, DUAL))), want);
  });

  it('host-gw publishes "null" backend data for both families: read as none', () => {
    const l = lease(nodeLeaseEntry(node(['10.244.3.0/24', 'fd00:10:244:3::/64'], flannelDual({
      [`${P}/backend-type`]: 'host-gw', [`${P}/backend-data`]: 'null', [`${P}/backend-v6-data`]: 'null',
    })), names, DUAL));
    assert.equal(l.attrs.backendData, null);
    assert.equal(l.attrs.backendV6Data, undefined);
    assert.equal(l.ipv6Subnet && formatCidr(l.ipv6Subnet), 'fd00:10:244:3::/64');
  });

  it('IPv4-only network: a dual-stack Node is read as IPv4 only, its IPv6 annotations ignored even when garbage', () => {
    const r = nodeLeaseEntry(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], flannelDual({
      [`${P}/public-ipv6`]: 'not-an-ip', [`${P}/backend-v6-data`]: '{oops',
    })), names, V4);
    assert.deepEqual(showLease(lease(r)), {
      subnet: '10.244.1.0/24', ipv6Subnet: undefined, publicIP: '198.18.0.11', publicIPv6: undefined,
      backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: MAC4 }, backendV6Data: undefined,
    });
    assert.equal(r?.missing, undefined);
  });

  it('IPv6-only network: subnet = ipv6Subnet = the IPv6 podCIDR, known by public-ipv6; public-ip and backend-data ignored', () => {
    const annotations = {
      [`${P}/backend-type`]: 'vxlan',
      [`${P}/backend-v6-data`]: `{"VNI":1,"VtepMAC":"${MAC6}"}`,
      [`${P}/public-ipv6`]: '2001:2::21',
      // What a host-gw flanneld on an IPv6-only network leaves (its PublicIP is an empty IPv4),
      // and garbage: neither is read.
      [`${P}/public-ip`]: '0.0.0.0',
      [`${P}/backend-data`]: '{oops',
    };
    const r = nodeLeaseEntry(node(['fd00:10:244:21::/64'], annotations), names, V6);
    const l = lease(r);
    assert.deepEqual(showLease(l), {
      subnet: 'fd00:10:244:21::/64', ipv6Subnet: 'fd00:10:244:21::/64', publicIP: '2001:2::21', publicIPv6: '2001:2::21',
      backendType: 'vxlan', backendData: null, backendV6Data: { VNI: 1, VtepMAC: MAC6 },
    });
    assert.equal(r?.missing, undefined);
    // Without public-ipv6 the node's agent has not published yet: not a lease.
    const { [`${P}/public-ipv6`]: _, ...noV6 } = annotations;
    assert.equal(nodeLeaseEntry(node(['fd00:10:244:21::/64'], noV6), names, V6), undefined);
    // An IPv4 podCIDR alone is no IPv6-only lease.
    assert.equal(nodeLeaseEntry(node(['10.244.21.0/24'], annotations), names, V6), undefined);
  });

  it('dual-stack network, a peer without an IPv6 podCIDR or public-ipv6: delivered with its IPv4 half, saying what it lacks', () => {
    const noCidr = nodeLeaseEntry(node(['10.244.4.0/24'], flannelDual()), names, DUAL);
    const l = lease(noCidr);
    assert.equal(l.ipv6Subnet, undefined);
    assert.equal(formatCidr(l.subnet), '10.244.4.0/24');
    assert.match(noCidr?.missing ?? '', /^no IPv6 spec\.podCIDR;/);
    assert.match(noCidr?.missing ?? '', /IPv4 only/);

    // A flanneld started before IPv6 was enabled: IPv4 annotations only.
    const v4Only = {
      [`${P}/backend-type`]: 'vxlan', [`${P}/backend-data`]: `{"VNI":1,"VtepMAC":"${MAC4}"}`, [`${P}/public-ip`]: '198.18.0.12',
    };
    const noAnn = nodeLeaseEntry(node(['10.244.5.0/24', 'fd00:10:244:5::/64'], v4Only), names, DUAL);
    const l2 = lease(noAnn);
    assert.equal(l2.ipv6Subnet && formatCidr(l2.ipv6Subnet), 'fd00:10:244:5::/64');
    assert.equal(l2.attrs.publicIPv6, undefined, 'the backends skip an IPv6 half without an address');
    assert.match(noAnn?.missing ?? '', new RegExp(`annotation ${P}/public-ipv6`));

    // Without an IPv4 podCIDR a dual-stack network has no lease for it at all (flannel: "missing IPv4 address").
    assert.equal(nodeLeaseEntry(node(['fd00:10:244:6::/64'], flannelDual()), names, DUAL), undefined);
  });

  it('not a lease yet: no podCIDR, no backend-type, no public-ip', () => {
    assert.equal(nodeLeaseEntry(node(undefined, flannelDual()), names, DUAL), undefined);
    const { [`${P}/backend-type`]: _t, ...noType } = flannelDual();
    assert.equal(nodeLeaseEntry(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], noType), names, DUAL), undefined);
    const { [`${P}/public-ip`]: _ip, ...noIP } = flannelDual();
    assert.equal(nodeLeaseEntry(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], noIP), names, DUAL), undefined);
  });

  it('the *-overwrite annotations an operator sets win over what the agent published', () => {
    const l = lease(nodeLeaseEntry(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], flannelDual({
      [`${P}/public-ip-overwrite`]: '198.18.1.11', [`${P}/public-ipv6-overwrite`]: '2001:2:0:1::11',
    })), names, DUAL));
    assert.equal(formatIP(l.attrs.publicIP), '198.18.1.11');
    assert.equal(l.attrs.publicIPv6 && formatIP(l.attrs.publicIPv6), '2001:2:0:1::11');
  });

  it('garbage annotations make an entry the watcher skips, the reason naming the annotation', () => {
    const cidrs = ['10.244.1.0/24', 'fd00:10:244:1::/64'];
    assert.match(unreadable(nodeLeaseEntry(node(cidrs, flannelDual({ [`${P}/backend-v6-data`]: '{VNI:1, "VtepMAC": oops' })), names, DUAL)),
      new RegExp(`annotation ${P}/backend-v6-data is not JSON`));
    assert.match(unreadable(nodeLeaseEntry(node(cidrs, flannelDual({ [`${P}/backend-data`]: '{oops' })), names, DUAL)),
      new RegExp(`annotation ${P}/backend-data is not JSON`));
    assert.match(unreadable(nodeLeaseEntry(node(cidrs, flannelDual({ [`${P}/public-ipv6`]: '198.18.0.11' })), names, DUAL)),
      new RegExp(`^PublicIPv6: expected an IPv6 address, got "198\\.18\\.0\\.11" \\(annotation ${P}/public-ipv6\\)$`));
    assert.match(unreadable(nodeLeaseEntry(node(cidrs, flannelDual({ [`${P}/public-ipv6-overwrite`]: 'nope' })), names, DUAL)),
      new RegExp(`\\(annotation ${P}/public-ipv6-overwrite\\)$`));
    assert.match(unreadable(nodeLeaseEntry(node(cidrs, flannelDual({ [`${P}/public-ip`]: '198.18.0.300' })), names, DUAL)),
      new RegExp(`^PublicIP: expected an IPv4 address, got "198\\.18\\.0\\.300" \\(annotation ${P}/public-ip\\)$`));
    assert.match(unreadable(nodeLeaseEntry(node(['fd00:10:244:21::/64'], { [`${P}/backend-type`]: 'vxlan', [`${P}/public-ipv6`]: 'fd00::zz' }), names, V6)),
      /PublicIPv6: expected an IPv6 address/);
    // A garbage podCIDR next to a good one of the other family: the good one stands.
    assert.equal(formatCidr(lease(nodeLeaseEntry(node(['10.244.1.0/24', 'fd00::gg/64'], flannelDual()), names, V4)).subnet), '10.244.1.0/24');
  });

  it('without the network config (weftctl): every family the Node has', () => {
    const dual = lease(nodeLeaseEntry(node(['10.244.1.0/24', 'fd00:10:244:1::/64'], flannelDual()), names));
    assert.equal(dual.ipv6Subnet && formatCidr(dual.ipv6Subnet), 'fd00:10:244:1::/64');
    const only6 = lease(nodeLeaseEntry(node(['fd00:10:244:21::/64'], { [`${P}/backend-type`]: 'host-gw', [`${P}/public-ipv6`]: '2001:2::21' }), names));
    assert.equal(formatCidr(only6.subnet), 'fd00:10:244:21::/64');
    assert.equal(only6.ipv6Subnet, only6.subnet);
    assert.equal(formatIP(only6.attrs.publicIP), '2001:2::21');
  });
});

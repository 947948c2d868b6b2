// The doctor's pure parts: which NetworkPolicy it names, how it finds pods from what was typed,
// the lease checks, and the text report's shape. The kernel hops are in test/cluster/doctor.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { parsePolicy, type Endpoint, type PolicyWorld } from '../../src/policy/model.js';
import type { Lease } from '../../src/store/lease.js';
import { policyHop } from '../../src/doctor/policy.js';
import { peerLeaseHop, sameNode } from '../../src/doctor/lease.js';
import { resolvePod, type Topology } from '../../src/doctor/locate.js';
import { renderReport } from '../../src/doctor/render.js';
import type { DoctorContext, DoctorNode, DoctorPod, DoctorReport } from '../../src/doctor/types.js';

const node = (name: string, subnet: string): DoctorNode => ({
  name, nsName: `ns-${name}`, nsPath: `/run/netns/ns-${name}`, subnetFile: `/x/${name}/subnet.env`,
  env: { mtu: 1450, ipMasq: true, network: parseCidr('10.244.0.0/16'), subnet: parseCidr(subnet) },
});
const h0 = node('h0', '10.244.0.1/24');
const h1 = node('h1', '10.244.1.1/24');

const pod = (name: string, ip: string, n: DoctorNode, id = `cid-${name}`): DoctorPod => ({
  name, ip: parseIP(ip), containerId: id, ifname: 'eth0', place: { nsName: `ns-${name}`, nsPath: `/run/netns/ns-${name}` }, node: n, nodeName: n.name,
});
const a = pod('a', '10.244.0.2', h0, 'abcdef0123456789');
const b = pod('b', '10.244.1.2', h1);

const ep = (p: string, ip: string, host: string, labels: Record<string, string> = {}): Endpoint => ({
  namespace: 'web', pod: p, labels, ips: [parseIP(ip)], host, ifname: 'eth0',
});

const lease = (subnet: string, publicIP: string, backendType = 'vxlan', expiresAt: number | null = Date.now() + 60_000): Lease => ({
  subnet: parseCidr(subnet), attrs: { publicIP: parseIP(publicIP), publicIPv6: undefined, backendType, backendData: { VtepMAC: '02:00:00:00:00:01' } },
  expiresAt, revision: 1n,
});

function ctx(over: Partial<DoctorContext> = {}): DoctorContext {
  return {
    src: a, dst: b, probe: { protocol: 'TCP', port: 80 }, leases: [lease('10.244.0.0/24', '198.18.0.1'), lease('10.244.1.0/24', '198.18.0.2')],
    backend: { type: 'vxlan', settings: { VNI: 1 } }, world: undefined, storeFlags: '--store file --store-dir /s', now: Date.now(), srcAgent: undefined,
    ...over,
  };
}

function world(policies: unknown[]): PolicyWorld {
  return {
    endpoints: [ep('a', '10.244.0.2', 'h0', { app: 'client' }), ep('b', '10.244.1.2', 'h1', { app: 'server' })],
    namespaces: [{ name: 'web', labels: {} }],
    policies: policies.map((p) => parsePolicy(p)),
  };
}

const denyIngress = { metadata: { name: 'lockdown', namespace: 'web' }, spec: { podSelector: { matchLabels: { app: 'server' } }, policyTypes: ['Ingress'] } };
const allowClient = {
  metadata: { name: 'from-client', namespace: 'web' },
  spec: { podSelector: { matchLabels: { app: 'server' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 80 }] }] },
};
const denyEgress = { metadata: { name: 'no-out', namespace: 'web' }, spec: { podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'] } };

describe('doctor policy hop', () => {
  it('passes when no policy selects either end, and says so', async () => {
    const h = await policyHop(ctx({ world: world([]) }));
    assert.equal(h.status, 'ok');
    assert.match(h.detail, /no policy selects web\/a or web\/b/);
  });

  it('names the ingress policy that isolates the destination and admits nothing', async () => {
    const h = await policyHop(ctx({ world: world([denyIngress]) }));
    assert.equal(h.status, 'fail');
    assert.equal(h.cause, 'denied by NetworkPolicy web/lockdown');
    assert.match(h.detail, /web\/lockdown isolates web\/b for ingress and no ingress rule admits web\/a/);
    assert.match(h.fix ?? '', /weftctl policy delete lockdown -n web --store file --store-dir \/s$/);
  });

  it('passes once another policy admits the connection, naming what selects it', async () => {
    const h = await policyHop(ctx({ world: world([denyIngress, allowClient]) }));
    assert.equal(h.status, 'ok');
    assert.match(h.detail, /allowed by .*web\/from-client/);
  });

  it('evaluates the protocol and port given: the allowing rule is TCP 80 only', async () => {
    assert.equal((await policyHop(ctx({ world: world([allowClient]), probe: { protocol: 'TCP', port: 81 } }))).status, 'fail');
    assert.equal((await policyHop(ctx({ world: world([allowClient]), probe: { protocol: 'ICMP', port: 0 } }))).status, 'fail');
  });

  it('names an egress policy at the source', async () => {
    const h = await policyHop(ctx({ world: world([denyEgress]) }));
    assert.equal(h.status, 'fail');
    assert.match(h.detail, /web\/no-out isolates web\/a for egress/);
    assert.match(h.fix ?? '', /add an egress rule/);
  });

  it('skips when the store could not be read', async () => {
    assert.equal((await policyHop(ctx({ world: undefined }))).status, 'skip');
  });
});

describe('doctor lease hop', () => {
  it('fails when no lease covers the destination', () => {
    const h = peerLeaseHop(ctx({ leases: [lease('10.244.0.0/24', '198.18.0.1')] }));
    assert.equal(h.status, 'fail');
    assert.match(h.detail, /no live lease covers 10\.244\.1\.2/);
  });

  it('fails on a lease of another backend, and on an expired one', () => {
    assert.match(peerLeaseHop(ctx({ leases: [lease('10.244.1.0/24', '198.18.0.2', 'host-gw')] })).detail, /runs backend host-gw, the network config says vxlan/);
    const old = peerLeaseHop(ctx({ leases: [lease('10.244.1.0/24', '198.18.0.2', 'vxlan', Date.now() - 1000)] }));
    assert.equal(old.status, 'fail');
    assert.match(old.cause ?? '', /run out/);
  });

  it('is OK for a live lease of the configured backend and names its node', () => {
    const h = peerLeaseHop(ctx());
    assert.equal(h.status, 'ok');
    assert.match(h.detail, /^10\.244\.1\.0\/24 → 198\.18\.0\.2 \(vxlan\)/);
  });

  it('knows pods of one node by node name or by the source node\'s subnet', () => {
    assert.equal(sameNode(ctx()), false);
    assert.equal(sameNode(ctx({ dst: pod('c', '10.244.0.9', h0) })), true);
    assert.equal(sameNode(ctx({ dst: { ...pod('d', '10.244.0.10', h0), nodeName: undefined, node: undefined } })), true);
  });
});

describe('doctor pod resolution', () => {
  const topo: Topology = { nodes: [h0, h1], pods: [a, b, pod('web/a', '10.244.1.3', h1)], local: undefined };
  const store = [ep('far', '10.244.7.2', 'h7')];

  it('finds a pod by IP, name and container id (or a 6+ character prefix of it)', () => {
    assert.equal(resolvePod('10.244.1.2', topo, []).name, 'b');
    assert.equal(resolvePod('b', topo, []).name, 'b');
    assert.equal(resolvePod('abcdef0123456789', topo, []).name, 'a');
    assert.equal(resolvePod('abcdef', topo, []).name, 'a');
  });

  it('refuses a name that matches two pods, naming them', () => {
    assert.throws(() => resolvePod('a', topo, []), /names 2 pods \(a, web\/a\)/);
  });

  it('finds a pod of another node through the store, without a namespace to enter', () => {
    const p = resolvePod('web/far', topo, store);
    assert.equal(p.nodeName, 'h7');
    assert.equal(p.place, undefined);
    assert.equal(p.name, 'web/far');
  });

  it('takes an unknown IP as a bare destination, and refuses an unknown name', () => {
    const p = resolvePod('10.9.9.9', topo, store);
    assert.equal(p.name, '10.9.9.9');
    assert.equal(p.node, undefined);
    assert.throws(() => resolvePod('nope', topo, store), /no pod "nope"/);
  });
});

describe('doctor text report', () => {
  it('prints each hop, cause and fix under a broken one, and where the path breaks last', () => {
    const r: DoctorReport = {
      src: { name: 'a', ip: '10.244.0.2', node: 'h0' }, dst: { name: 'b', ip: '10.244.1.2', node: 'h1' },
      probe: { protocol: 'ICMP', port: 0 }, ok: false,
      hops: [
        { id: 'src-pod-interface', where: 'pod a', title: 'source pod interface eth0', status: 'ok', detail: 'eth0 up' },
        { id: 'vxlan-fdb', where: 'node h0', title: 'FDB', status: 'fail', detail: 'no FDB entry', cause: 'drops', fix: 'bridge fdb replace …' },
        { id: 'policy', where: 'policy', title: 'NetworkPolicy', status: 'skip', detail: 'n/a' },
      ],
      firstFailure: { id: 'vxlan-fdb', where: 'node h0', title: 'FDB', status: 'fail', detail: 'no FDB entry', cause: 'drops', fix: 'bridge fdb replace …' },
    };
    const lines = renderReport(r).trimEnd().split('\n');
    assert.equal(lines[0], 'a (10.244.0.2 on h0) → b (10.244.1.2 on h1), ICMP');
    assert.match(lines[1] ?? '', /^ {2}OK {4}pod a {4}source pod interface eth0: eth0 up$/);
    assert.match(lines[2] ?? '', /^ {2}FAIL {2}node h0 {2}FDB: no FDB entry$/);
    assert.match(lines[3] ?? '', /cause: drops$/);
    assert.match(lines[4] ?? '', /fix: {3}bridge fdb replace …$/);
    assert.match(lines[5] ?? '', /^ {2}-- {4}policy/);
    assert.equal(lines[6], 'broken at vxlan-fdb (node h0): drops');
  });
});

// The bgp backend's pure parts: who to peer with (mesh, NodeMesh:false, route reflection), the
// rack router's BIRD config text, and weftctl bgp status rendering/parsing.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planPeers } from '../../src/backends/bgp/plan.js';
import { skippedLeases } from '../../src/backends/bgp/skipped.js';
import { bgpStatusSchema, formatUptime, renderBgpStatus } from '../../src/cli/bgp.js';
import { renderRackBirdConfig } from '../../src/lab/racks.js';
import { parseCidr, parseIPv4 } from '../../src/net/ip.js';
import { bgpConfig } from '../../src/backends/bgp/bgp.js';
import type { Lease } from '../../src/store/lease.js';

function lease(subnet: string, ip: string, backendType = 'bgp'): Lease {
  return { subnet: parseCidr(subnet), attrs: { publicIP: parseIPv4(ip), publicIPv6: undefined, backendType, backendData: null }, expiresAt: undefined, revision: 1n };
}

const others = [lease('10.244.2.0/24', '198.18.0.2'), lease('10.244.3.0/24', '198.18.0.3'), lease('10.244.4.0/24', '198.18.0.4', 'vxlan')];
const me = parseIPv4('198.18.0.1');

describe('skippedLeases (what /peers says a bgp pass did not program)', () => {
  it('a peer is programmed when its subnet has a bgp route in the kernel; otherwise the first reason that applies', () => {
    const peers = [
      lease('10.244.2.0/24', '198.18.0.2'), // installed
      lease('10.244.3.0/24', '198.18.0.3'), // held by a static route
      lease('10.244.4.0/24', '198.18.0.4', 'vxlan'), // another backend, nothing learnt
      lease('10.244.5.0/24', '198.18.1.5'), // learnt, next hop unreachable
      lease('10.244.6.0/24', '198.18.0.6'), // nothing learnt yet
      lease('10.244.7.0/24', '198.18.0.7', 'host-gw'), // another backend, but a router carries it
    ];
    const skipped = skippedLeases(peers, {
      installed: new Set(['10.244.2.0/24', '10.244.7.0/24']),
      learnt: new Map([['10.244.2.0/24', '198.18.0.2'], ['10.244.3.0/24', '198.18.0.3'], ['10.244.5.0/24', '198.18.1.5'], ['10.244.7.0/24', '198.18.0.254']]),
      held: new Map([['10.244.3.0/24', 4]]),
    });
    assert.deepEqual(skipped, [
      { subnet: '10.244.3.0/24', reason: 'bgp: 10.244.3.0/24 is held by another route in the kernel (proto static (4)); not replaced' },
      { subnet: '10.244.4.0/24', reason: 'peer 10.244.4.0/24 (198.18.0.4) runs backend vxlan, not bgp; not peered, and no route for it learnt' },
      { subnet: '10.244.5.0/24', reason: 'bgp: 10.244.5.0/24 via 198.18.1.5: no route to the next hop; not installed' },
      { subnet: '10.244.6.0/24', reason: 'peer 10.244.6.0/24 (198.18.0.6): no route for it learnt over BGP (yet); nothing installed' },
    ]);
  });
});

describe('planPeers', () => {
  it('full mesh: every bgp node over iBGP plus configured routers; other backends reported, not peered', () => {
    const plan = planPeers(bgpConfig.parse({ Peers: [{ Address: '198.18.0.254', ASN: 65000 }] }), me, others);
    assert.deepEqual(plan.peers.map((p) => [p.address, p.asn, p.rrClient, p.origin]), [
      ['198.18.0.2', 64512, false, 'node'], ['198.18.0.254', 65000, false, 'configured'], ['198.18.0.3', 64512, false, 'node'],
    ]);
    assert.equal(plan.reflector, false);
    assert.equal(plan.clusterId, undefined);
    assert.deepEqual(plan.skipped, ['node 198.18.0.4 runs backend vxlan, not bgp; not peered']);
  });

  it('a lease at our own address is not a peer', () => {
    assert.deepEqual(planPeers(bgpConfig.parse({}), me, [lease('10.244.9.0/24', '198.18.0.1')]).peers, []);
  });

  it('NodeMesh: false keeps only the configured peers', () => {
    const plan = planPeers(bgpConfig.parse({ NodeMesh: false, Peers: [{ Address: '198.18.255.254', ASN: 65000 }] }), me, others);
    assert.deepEqual(plan.peers.map((p) => p.address), ['198.18.255.254']);
  });

  it('RouteReflector with an external reflector: clients peer only with it', () => {
    const plan = planPeers(bgpConfig.parse({ RouteReflector: true, Peers: [{ Address: '198.18.255.254', ASN: 64512 }] }), me, others);
    assert.deepEqual(plan.peers.map((p) => [p.address, p.asn, p.rrClient]), [['198.18.255.254', 64512, false]]);
  });

  it('RouteReflectorNodes: a listed node reflects for all others (rr-client), other reflectors are plain iBGP', () => {
    const cfg = bgpConfig.parse({ RouteReflector: true, RouteReflectorNodes: ['198.18.0.1', '198.18.0.3'], RouteReflectorClusterID: '1.1.1.1' });
    const asReflector = planPeers(cfg, me, others);
    assert.equal(asReflector.reflector, true);
    assert.equal(asReflector.clusterId, '1.1.1.1');
    assert.deepEqual(asReflector.peers.map((p) => [p.address, p.rrClient]), [['198.18.0.2', true], ['198.18.0.3', false]]);
    const asClient = planPeers(cfg, parseIPv4('198.18.0.2'), [lease('10.244.1.0/24', '198.18.0.1'), ...others]);
    assert.equal(asClient.reflector, false);
    assert.deepEqual(asClient.peers.map((p) => [p.address, p.rrClient]), [['198.18.0.1', false], ['198.18.0.3', false]]);
  });

  it('cluster id defaults to the reflector\'s own address', () => {
    const plan = planPeers(bgpConfig.parse({ RouteReflector: true, RouteReflectorNodes: ['198.18.0.1'] }), me, []);
    assert.equal(plan.clusterId, '198.18.0.1');
  });
});

describe('bgp config keys', () => {
  it('rejects a bad hold time and an unknown key, naming them', () => {
    assert.match(bgpConfig.safeParse({ HoldTime: 2 }).error?.issues[0]?.message ?? '', /0 or 3\.\.65535/);
    assert.equal(bgpConfig.safeParse({ HoldTime: 0 }).success, true);
    const r = bgpConfig.safeParse({ Mesh: true });
    assert.equal(r.success, false);
    assert.match(JSON.stringify(r.error?.issues), /Mesh/);
  });
});

describe('rack router BIRD config', () => {
  // Whether BIRD itself accepts it is test/netns/bgp-bird-config.test.ts (runs bird -p).
  for (const mode of ['rr', 'ebgp'] as const) {
    it(`${mode}: one session a host, the router's AS as the mode wants`, () => {
      const text = renderRackBirdConfig({ mode, clusterAsn: 64512, routerAsn: 65000, hosts: [{ name: 'h0', ip: '198.18.0.1' }, { name: 'h1', ip: '198.18.1.1' }] });
      assert.match(text, /protocol bgp h1 from host \{ neighbor 198\.18\.1\.1 as 64512; \}/);
      if (mode === 'rr') assert.match(text, /local 198\.18\.255\.254 as 64512;[\s\S]*rr client;/);
      else assert.match(text, /local 198\.18\.255\.254 as 65000;[\s\S]*bgp_path\.delete\(64512\)/);
    });
  }
});

describe('weftctl bgp status rendering', () => {
  const doc = bgpStatusSchema.parse({
    asn: 64512, routerId: '198.18.0.1', subnet: '10.244.1.0/24', reflector: false, clusterId: null, restartingUntil: null,
    learnedRoutes: 3, kernelRoutes: 3,
    sessions: [
      { peer: '198.18.0.254', asn: 65000, state: 'Established', uptimeSeconds: 3725, prefixesReceived: 1, prefixesSent: 3, staleRoutes: 0, gracefulRestart: true, updatesReceived: 2, updatesSent: 4, origin: 'configured' },
      { peer: '198.18.0.2', asn: 64512, state: 'Active', uptimeSeconds: 0, prefixesReceived: 0, prefixesSent: 0, staleRoutes: 2, gracefulRestart: false, updatesReceived: 0, updatesSent: 0, origin: 'node' },
    ],
  });

  it('one line per session with type, origin, state, uptime and counts', () => {
    const text = renderBgpStatus(doc);
    assert.match(text, /^router 198\.18\.0\.1, AS 64512, announcing 10\.244\.1\.0\/24\n/);
    assert.match(text, /198\.18\.0\.254\s+65000\s+ebgp\s+configured\s+Established\s+1h2m\s+1\s+3\s+0\n/);
    assert.match(text, /198\.18\.0\.2\s+64512\s+ibgp\s+node\s+Active\s+-\s+0\s+0\s+2\n/);
    assert.match(text, /routes learned: 3, in the kernel: 3\n$/);
  });

  it('uptime is short and human', () => {
    assert.deepEqual([0, 59, 61, 3600, 90000].map(formatUptime), ['-', '59s', '1m1s', '1h0m', '1d1h']);
  });

  it('a document of the wrong shape is refused', () => {
    assert.equal(bgpStatusSchema.safeParse({ asn: 'x' }).success, false);
  });
});

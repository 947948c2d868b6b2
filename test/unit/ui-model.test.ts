// The web view's model rules: host names, which peers an agent lacks, link states, which host a
// pod is on, which policies select and isolate it. The page and server are in ui-server.test.ts
// and test/cluster/ui-browser.test.ts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { parsePolicy, type Endpoint } from '../../src/policy/model.js';
import type { Lease } from '../../src/store/lease.js';
import { type AgentAnswer, buildModel, SubnetIndex, type ModelInput } from '../../src/ui/build.js';
import { linkState, type UiHost } from '../../src/ui/model.js';

const lease = (subnet: string, publicIP: string): Lease => ({
  subnet: parseCidr(subnet), attrs: { publicIP: parseIP(publicIP), publicIPv6: undefined, backendType: 'vxlan', backendData: null }, expiresAt: null, revision: 1n,
});
const ep = (ns: string, pod: string, ip: string, host: string, labels: Record<string, string> = {}, ifname = 'eth0'): Endpoint => ({
  namespace: ns, pod, labels, ips: [parseIP(ip)], host, ifname,
});
const answered = (node: string, programmed: string[], ready = true): AgentAnswer => ({ type: 'answered', node, ready, detail: 'x', programmed, problems: [] });

const L = [lease('10.244.1.0/24', '198.18.0.2'), lease('10.244.0.0/24', '198.18.0.1'), lease('10.244.2.0/24', '198.18.0.3')];

function input(over: Partial<ModelInput> = {}): ModelInput {
  return {
    seq: 1, at: 0, source: { label: 't', store: 'file' }, network: { cidr: '10.244.0.0/16', backend: 'vxlan' },
    leases: L, agents: new Map(), names: new Map(), world: undefined, problems: [], ...over,
  };
}

describe('ui model', () => {
  it('hosts are sorted by subnet and named by their weftd, else the lab, else their pods, else their public IP', () => {
    const m = buildModel(input({
      agents: new Map([['10.244.0.0/24', answered('node-a', ['10.244.1.0/24', '10.244.2.0/24'])]]),
      names: new Map([['10.244.0.0/24', 'h0'], ['10.244.1.0/24', 'h1']]),
      world: { policies: [], namespaces: [], endpoints: [ep('web', 'p', '10.244.2.5', 'node-c'), ep('web', 'q', '10.244.1.5', 'node-b')] },
    }));
    assert.deepEqual(m.hosts.map((h) => h.id), ['10.244.0.0/24', '10.244.1.0/24', '10.244.2.0/24']);
    assert.deepEqual(m.hosts.map((h) => h.name), ['node-a', 'h1', 'node-c']);
    assert.equal(buildModel(input()).hosts[0]?.name, '198.18.0.1');
  });

  it('an agent lacks every other host it has not programmed; unasked agents are unknown', () => {
    const m = buildModel(input({ agents: new Map<string, AgentAnswer>([
      ['10.244.0.0/24', answered('a', ['10.244.1.0/24'])],
      ['10.244.1.0/24', { type: 'down', detail: 'no answer' }],
    ]) }));
    const [a, b, c] = m.hosts;
    assert.deepEqual(a?.agent, { state: 'ready', detail: 'x', programmed: 1, missing: ['10.244.2.0/24'], problems: [] });
    assert.equal(b?.agent.state, 'down');
    assert.equal(c?.agent.state, 'unknown');
  });

  it('link states: ok both ways, one-sided, broken, unknown', () => {
    const host = (id: string, agent: UiHost['agent']): UiHost => ({ id, name: id, subnet: id, publicIP: '198.18.0.1', backend: 'vxlan', agent });
    const ok = (missing: string[] = []): UiHost['agent'] => ({ state: 'ready', detail: '', programmed: 1, missing, problems: [] });
    const a = host('A', ok()), b = host('B', ok()), bLacksA = host('B', ok(['A'])), bDown = host('B', { state: 'down', detail: '' });
    const aLacksB = host('A', ok(['B'])), u = host('U', { state: 'unknown', detail: '' });
    assert.equal(linkState(a, b), 'ok');
    assert.equal(linkState(a, bLacksA), 'one-sided');
    assert.equal(linkState(a, bDown), 'one-sided');
    assert.equal(linkState(aLacksB, bLacksA), 'broken');
    assert.equal(linkState(aLacksB, bDown), 'broken');
    assert.equal(linkState(a, u), 'unknown');
    assert.equal(linkState(u, host('V', { state: 'unknown', detail: '' })), 'unknown');
    assert.equal(linkState(host('A', ok(['U'])), u), 'broken', 'one end lacks it and the other cannot be asked');
  });

  it('pods: on the host whose subnet holds them, one entry per pod over its interfaces, with the policies selecting and isolating them', () => {
    const deny = parsePolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'web' }, spec: { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Ingress'] } });
    const out = parsePolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'out', namespace: 'web' }, spec: { podSelector: {}, policyTypes: ['Egress'] } });
    const m = buildModel(input({ world: { policies: [out, deny], namespaces: [], endpoints: [
      ep('web', 'db', '10.244.1.7', 'n1', { app: 'db' }), ep('web', 'db', '10.244.1.8', 'n1', { app: 'db' }, 'net1'),
      ep('web', 'fe', '10.250.0.1', 'n9'), ep('other', 'x', '10.244.0.9', 'n0', { app: 'db' }),
    ] } }));
    const db = m.pods.find((p) => p.id === 'web/db');
    assert.deepEqual(db?.ips, ['10.244.1.7', '10.244.1.8']);
    assert.equal(db?.hostId, '10.244.1.0/24');
    assert.deepEqual(db?.policies, ['web/out', 'web/deny']);
    assert.deepEqual(db?.isolated, { ingress: true, egress: true });
    const fe = m.pods.find((p) => p.id === 'web/fe');
    assert.equal(fe?.hostId, undefined, 'no lease holds 10.250.0.1');
    assert.deepEqual(fe?.isolated, { ingress: false, egress: true });
    assert.deepEqual(m.pods.find((p) => p.id === 'other/x')?.policies, [], 'policies select in their own namespace only');
    assert.deepEqual(m.policies.map((p) => [p.id, p.types, p.selects]), [
      ['web/deny', ['Ingress'], ['web/db']],
      ['web/out', ['Egress'], ['web/db', 'web/fe']],
    ]);
  });

  it('SubnetIndex finds the longest prefix holding an address, IPv6 too', () => {
    const idx = new SubnetIndex([parseCidr('10.244.0.0/16'), parseCidr('10.244.3.0/24'), parseCidr('fd00:10:244:3::/64')]);
    assert.equal(idx.find(parseIP('10.244.3.9')), '10.244.3.0/24');
    assert.equal(idx.find(parseIP('10.244.9.9')), '10.244.0.0/16');
    assert.equal(idx.find(parseIP('fd00:10:244:3::5')), 'fd00:10:244:3::/64');
    assert.equal(idx.find(parseIP('192.0.2.1')), undefined);
  });

  it('a dual-stack lease: its IPv6 subnet leads to the host too (an IPv6 pod address finds it), and the host shows both subnets', () => {
    const dual = { ...lease('10.244.3.0/24', '198.18.0.3'), ipv6Subnet: parseCidr('fd00:244:0:3::/64') };
    const idx = new SubnetIndex([dual]);
    assert.equal(idx.find(parseIP('fd00:244:0:3::7')), '10.244.3.0/24');
    const m = buildModel(input({ leases: [dual], world: { policies: [], namespaces: [], endpoints: [ep('web', 'v6only', 'fd00:244:0:3::7', 'n3')] } }));
    assert.equal(m.hosts[0]?.ipv6Subnet, 'fd00:244:0:3::/64');
    assert.equal(m.pods[0]?.hostId, '10.244.3.0/24');
  });

  it('a thousand hosts with a pod each: every pod finds its host and names it', () => {
    const leases = Array.from({ length: 1000 }, (_, i) => lease(`10.${100 + (i >> 8)}.${i & 255}.0/24`, `198.18.${i >> 7}.${(i & 127) + 1}`));
    const endpoints = leases.map((l, i) => ep('web', `p${i}`, `10.${100 + (i >> 8)}.${i & 255}.5`, `n${i}`));
    const m = buildModel(input({ leases, world: { policies: [], namespaces: [], endpoints } }));
    assert.equal(m.hosts.length, 1000);
    assert.equal(m.pods.every((p) => p.hostId !== undefined), true);
    assert.equal(m.hosts[999]?.name, 'n999');
  });
});

// The reference evaluator against the Kubernetes NetworkPolicy cases.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseIP } from '../../src/net/ip.js';
import { type Endpoint, type NetworkPolicy, type PolicyWorld, type Protocol, parsePolicy } from '../../src/policy/model.js';
import { allowed, egressAllowed, ingressAllowed, selectorMatches } from '../../src/policy/evaluate.js';

const ep = (namespace: string, pod: string, ip: string, labels: Record<string, string>, namedPorts?: Endpoint['namedPorts']): Endpoint =>
  ({ namespace, pod, labels, ips: [parseIP(ip)], host: 'h1', ifname: 'eth0', ...(namedPorts ? { namedPorts } : {}) });

const web = ep('prod', 'web', '10.0.0.1', { app: 'web' }, { http: { port: 8080, protocol: 'TCP' }, dns: { port: 53, protocol: 'UDP' } });
const db = ep('prod', 'db', '10.0.0.2', { app: 'db', role: 'client' });
const client = ep('dev', 'client', '10.0.1.1', { app: 'client', role: 'client' });
const tool = ep('dev', 'tool', '10.0.1.2', { app: 'tool' });
const OUTSIDE = '198.18.0.9';

const pol = (ns: string, name: string, spec: Record<string, unknown>): NetworkPolicy => parsePolicy({ metadata: { name, namespace: ns }, spec });

function worldWith(policies: NetworkPolicy[]): PolicyWorld {
  return { endpoints: [web, db, client, tool], namespaces: [{ name: 'prod', labels: { env: 'prod' } }, { name: 'dev', labels: { env: 'dev' } }], policies };
}

const conn = (src: string, dst: string, port = 80, protocol: Protocol | 'ICMP' = 'TCP') => ({ src: parseIP(src), dst: parseIP(dst), protocol, port });
const ip = (e: Endpoint) => {
  const a = e.ips[0];
  assert.ok(a);
  return `${Number((a.value >> 24n) & 255n)}.${Number((a.value >> 16n) & 255n)}.${Number((a.value >> 8n) & 255n)}.${Number(a.value & 255n)}`;
};

describe('policy evaluator (Kubernetes semantics)', () => {
  it('selectors: matchLabels AND every expression; empty selects all', () => {
    const sel = { matchLabels: { app: 'web' }, matchExpressions: [
      { key: 'tier', operator: 'In' as const, values: ['a', 'b'] },
      { key: 'env', operator: 'NotIn' as const, values: ['dev'] },
      { key: 'team', operator: 'Exists' as const, values: [] },
      { key: 'legacy', operator: 'DoesNotExist' as const, values: [] },
    ] };
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'a', team: '' }), true);
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'c', team: 'x' }), false);
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'a', team: 'x', env: 'dev' }), false);
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'a' }), false);
    assert.equal(selectorMatches(sel, { app: 'web', tier: 'a', team: 'x', legacy: 'y' }), false);
    assert.equal(selectorMatches({ matchLabels: {}, matchExpressions: [] }, {}), true);
  });

  it('no policy: everything is allowed', () => {
    const w = worldWith([]);
    for (const a of [web, db, client, tool]) for (const b of [web, db, client, tool]) assert.equal(allowed(conn(ip(a), ip(b)), w), true);
  });

  it('default-deny ingress isolates only the selected namespace, and egress stays open', () => {
    const w = worldWith([pol('prod', 'deny', { podSelector: {} })]);
    assert.equal(allowed(conn(ip(client), ip(web)), w), false);
    assert.equal(allowed(conn(ip(db), ip(web)), w), false);
    assert.equal(allowed(conn(OUTSIDE, ip(web)), w), false);
    assert.equal(allowed(conn(ip(web), ip(client)), w), true);
    assert.equal(allowed(conn(ip(web), OUTSIDE), w), true);
  });

  it('allow from the same namespace', () => {
    const w = worldWith([pol('prod', 'same', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] })]);
    assert.equal(allowed(conn(ip(db), ip(web)), w), true);
    assert.equal(allowed(conn(ip(client), ip(web)), w), false);
    assert.equal(allowed(conn(OUTSIDE, ip(web)), w), false);
  });

  it('namespace selector, including the implicit kubernetes.io/metadata.name label', () => {
    const w = worldWith([pol('prod', 'ns', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }] }] })]);
    assert.equal(allowed(conn(ip(client), ip(web)), w), true);
    assert.equal(allowed(conn(ip(tool), ip(web)), w), true);
    assert.equal(allowed(conn(ip(db), ip(web)), w), false);
    assert.equal(allowed(conn(ip(client), ip(db)), w), true, 'db is not selected by the policy');
    const byName = worldWith([pol('prod', 'ns', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'dev' } } }] }] })]);
    assert.equal(allowed(conn(ip(tool), ip(db)), byName), true);
    const all = worldWith([pol('prod', 'ns', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] })]);
    assert.equal(allowed(conn(ip(tool), ip(db)), all), true);
    assert.equal(allowed(conn(OUTSIDE, ip(db)), all), false, 'namespaceSelector {} is all pods, not all addresses');
  });

  it('pod and namespace selector in one peer (AND) versus two peers (OR)', () => {
    const and = worldWith([pol('prod', 'and', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } }, podSelector: { matchLabels: { role: 'client' } } }] }] })]);
    const or = worldWith([pol('prod', 'or', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }, { podSelector: { matchLabels: { role: 'client' } } }] }] })]);
    assert.deepEqual([client, tool, db].map((e) => allowed(conn(ip(e), ip(web)), and)), [true, false, false]);
    assert.deepEqual([client, tool, db].map((e) => allowed(conn(ip(e), ip(web)), or)), [true, true, true]);
  });

  it('numeric ports with endPort, protocols, and named ports resolved at the destination', () => {
    const w = worldWith([
      pol('prod', 'web', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ ports: [{ port: 'http' }, { port: 'dns', protocol: 'UDP' }] }] }),
      pol('prod', 'db', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ ports: [{ port: 5000, endPort: 5010 }, { port: 'http' }] }] }),
    ]);
    assert.equal(allowed(conn(ip(client), ip(web), 8080), w), true);
    assert.equal(allowed(conn(ip(client), ip(web), 8081), w), false);
    assert.equal(allowed(conn(ip(client), ip(web), 53, 'UDP'), w), true);
    assert.equal(allowed(conn(ip(client), ip(web), 53, 'TCP'), w), false);
    assert.equal(allowed(conn(ip(client), ip(db), 5000), w), true);
    assert.equal(allowed(conn(ip(client), ip(db), 5010), w), true);
    assert.equal(allowed(conn(ip(client), ip(db), 5011), w), false);
    assert.equal(allowed(conn(ip(client), ip(db), 5005, 'UDP'), w), false);
    assert.equal(allowed(conn(ip(client), ip(db), 8080), w), false, 'db declares no port named http');
  });

  it('default-deny egress with an allowed DNS-like port', () => {
    const w = worldWith([pol('dev', 'egress', { podSelector: {}, policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'UDP', port: 53 }] }] })]);
    assert.equal(egressAllowed(conn(ip(client), ip(web), 53, 'UDP'), w), true);
    assert.equal(allowed(conn(ip(client), OUTSIDE, 53, 'UDP'), w), true);
    assert.equal(allowed(conn(ip(client), ip(web), 80), w), false);
    assert.equal(allowed(conn(ip(client), OUTSIDE, 443), w), false);
    assert.equal(allowed(conn(ip(web), ip(client), 80), w), true, 'ingress to dev is not isolated');
    assert.equal(ingressAllowed(conn(ip(web), ip(client), 80), w), true);
  });

  it('ipBlock with except, for egress and ingress', () => {
    const w = worldWith([
      pol('prod', 'out', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.0.0/24'] } }] }] }),
      pol('prod', 'in', { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.1.0/24'] } }] }] }),
    ]);
    assert.equal(allowed(conn(ip(web), '198.18.1.1'), w), true);
    assert.equal(allowed(conn(ip(web), OUTSIDE), w), false);
    assert.equal(allowed(conn(ip(web), ip(client)), w), false);
    assert.equal(ingressAllowed(conn(ip(web), ip(db)), w), true, 'ipBlock matches pod addresses too');
    assert.equal(allowed(conn(ip(web), ip(db)), w), false, 'but web may only send to 198.18.0.0/16');
    assert.equal(allowed(conn(ip(client), ip(db)), w), false);
  });

  it('union of policies; deleting the policy restores traffic', () => {
    const a = pol('prod', 'a', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'db' } } }] }] });
    const b = pol('prod', 'b', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }], ports: [{ port: 8080 }] }] });
    const both = worldWith([a, b]);
    assert.equal(allowed(conn(ip(db), ip(web)), both), true);
    assert.equal(allowed(conn(ip(client), ip(web), 8080), both), true);
    assert.equal(allowed(conn(ip(client), ip(web), 80), both), false);
    assert.equal(allowed(conn(ip(client), ip(web), 80), worldWith([b])), false);
    assert.equal(allowed(conn(ip(client), ip(web), 80), worldWith([])), true);
  });

  it('an Egress-only policy leaves ingress open even with ingress rules written', () => {
    const w = worldWith([pol('prod', 'e', { podSelector: {}, policyTypes: ['Egress'], ingress: [{ from: [{ podSelector: { matchLabels: { none: 'x' } } }] }] })]);
    assert.equal(ingressAllowed(conn(ip(client), ip(web)), w), true);
    assert.equal(egressAllowed(conn(ip(web), ip(client)), w), false);
  });

  it('ICMP passes only rules without ports, and isolation without rules stops it', () => {
    const anyPort = pol('prod', 'any', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'db' } } }] }] });
    const tcpOnly = pol('prod', 'tcp', { podSelector: {}, ingress: [{ ports: [{ protocol: 'TCP', port: 80 }] }] });
    assert.equal(allowed(conn(ip(db), ip(web), 0, 'ICMP'), worldWith([anyPort])), true);
    assert.equal(allowed(conn(ip(client), ip(web), 0, 'ICMP'), worldWith([anyPort])), false);
    assert.equal(allowed(conn(ip(client), ip(web), 0, 'ICMP'), worldWith([tcpOnly])), false, 'a port list names L4 protocols only');
    assert.equal(allowed(conn(ip(client), ip(web), 80), worldWith([tcpOnly])), true);
    assert.equal(allowed(conn(ip(web), ip(client), 0, 'ICMP'), worldWith([tcpOnly])), true, 'dev is not isolated');
  });
});

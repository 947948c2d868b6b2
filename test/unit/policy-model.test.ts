// Parsing NetworkPolicy objects: Kubernetes defaults, and every rejection naming its field.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CniCode, WeftError } from '../../src/errors.js';
import { formatCidr } from '../../src/net/ip.js';
import { parseEndpoint, parsePolicy, parsePolicyText } from '../../src/policy/model.js';

const base = (spec: Record<string, unknown>, meta: Record<string, unknown> = { name: 'p' }) =>
  ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: meta, spec });

function rejects(input: unknown, message: RegExp): void {
  assert.throws(() => parsePolicy(input), (e: unknown) => {
    assert.ok(e instanceof WeftError, 'a WeftError');
    assert.equal(e.code, CniCode.InvalidNetworkConfig);
    assert.match(e.message, message);
    return true;
  });
}

describe('policy model: defaults', () => {
  it('namespace defaults to default; policyTypes default to Ingress, plus Egress when egress is present', () => {
    const p = parsePolicy(base({ podSelector: {} }));
    assert.equal(p.namespace, 'default');
    assert.deepEqual(p.types, { ingress: true, egress: false });
    assert.deepEqual(p.ingress, []);
    const q = parsePolicy(base({ podSelector: {}, egress: [] }, { name: 'q', namespace: 'prod' }));
    assert.equal(q.namespace, 'prod');
    assert.deepEqual(q.types, { ingress: true, egress: true });
    const r = parsePolicy(base({ podSelector: {}, policyTypes: ['Egress'], ingress: [{}] }));
    assert.deepEqual(r.types, { ingress: false, egress: true });
  });

  it('ports: TCP by default, numeric strings are numbers, endPort gives a range, names stay names', () => {
    const p = parsePolicy(base({ podSelector: {}, ingress: [{ ports: [{ port: 80 }, { port: '443' }, { protocol: 'UDP', port: 1000, endPort: 2000 }, { port: 'http' }, { protocol: 'SCTP' }] }] }));
    assert.deepEqual(p.ingress[0]?.ports, [
      { protocol: 'TCP', port: { type: 'number', port: 80, endPort: 80 } },
      { protocol: 'TCP', port: { type: 'number', port: 443, endPort: 443 } },
      { protocol: 'UDP', port: { type: 'number', port: 1000, endPort: 2000 } },
      { protocol: 'TCP', port: { type: 'named', name: 'http' } },
      { protocol: 'SCTP', port: { type: 'any' } },
    ]);
  });

  it('peers: absent or empty from means all; selectors and ipBlock (nested excepts folded)', () => {
    const p = parsePolicy(base({
      podSelector: { matchExpressions: [{ key: 'tier', operator: 'In', values: ['a', 'b'] }] },
      ingress: [{}, { from: [] }, { from: [
        { podSelector: { matchLabels: { app: 'x' } }, namespaceSelector: {} },
        { ipBlock: { cidr: '10.0.0.5/8', except: ['10.1.0.0/16', '10.1.2.0/24', '10.2.0.0/16'] } },
      ] }],
    }));
    assert.equal(p.ingress[0]?.peers, 'all');
    assert.equal(p.ingress[1]?.peers, 'all');
    const peers = p.ingress[2]?.peers;
    assert.ok(Array.isArray(peers));
    assert.deepEqual(peers[0], { type: 'pods', podSelector: { matchLabels: { app: 'x' }, matchExpressions: [] }, namespaceSelector: { matchLabels: {}, matchExpressions: [] } });
    const blk = peers[1];
    assert.ok(blk?.type === 'ipBlock');
    assert.equal(formatCidr(blk.cidr), '10.0.0.0/8');
    assert.deepEqual(blk.except.map(formatCidr), ['10.1.0.0/16', '10.2.0.0/16']);
  });

  it('YAML with several documents and a List; JSON arrays', () => {
    const yaml = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a, namespace: x}
spec:
  podSelector: {}
---
kind: List
items:
  - metadata: {name: b}
    spec: {podSelector: {matchLabels: {app: web}}}
`;
    assert.deepEqual(parsePolicyText(yaml).map((d) => `${d.policy.namespace}/${d.policy.name}`), ['x/a', 'default/b']);
    const json = JSON.stringify([base({ podSelector: {} }, { name: 'j1' }), base({ podSelector: {} }, { name: 'j2' })]);
    assert.equal(parsePolicyText(json).length, 2);
    assert.throws(() => parsePolicyText(`${yaml}---\n${yaml}`), /appears twice/);
    assert.throws(() => parsePolicyText('{"metadata": '), (e: unknown) => e instanceof WeftError && e.code === CniCode.DecodeFailure);
    assert.throws(() => parsePolicyText('a: [b'), (e: unknown) => e instanceof WeftError && /not valid YAML/.test(e.message));
  });

  it('one bad object in a set rejects all of them, naming where', () => {
    const text = JSON.stringify([base({ podSelector: {} }, { name: 'ok' }), base({ podSelector: {}, ingress: [{ ports: [{ port: 0 }] }] }, { name: 'bad' })]);
    assert.throws(() => parsePolicyText(text), /^Error|\[1\]\.spec\.ingress\[0\]\.ports\[0\]\.port: 0 is out of range 1-65535/);
  });
});

describe('policy model: each bad field is named', () => {
  const cases: [string, unknown, RegExp][] = [
    ['port out of range', base({ podSelector: {}, ingress: [{ ports: [{ port: 80 }, { port: 70000 }] }] }), /^spec\.ingress\[0\]\.ports\[1\]\.port: 70000 is out of range 1-65535$/],
    ['endPort out of range', base({ podSelector: {}, egress: [{ ports: [{ port: 80, endPort: 65536 }] }] }), /^spec\.egress\[0\]\.ports\[0\]\.endPort: 65536 is out of range 1-65535$/],
    ['endPort below port', base({ podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 79 }] }] }), /spec\.ingress\[0\]\.ports\[0\]\.endPort: 79 is below port 80/],
    ['endPort with a named port', base({ podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] }), /spec\.ingress\[0\]\.ports\[0\]\.endPort: needs a numeric port/],
    ['bad port name', base({ podSelector: {}, ingress: [{ ports: [{ port: 'Not_A_Name' }] }] }), /spec\.ingress\[0\]\.ports\[0\]\.port: "Not_A_Name" is neither a port number nor a valid port name/],
    ['bad protocol', base({ podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP' }] }] }), /spec\.ingress\[0\]\.ports\[0\]\.protocol: "ICMP" is not one of TCP, UDP, SCTP/],
    ['bad selector operator', base({ podSelector: { matchExpressions: [{ key: 'a', operator: 'Equals', values: ['x'] }] } }), /spec\.podSelector\.matchExpressions\[0\]\.operator: "Equals" is not one of In, NotIn, Exists, DoesNotExist/],
    ['In without values', base({ podSelector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }), /spec\.podSelector\.matchExpressions\[0\]\.values: must be non-empty for operator In/],
    ['Exists with values', base({ podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] } }] }] }), /spec\.ingress\[0\]\.from\[0\]\.namespaceSelector\.matchExpressions\[0\]\.values: must be empty for operator Exists/],
    ['CIDR that does not parse', base({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/33' } }] }] }), /spec\.ingress\[0\]\.from\[0\]\.ipBlock\.cidr: "10\.0\.0\.0\/33" is not a CIDR/],
    ['except outside the cidr', base({ podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/24'] } }] }] }), /spec\.egress\[0\]\.to\[0\]\.ipBlock\.except\[0\]: 10\.1\.0\.0\/24 is not strictly inside cidr 10\.0\.0\.0\/16/],
    ['ipBlock with a selector', base({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }), /spec\.ingress\[0\]\.from\[0\]: ipBlock cannot be combined/],
    ['empty peer', base({ podSelector: {}, ingress: [{ from: [{}] }] }), /spec\.ingress\[0\]\.from\[0\]: a peer needs podSelector, namespaceSelector or ipBlock/],
    ['bad label value', base({ podSelector: { matchLabels: { app: 'no spaces' } } }), /spec\.podSelector\.matchLabels\.app: "no spaces" is not a valid label value/],
    ['bad label key', base({ podSelector: { matchLabels: { '-x': 'y' } } }), /spec\.podSelector\.matchLabels\["-x"\]: "-x" is not a valid label key/],
    ['unknown policy type', base({ podSelector: {}, policyTypes: ['Ingress', 'Sideways'] }), /spec\.policyTypes\[1\]: "Sideways" is not one of Ingress, Egress/],
    ['missing podSelector', base({}), /spec\.podSelector: is required/],
    ['typo in a field name', base({ podSelector: {}, ingres: [] }), /spec: unknown field "ingres"/],
    ['bad name', base({ podSelector: {} }, { name: 'Bad_Name' }), /metadata\.name: "Bad_Name" is not a valid name/],
    ['bad namespace', base({ podSelector: {} }, { name: 'a', namespace: 'UPPER' }), /metadata\.namespace: "UPPER" is not a valid namespace name/],
    ['wrong kind', { ...base({ podSelector: {} }), kind: 'Pod' }, /kind: expected NetworkPolicy/],
  ];
  for (const [what, input, re] of cases) it(what, () => rejects(input, re));
});

describe('endpoint records', () => {
  it('parses addresses with or without a prefix, named ports default to TCP', () => {
    const e = parseEndpoint({ namespace: 'a', pod: 'p', ips: ['10.1.0.2/24', 'fd00::2'], host: 'h', ifname: 'eth0', namedPorts: { http: { port: 80 } } });
    assert.equal(e.ips.length, 2);
    assert.deepEqual(e.labels, {});
    assert.deepEqual(e.namedPorts, { http: { port: 80, protocol: 'TCP' } });
    assert.throws(() => parseEndpoint({ namespace: 'a', pod: 'p', ips: ['nope'], host: 'h', ifname: 'eth0' }), /ips\[0\]: "nope" is not an IP address/);
  });
});

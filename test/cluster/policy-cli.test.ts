// weftctl policy / ns against the file store, and the store round trip to a PolicyWorld.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileKeyValueStore, checkKey } from '../../src/store/kv.js';
import { loadPolicyWorld } from '../../src/policy/store.js';

const WEFTCTL = fileURLToPath(new URL('../../src/cli/weftctl.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'wpo-cli-'));
const PREFIX = '/weft/test';

function weftctl(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(process.execPath, [WEFTCTL, ...args, '--store', 'file', '--store-dir', dir, '--prefix', PREFIX], { encoding: 'utf8', env, ...(input !== undefined ? { input } : {}) });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const POLICY_YAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: prod
spec:
  podSelector:
    matchLabels: {app: web}
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {env: dev}}
      ports:
        - port: http
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: dev}
spec:
  podSelector: {}
  policyTypes: [Egress]
`;

describe('weftctl policy and ns (file store)', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('apply from stdin (YAML, two documents), list, get, and the world loaded back', async () => {
    const r = weftctl(['policy', 'apply', '-f', '-'], POLICY_YAML);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'networkpolicy prod/web created\nnetworkpolicy dev/deny-egress created\n');
    // No pod is known yet: both are accepted, each with a warning naming its selector.
    assert.match(r.stderr, /^warning: networkpolicy prod\/web: podSelector app=web selects no pod yet \(0 pod\(s\) known in namespace prod\)$/m);
    assert.match(r.stderr, /^warning: networkpolicy dev\/deny-egress: podSelector <all> selects no pod yet/m);
    assert.equal(weftctl(['policy', 'apply', '-f', '-'], POLICY_YAML).stdout.split('\n')[0], 'networkpolicy prod/web configured');
    // No weftd answers on port 1: the counter columns say "-", and a note on stderr why.
    const list = weftctl(['policy', 'list', '-A', '--addr', '127.0.0.1:1']);
    assert.equal(list.status, 0, list.stderr);
    assert.equal(list.stdout, 'NAMESPACE  NAME         POD-SELECTOR  TYPES    PODS           ALLOWED  DENIED\ndev        deny-egress  <all>         Egress   none selected  -        -\nprod       web          app=web       Ingress  none selected  -        -\n');
    assert.match(list.stderr, /^note: ALLOWED and DENIED need weftd \(127\.0\.0\.1:1: cannot reach weftd at 127\.0\.0\.1:1/);
    assert.equal(weftctl(['policy', 'list', '--addr', '127.0.0.1:1']).stdout.trim(), 'NAMESPACE  NAME  POD-SELECTOR  TYPES  PODS  ALLOWED  DENIED', 'namespace default has none');
    const get = weftctl(['policy', 'get', 'web', '-n', 'prod']);
    assert.equal(get.status, 0, get.stderr);
    const obj = JSON.parse(get.stdout) as { metadata: { namespace: string }; spec: { ingress: unknown[] } };
    assert.equal(obj.metadata.namespace, 'prod');
    assert.equal(obj.spec.ingress.length, 1);
    assert.match(weftctl(['policy', 'get', 'web', '-n', 'prod', '-o', 'yaml']).stdout, /^apiVersion: networking.k8s.io\/v1\nkind: NetworkPolicy\n/);

    assert.equal(weftctl(['ns', 'create', 'prod', 'env=prod']).status, 0);
    assert.equal(weftctl(['ns', 'create', 'dev', 'env=dev', 'team=a']).status, 0);
    const again = weftctl(['ns', 'create', 'dev']);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /namespace dev already exists/);
    const clash = weftctl(['ns', 'label', 'dev', 'env=staging']);
    assert.equal(clash.status, 1);
    assert.match(clash.stderr, /already has env=dev \(use --overwrite\)/);
    assert.equal(weftctl(['ns', 'label', 'dev', 'env=staging', 'team-', '--overwrite']).status, 0);
    assert.equal(weftctl(['ns', 'list']).stdout, 'NAME  LABELS\ndev   env=staging\nprod  env=prod\n');

    const kv = fileKeyValueStore(dir, PREFIX);
    await kv.put('endpoints/node-a/prod/web/eth0', JSON.stringify({ namespace: 'prod', pod: 'web', labels: { app: 'web' }, ips: ['10.0.0.2/24'], host: 'node-a', ifname: 'eth0' }));
    await kv.put('endpoints/node-a/prod/bad/eth0', '{"namespace": "prod"}');
    const { world, skipped } = await loadPolicyWorld(kv);
    assert.deepEqual(world.policies.map((p) => `${p.namespace}/${p.name}`), ['dev/deny-egress', 'prod/web']);
    assert.deepEqual(world.namespaces, [{ name: 'dev', labels: { env: 'staging' } }, { name: 'prod', labels: { env: 'prod' } }]);
    assert.equal(world.endpoints.length, 1);
    assert.equal(skipped.length, 1);
    assert.match(skipped[0]?.reason ?? '', /^endpoints\/node-a\/prod\/bad\/eth0: pod: is required/);
  });

  it('an invalid file is rejected with the field named and nothing is written', () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `${POLICY_YAML}---\nmetadata: {name: other, namespace: prod}\nspec:\n  podSelector: {}\n  ingress:\n    - ports: [{port: 80}, {port: 70000}]\n`);
    const r = weftctl(['policy', 'apply', '-f', bad]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /\[2\]\.spec\.ingress\[0\]\.ports\[1\]\.port: 70000 is out of range 1-65535/);
    assert.equal(weftctl(['policy', 'get', 'other', '-n', 'prod']).status, 1);
    const cidr = weftctl(['policy', 'apply', '-f', '-'], '{"metadata":{"name":"x"},"spec":{"podSelector":{},"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0/8"}}]}]}}');
    assert.equal(cidr.status, 1);
    assert.match(cidr.stderr, /spec\.egress\[0\]\.to\[0\]\.ipBlock\.cidr: "10\.0\.0\/8" is not a CIDR/);
    const op = weftctl(['policy', 'apply', '-f', '-'], '{"metadata":{"name":"x"},"spec":{"podSelector":{"matchExpressions":[{"key":"a","operator":"Has"}]}}}');
    assert.match(op.stderr, /spec\.podSelector\.matchExpressions\[0\]\.operator: "Has" is not one of In, NotIn, Exists, DoesNotExist/);
    assert.equal(existsSync(join(dir, 'weft', 'test', 'policies', 'default')), false);
  });

  it('delete removes the key (and its empty namespace directory); a second delete fails', () => {
    assert.equal(weftctl(['policy', 'delete', 'deny-egress', '-n', 'dev']).stdout, 'networkpolicy dev/deny-egress deleted\n');
    assert.equal(existsSync(join(dir, 'weft', 'test', 'policies', 'dev')), false);
    const again = weftctl(['policy', 'delete', 'deny-egress', '-n', 'dev']);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /networkpolicy dev\/deny-egress not found/);
    assert.deepEqual(readdirSync(join(dir, 'weft', 'test', 'policies')), ['prod']);
  });

  it('usage errors exit 2; keys are checked', () => {
    assert.equal(weftctl(['policy', 'apply']).status, 2);
    const typo = weftctl(['policy', 'list', '--all-namespace']);
    assert.equal(typo.status, 2);
    assert.match(typo.stderr, /Unknown option '--all-namespace' \(did you mean --all-namespaces\?\)/);
    assert.equal(weftctl(['policy', 'get']).status, 2);
    assert.equal(weftctl(['ns', 'label', 'dev']).status, 2);
    assert.equal(weftctl(['ns', 'create', 'Bad']).status, 2);
    assert.throws(() => checkKey('policies/../etc'), /invalid store key/);
    assert.throws(() => checkKey('policies//x'), /invalid store key/);
  });
});

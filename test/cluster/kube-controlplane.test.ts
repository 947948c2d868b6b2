// The throwaway Kubernetes control plane (src/kube/controlplane.ts): real etcd and kube-apiserver
// built by scripts/build-kube.sh, on loopback in a temp dir, one for the whole file. It answers
// /readyz, takes a Node as a kubelet registers one and a podCIDR patch as the node IPAM
// controller writes it, enforces RBAC on a service account's token, and stop() leaves neither a
// process nor its directory behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KUBE_VERSION } from '../../src/kube/binaries.js';
import { startControlPlane, type ControlPlane } from '../../src/kube/controlplane.js';
import { isSameProcess } from '../../src/lab/procs.js';

const base = mkdtempSync(join(tmpdir(), 'weft-kcp-'));
/** Not there yet: start creates it, so stop must remove it. */
const dir = join(base, 'cp');
let cp: ControlPlane | undefined;

function plane(): ControlPlane {
  if (cp === undefined) throw new Error('the control plane did not start');
  return cp;
}

const NODE = `apiVersion: v1
kind: Node
metadata:
  name: weft-n1
  labels:
    kubernetes.io/hostname: weft-n1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  taints:
    - { key: node.kubernetes.io/not-ready, effect: NoSchedule }
`;

const LIST_NODES = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: weft-test-list-nodes }
rules:
  - { apiGroups: [""], resources: [nodes], verbs: [list] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: weft-test-list-nodes }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weft-test-list-nodes }
subjects:
  - { kind: ServiceAccount, name: prober, namespace: weft-test }
`;

describe('kube control plane on loopback', { timeout: 120_000 }, () => {
  before(async () => {
    cp = await startControlPlane({ dir });
  });
  after(async () => {
    await cp?.stop();
    rmSync(base, { recursive: true, force: true });
  });

  it('is ready, serves the built release and records its processes', async (t) => {
    const c = plane();
    t.diagnostic(`ready in ${c.startupMs} ms at ${c.server}`);
    assert.match(c.server, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal((await c.kubectl(['get', '--raw', '/readyz'])).stdout.trim(), 'ok');
    const version = JSON.parse((await c.kubectl(['get', '--raw', '/version'])).stdout) as { gitVersion: string };
    assert.equal(version.gitVersion, KUBE_VERSION);
    assert.deepEqual(c.processes.map((p) => p.role), ['etcd', 'kube-apiserver']);
    for (const p of c.processes) assert.ok(isSameProcess(p.pid, p.startTime), `${p.role} ${p.pid} runs`);
    const rec = JSON.parse(readFileSync(join(dir, 'controlplane.json'), 'utf8')) as { processes: Array<{ pid: number }> };
    assert.deepEqual(rec.processes.map((p) => p.pid), c.processes.map((p) => p.pid), 'the record holds the PIDs for a later down');
  });

  it('registers a Node as a kubelet would and takes its podCIDR once', async () => {
    const c = plane();
    await c.kubectl(['apply', '-f', '-'], { input: NODE });
    await c.kubectl(['patch', 'node', 'weft-n1', '--type', 'merge', '-p', JSON.stringify({ spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24'] } })]);
    const node = JSON.parse((await c.kubectl(['get', 'node', 'weft-n1', '-o', 'json'])).stdout) as { spec: { podCIDR?: string; podCIDRs?: string[] } };
    assert.equal(node.spec.podCIDR, '10.244.1.0/24');
    assert.deepEqual(node.spec.podCIDRs, ['10.244.1.0/24']);
    // The real API server's validation: a podCIDR is set once, never moved.
    const again = await c.kubectl(['patch', 'node', 'weft-n1', '--type', 'merge', '-p', JSON.stringify({ spec: { podCIDR: '10.244.2.0/24', podCIDRs: ['10.244.2.0/24'] } })], { allowFailure: true });
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /podCIDR/);
  });

  it('applies RBAC to a service account token', async () => {
    const c = plane();
    await c.kubectl(['create', 'namespace', 'weft-test']);
    await c.kubectl(['create', 'serviceaccount', 'prober', '--namespace', 'weft-test']);
    const kc = await c.serviceAccountKubeconfig('weft-test', 'prober', join(base, 'prober.kubeconfig'));
    const text = readFileSync(kc, 'utf8');
    assert.match(text, /token: /);
    assert.doesNotMatch(text, /client-certificate|client-key/, 'only the token identifies it');

    const denied = await c.kubectl(['get', '--raw', '/api/v1/nodes'], { kubeconfig: kc, allowFailure: true });
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /Forbidden/);
    assert.match(denied.stderr, /system:serviceaccount:weft-test:prober.*cannot list resource "nodes"/);

    await c.kubectl(['apply', '-f', '-'], { input: LIST_NODES });
    // The RBAC authorizer learns new bindings through its informer: allowed within moments.
    let names = '';
    for (let i = 0; i < 50; i++) {
      const r = await c.kubectl(['get', 'nodes', '-o', 'name'], { kubeconfig: kc, allowFailure: true });
      if (r.code === 0) {
        names = r.stdout.trim();
        break;
      }
      await sleep(100);
    }
    assert.equal(names, 'node/weft-n1');
    const del = await c.kubectl(['delete', 'node', 'weft-n1', '--dry-run=server'], { kubeconfig: kc, allowFailure: true });
    assert.match(del.stderr, /Forbidden/, 'list was granted, delete was not');
  });

  it('stop() ends every process it started and removes its directory', async () => {
    const c = plane();
    const procs = c.processes;
    await c.stop();
    for (const p of procs) assert.equal(isSameProcess(p.pid, p.startTime), false, `${p.role} ${p.pid} is gone`);
    assert.equal(existsSync(dir), false);
    assert.equal(existsSync(join(base, 'prober.kubeconfig')), false, 'the service account kubeconfig went too');
    await c.stop(); // again: nothing left to do, no error
  });
});

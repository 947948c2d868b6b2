// The Kubernetes manifests against a real API server (the throwaway control plane, one for the
// file): deploy/kubernetes/weft.yaml (kube mode) applies for real and its stored objects say what
// weftd and the CNI runtime need; both it and weft-etcd.yaml pass the server's dry run; and the
// weft ServiceAccount may do exactly what the ClusterRole lists — asked of the RBAC authorizer
// with `kubectl auth can-i --as`.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseNetworkList } from '../../src/cli/cni.js';
import { startControlPlane, type ControlPlane } from '../../src/kube/controlplane.js';
import { mapLimit } from '../../src/map-limit.js';
import { weftConfSchema } from '../../src/plugins/weft/conf.js';
import { parseNetworkConfig } from '../../src/store/config.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const KUBE_MODE = join(ROOT, 'deploy/kubernetes/weft.yaml');
const ETCD_MODE = join(ROOT, 'deploy/kubernetes/weft-etcd.yaml');
const NS = 'kube-weft';
const SA = `system:serviceaccount:${NS}:weft`;

const base = mkdtempSync(join(tmpdir(), 'weft-kdeploy-'));
let cp: ControlPlane | undefined;

function plane(): ControlPlane {
  if (cp === undefined) throw new Error('the control plane did not start');
  return cp;
}

async function getJson<T>(args: readonly string[]): Promise<T> {
  return JSON.parse((await plane().kubectl([...args, '-o', 'json'])).stdout) as T;
}

interface EnvVar { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }
interface Container { name: string; command?: string[]; args?: string[]; env?: EnvVar[]; securityContext?: { privileged?: boolean }; volumeMounts?: Array<{ name: string; mountPath: string }> }
interface DaemonSet {
  spec: { template: { spec: {
    serviceAccountName: string; hostNetwork: boolean; priorityClassName: string;
    tolerations: Array<{ operator?: string; key?: string; effect?: string }>;
    initContainers: Container[]; containers: Container[];
    volumes: Array<{ name: string; configMap?: { name: string }; hostPath?: { path: string } }>;
  } } };
}

describe('deploy/kubernetes on a real API server', { timeout: 120_000 }, () => {
  before(async () => {
    cp = await startControlPlane({ dir: join(base, 'cp') });
  });
  after(async () => {
    await cp?.stop();
    rmSync(base, { recursive: true, force: true });
  });

  it('weft.yaml applies and stores a kube-mode DaemonSet', async () => {
    const out = (await plane().kubectl(['apply', '-f', KUBE_MODE])).stdout;
    for (const obj of ['namespace/kube-weft', 'serviceaccount/weft', 'clusterrole.rbac.authorization.k8s.io/weft',
      'clusterrolebinding.rbac.authorization.k8s.io/weft', 'configmap/weft-config', 'daemonset.apps/weft']) {
      assert.match(out, new RegExp(`^${obj.replace(/\./g, '\\.')} created$`, 'm'));
    }
    const ds = (await getJson<DaemonSet>(['get', 'daemonset', 'weft', '-n', NS])).spec.template.spec;
    assert.equal(ds.serviceAccountName, 'weft');
    assert.equal(ds.hostNetwork, true);
    assert.equal(ds.priorityClassName, 'system-node-critical');
    assert.deepEqual(ds.tolerations, [{ operator: 'Exists' }], 'every taint, any effect');

    const [install, copy] = ds.initContainers;
    assert.deepEqual(install?.command, ['/usr/lib/weft/bin/weftctl', 'install', '--no-systemd', '--copy-node']);
    assert.deepEqual(copy?.command, ['cp', '-f', '/etc/weft/cni-conf.json', '/etc/cni/net.d/10-weft.conflist']);
    assert.ok(copy?.volumeMounts?.some((m) => m.name === 'weft-cfg' && m.mountPath === '/etc/weft/'));
    assert.ok(copy?.volumeMounts?.some((m) => m.name === 'cni-conf' && m.mountPath === '/etc/cni/net.d'));

    const weftd = ds.containers.find((c) => c.name === 'weftd');
    assert.ok(weftd);
    assert.equal(weftd.securityContext?.privileged, true);
    const args = weftd.args ?? [];
    assert.equal(args[args.indexOf('--store') + 1], 'kube');
    assert.equal(args[args.indexOf('--net-config') + 1], '/etc/weft/net-conf.json');
    assert.ok(args.includes('--ip-masq'));
    assert.equal(args.includes('--kubeconfig'), false, 'in-cluster config');
    assert.deepEqual(weftd.env?.find((e) => e.name === 'WEFTD_NODE_NAME')?.valueFrom, { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } });
    assert.ok(weftd.volumeMounts?.some((m) => m.name === 'weft-cfg' && m.mountPath === '/etc/weft/'));
    assert.equal(ds.volumes.find((v) => v.name === 'weft-cfg')?.configMap?.name, 'weft-config');
  });

  it('weft-config holds a conflist and a network config weft accepts', async () => {
    const cm = await getJson<{ data: Record<string, string> }>(['get', 'configmap', 'weft-config', '-n', NS]);
    const list = parseNetworkList(cm.data['cni-conf.json'] ?? '', 'cni-conf.json');
    assert.deepEqual(list.plugins.map((p) => p.type), ['weft', 'portmap']);
    const weft = weftConfSchema.parse(list.plugins[0]);
    assert.deepEqual(weft.delegate, { hairpinMode: true, isDefaultGateway: true });
    assert.deepEqual(list.plugins[1]?.capabilities, { portMappings: true });
    const net = parseNetworkConfig(cm.data['net-conf.json'] ?? '');
    assert.equal(net.backend.type, 'vxlan');
    assert.equal(net.ipv4?.network.prefix, 16);
  });

  it('both manifests pass the server\'s dry run', async () => {
    // After the real apply: the dry run creates no namespace, so a first dry run of either file
    // would fail on its namespaced objects for want of kube-weft.
    for (const file of [KUBE_MODE, ETCD_MODE]) {
      const r = await plane().kubectl(['apply', '--dry-run=server', '-f', file]);
      assert.match(r.stdout, /^daemonset\.apps\/weft (unchanged|configured) \(server dry run\)$/m, file);
    }
  });

  it('the weft ServiceAccount may do exactly what its ClusterRole lists', async () => {
    const allowed = new Set([
      'get nodes', 'list nodes', 'watch nodes', 'patch nodes',
      'patch nodes/status',
      'get pods', 'list pods', 'watch pods',
      'get namespaces', 'list namespaces', 'watch namespaces',
      'get networkpolicies.networking.k8s.io', 'list networkpolicies.networking.k8s.io', 'watch networkpolicies.networking.k8s.io',
    ]);
    const verbs = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
    const resources = ['nodes', 'nodes/status', 'pods', 'namespaces', 'networkpolicies.networking.k8s.io', 'secrets', 'configmaps', 'services', 'daemonsets.apps', 'clusterroles.rbac.authorization.k8s.io'];
    const asks = resources.flatMap((r) => verbs.map((v) => `${v} ${r}`));
    const answers = await mapLimit(asks, 4, async (ask) => {
      const [verb, resource] = ask.split(' ') as [string, string];
      const [res, sub] = resource.split('/');
      const r = await plane().kubectl(['auth', 'can-i', `--as=${SA}`, verb, res ?? '', ...(sub !== undefined ? [`--subresource=${sub}`] : [])], { allowFailure: true });
      return { ask, yes: r.stdout.trim() === 'yes' };
    });
    const granted = answers.filter((a) => a.yes).map((a) => a.ask).sort();
    assert.deepEqual(granted, [...allowed].sort());
  });
});

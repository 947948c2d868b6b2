// `lab up --store kube`: a real control plane (etcd + kube-apiserver) in the lab's "outside"
// namespace, and the API objects a cluster's other parts would write, written the way they
// would write them — no kubelet, scheduler or controller-manager runs, so the lab plays them:
//   - each host registers its Node (as a kubelet does) and gets a podCIDR the way
//     kube-controller-manager --allocate-node-cidrs hands them out (the Network's /24s in order);
//   - weftd gets only the weft ServiceAccount's token and the RBAC of deploy/kubernetes/weft.yaml,
//     so a verb missing there fails the lab;
//   - every container is a Pod bound to its host (as the scheduler binds it), added through CNI
//     with kubelet's CNI_ARGS, and its address posted in status.podIPs (as the kubelet posts it).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { CniCode, WeftError } from '../errors.js';
import { findKubeBinaries } from '../kube/binaries.js';
import { type ControlPlane, type KubectlOptions, type KubectlResult, startControlPlane } from '../kube/controlplane.js';
import { type Cidr, formatCidr, nthSubnet, parseCidr } from '../net/ip.js';
import { execIn } from './exec.js';
import { startInNamespace } from './procs.js';
import type { LabDirs, LabRecord } from './state.js';

/** The namespace the lab's pods live in (labelled, so namespaceSelector examples have a target). */
export const LAB_POD_NAMESPACE = 'lab';
/** kube-controller-manager's default --node-cidr-mask-size for IPv4. */
const NODE_CIDR_MASK = 24;
/** kube-controller-manager's --node-cidr-mask-size-ipv6 default. */
const NODE_CIDR_MASK_V6 = 64;
const DEPLOY_MANIFEST = new URL('../../../deploy/kubernetes/weft.yaml', import.meta.url);
/** The kinds of the DaemonSet manifest that grant weftd its identity and rights. */
const RBAC_KINDS = new Set(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);

export interface LabKube {
  readonly cp: ControlPlane;
  /** The weft ServiceAccount's kubeconfig, what each weftd runs with. */
  readonly kubeconfig: string;
  readonly netConfig: string;
}

/** What the lab needs of a control plane: kubectl with the admin's rights. */
export type KubectlRunner = Pick<ControlPlane, 'kubectl'>;

/**
 * kubectl as the cluster admin of a kube lab that is up, run inside its outside namespace (the
 * only place the API server listens): for whoever did not start the lab — a later command, the
 * demo's policy step, tests.
 */
export function labKubectl(rec: LabRecord, dirs: LabDirs): KubectlRunner {
  const outside = rec.outside;
  if (rec.store !== 'kube' || outside === undefined) throw new WeftError(CniCode.InvalidEnvironment, `lab ${rec.name} runs no API server (store ${rec.store})`);
  const kubectl = findKubeBinaries().kubectl;
  // The control plane writes both into its state dir (src/kube/controlplane.ts).
  const admin = join(dirs.kube, 'admin.kubeconfig');
  const cache = join(dirs.kube, 'kubectl-cache');
  return {
    async kubectl(args: readonly string[], opts: KubectlOptions = {}): Promise<KubectlResult> {
      const r = await execIn(outside, ['env', `KUBECACHEDIR=${cache}`, kubectl, '--kubeconfig', opts.kubeconfig ?? admin, ...args], {
        timeoutMs: opts.timeoutMs ?? 30_000, ...(opts.input !== undefined && { input: opts.input }),
      });
      const res = { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr };
      if (res.code !== 0 && opts.allowFailure !== true) throw new WeftError(CniCode.Internal, `kubectl ${args.join(' ')} failed (${res.code}): ${r.stderr.trim() || r.stdout.trim()}`);
      return res;
    },
  };
}

async function kubectlOk(cp: KubectlRunner, args: readonly string[], input?: string): Promise<string> {
  const r = await cp.kubectl(args, { allowFailure: true, ...(input !== undefined && { input }) });
  if (r.code !== 0) throw new WeftError(CniCode.Store, `kubectl ${args.join(' ')}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** Namespace, ServiceAccount, ClusterRole and binding from the DaemonSet manifest, as YAML. */
export function weftRbacManifest(): string {
  const docs = parseAllDocuments(readFileSync(DEPLOY_MANIFEST, 'utf8'));
  const keep = docs.map((d) => d.toJSON() as { kind?: string } | null).filter((o) => o !== null && RBAC_KINDS.has(o.kind ?? ''));
  if (!keep.some((o) => o?.kind === 'ClusterRole')) throw new WeftError(CniCode.Internal, `${DEPLOY_MANIFEST.pathname} has no ClusterRole`);
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items: keep });
}

/** The podCIDR kube-controller-manager's range allocator would give the i-th node registered. */
export function allocatedPodCidr(clusterCidr: string, index: number): Cidr {
  const net = parseCidr(clusterCidr);
  return nthSubnet(net, net.ip.family === 4 ? NODE_CIDR_MASK : NODE_CIDR_MASK_V6, index);
}

/**
 * What weftd needs of a fresh cluster, shared by the lab and the benchmarks: weft's RBAC from the
 * DaemonSet manifest, the weft ServiceAccount's kubeconfig (returned), the network config file,
 * and each Node registered (as its kubelet would) and then given its podCIDR (as
 * kube-controller-manager would).
 */
export async function prepareClusterForWeft(
  cp: Pick<ControlPlane, 'kubectl' | 'serviceAccountKubeconfig'>, files: { readonly kubeconfig: string; readonly netConfig: string },
  networkJson: string, nodes: readonly { readonly name: string; readonly podCIDR: string; readonly podCIDRs?: readonly string[] }[],
): Promise<string> {
  await kubectlOk(cp, ['apply', '-f', '-'], weftRbacManifest());
  const kubeconfig = await cp.serviceAccountKubeconfig('kube-weft', 'weft', files.kubeconfig);
  writeFileSync(files.netConfig, networkJson);
  if (nodes.length === 0) return kubeconfig;
  await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: nodes.map((n) => ({
    apiVersion: 'v1', kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux' } },
  })) }));
  for (const n of nodes) {
    // A dual-stack cluster's allocator gives each Node one CIDR per family, the first as podCIDR.
    await kubectlOk(cp, ['patch', 'node', n.name, '--type', 'merge', '-p', JSON.stringify({ spec: { podCIDR: n.podCIDR, podCIDRs: n.podCIDRs ?? [n.podCIDR] } })]);
  }
  return kubeconfig;
}

/**
 * Starts the control plane in the outside namespace (its processes recorded in the lab, so
 * `down` stops them like weftd), grants weftd its rights and registers one Node per host.
 */
export async function startLabKube(rec: LabRecord, dirs: LabDirs, save: () => void, network: Record<string, unknown>): Promise<LabKube> {
  const outside = rec.outside;
  const address = rec.outsideIP;
  if (outside === undefined || address === undefined) throw new WeftError(CniCode.Internal, 'lab has no outside namespace for the control plane');
  const cp = await startControlPlane({
    dir: dirs.kube, netns: outside, address,
    launcher: (role, ns, argv, log, env) => {
      const p = startInNamespace(role, ns, argv, log, env);
      rec.processes.push(p);
      save();
      return p;
    },
  });
  rec.kubeServer = cp.server;
  save();
  // No controller-manager runs, so nothing creates the namespace's default ServiceAccount, which
  // admission wants before it takes a Pod.
  await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: LAB_POD_NAMESPACE, labels: { 'weft.dev/lab': rec.name } } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: LAB_POD_NAMESPACE } },
  ] }));
  const clusterCidrs = [network.Network, network.IPv6Network].filter((c): c is string => typeof c === 'string');
  const kubeconfig = await prepareClusterForWeft(cp, { kubeconfig: dirs.kubeconfig, netConfig: dirs.netConfig }, JSON.stringify(network, null, 2) + '\n',
    rec.hostList.map((h) => {
      const podCIDRs = clusterCidrs.map((c) => formatCidr(allocatedPodCidr(c, h.index)));
      return { name: `h${h.index}`, podCIDR: podCIDRs[0] ?? '', podCIDRs };
    }));
  return { cp, kubeconfig, netConfig: dirs.netConfig };
}

/** weftd's store flags in a kube lab. */
export function kubeStoreArgs(dirs: LabDirs): string[] {
  return ['--store', 'kube', '--kubeconfig', dirs.kubeconfig, '--net-config', dirs.netConfig];
}

/** CNI_ARGS as the kubelet passes them for a pod. */
export function kubeletCniArgs(pod: string, namespace = LAB_POD_NAMESPACE): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=lab-${pod}`;
}

/**
 * The labels the lab gives a container's Pod, which policies select it by (app, host, pod).
 */
export function podLabels(name: string, host: number): Record<string, string> {
  return { app: 'echo', host: `h${host}`, pod: name };
}

/** The lab's container as a Pod bound to its host, labelled for policies (podLabels). */
export function podManifest(name: string, host: number, port: number, namespace = LAB_POD_NAMESPACE): Record<string, unknown> {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace, labels: podLabels(name, host) },
    spec: {
      nodeName: `h${host}`,
      automountServiceAccountToken: false,
      containers: [{ name: 'echo', image: 'weft.invalid/echo', ports: [{ name: 'echo', containerPort: port, protocol: 'TCP' }] }],
    },
  };
}

export async function createPods(cp: KubectlRunner, pods: readonly Record<string, unknown>[]): Promise<void> {
  await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: pods }));
}

/** status.podIPs as the kubelet posts them once the sandbox has its network. */
export async function postPodIP(cp: KubectlRunner, pod: string, ip: string, namespace = LAB_POD_NAMESPACE, ip6?: string): Promise<void> {
  const ips = [ip, ...(ip6 !== undefined ? [ip6] : [])];
  await kubectlOk(cp, ['patch', 'pod', pod, '-n', namespace, '--subresource=status', '--type', 'merge', '-p',
    JSON.stringify({ status: { phase: 'Running', podIP: ip, podIPs: ips.map((x) => ({ ip: x })) } })]);
}

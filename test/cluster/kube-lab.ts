// Test support for kube labs (`lab up --store kube`): kubectl as the cluster admin, the policy
// world as the API server serves it, and extra pods in namespaces of their own — each a real
// network namespace added through CNI with the kubelet's CNI_ARGS and its address posted to
// status.podIPs, as src/lab/kube.ts does for the lab's own containers.
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { CNI_BIN_DIR, WEFTCTL_BIN, execIn } from '../../src/lab/exec.js';
import { type KubectlRunner, createPods, kubeletCniArgs, labKubectl, podManifest, postPodIP } from '../../src/lab/kube.js';
import { ECHO_PORT, addLabNamespace, requireUpLab } from '../../src/lab/lab.js';
import { type LabName, parseLabName } from '../../src/lab/naming.js';
import { LabDirs, type LabRecord } from '../../src/lab/state.js';
import { formatIP, parseCidr } from '../../src/net/ip.js';
import { netnsPath } from '../../src/netns/index.js';
import type { Protocol } from '../../src/policy/model.js';

const WORLD_SCRIPT = fileURLToPath(new URL('./kube-world.js', import.meta.url));

export interface KubeLab {
  readonly name: LabName;
  readonly rec: LabRecord;
  readonly dirs: LabDirs;
  readonly kubectl: KubectlRunner;
}

export function kubeLab(name: string): KubeLab {
  const n = parseLabName(name);
  const rec = requireUpLab(n);
  const dirs = LabDirs.of(n);
  return { name: n, rec, dirs, kubectl: labKubectl(rec, dirs) };
}

/** kubectl's stdout; a non-zero exit throws with its message. */
export async function kubectl(lab: KubeLab, args: readonly string[], input?: string): Promise<string> {
  return (await lab.kubectl.kubectl(args, input !== undefined ? { input } : {})).stdout;
}

/** A Namespace with labels and the default ServiceAccount admission wants before it takes a Pod. */
export async function createNamespace(lab: KubeLab, name: string, labels: Record<string, string> = {}): Promise<void> {
  await kubectl(lab, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } },
    // No controller-manager runs in a lab, so nothing else creates it.
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default', namespace: name } },
  ] }));
}

export interface ExtraPod {
  readonly namespace: string;
  readonly name: string;
  readonly host: number;
  /** The container's network namespace (lab-prefixed: `lab down` removes it). */
  readonly netns: string;
  readonly ip: string;
}

/** `weftctl cni ADD|DEL` for an extra pod, on its host, as the kubelet would call CNI. */
function cni(lab: KubeLab, command: 'add' | 'del', namespace: string, name: string, host: number, netns: string) {
  const h = lab.rec.hostList.find((x) => x.index === host);
  if (!h) throw new Error(`lab ${lab.name} has no host h${host}`);
  return execIn(h.ns, [
    WEFTCTL_BIN, 'cni', command, '--conf', lab.dirs.conflist(host), '--netns', netnsPath(netns),
    '--container-id', `lab-${lab.name}-${namespace}-${name}`, '--cache-dir', lab.dirs.cniCache(host), '--cni-path', `${CNI_BIN_DIR}:/usr/lib/cni`,
    '--args', kubeletCniArgs(name, namespace),
  ], { timeoutMs: 30_000 });
}

/**
 * Pod `namespace/name` on host `host` as a kubelet would run it: the Pod object (the lab's
 * labels plus `labels`) bound to the node first, then CNI ADD with the lab's conflist and
 * K8S_POD_* args, then status.podIPs.
 */
export async function addKubePod(lab: KubeLab, namespace: string, name: string, host: number, labels: Record<string, string> = {}): Promise<ExtraPod> {
  const { ns } = addLabNamespace(lab.name, name.replace(/[^a-z0-9]/g, '').slice(0, 12));
  const pod = podManifest(name, host, ECHO_PORT, namespace) as { metadata: { labels: Record<string, string> } };
  pod.metadata.labels = { ...pod.metadata.labels, ...labels };
  await createPods(lab.kubectl, [pod]);
  const r = await cni(lab, 'add', namespace, name, host, ns);
  if (r.code !== 0) throw new Error(`CNI ADD of ${namespace}/${name} on h${host}: ${r.stderr.trim() || r.stdout.trim()}`);
  const addr = (JSON.parse(r.stdout) as { ips?: Array<{ address?: string }> }).ips?.[0]?.address;
  if (!addr) throw new Error(`CNI ADD of ${namespace}/${name} returned no address: ${r.stdout}`);
  const ip = formatIP(parseCidr(addr).ip);
  await postPodIP(lab.kubectl, name, ip, namespace);
  return { namespace, name, host, netns: ns, ip };
}

/**
 * Removes an extra pod as the kubelet does: CNI DEL, then the Pod object (forced: no kubelet is
 * there to confirm a graceful deletion). Its empty namespace stays for `lab down`.
 */
export async function deleteKubePod(lab: KubeLab, pod: ExtraPod): Promise<void> {
  const r = await cni(lab, 'del', pod.namespace, pod.name, pod.host, pod.netns);
  if (r.code !== 0) throw new Error(`CNI DEL of ${pod.namespace}/${pod.name}: ${r.stderr.trim() || r.stdout.trim()}`);
  await kubectl(lab, ['delete', 'pod', '-n', pod.namespace, pod.name, '--grace-period=0', '--force']);
}

/** A connection the evaluator is asked about (addresses as text: the answer crosses a pipe). */
export interface WorldConn {
  readonly src: string;
  readonly dst: string;
  readonly protocol: Protocol | 'ICMP';
  readonly port: number;
}

export interface WorldAnswer {
  /** Store records loadPolicyWorld could not parse (must be none). */
  readonly skipped: ReadonlyArray<{ key: string; reason: string }>;
  /** Each policy with the nodes holding an endpoint it selects (they must enforce it). */
  readonly policies: ReadonlyArray<{ namespace: string; name: string; hosts: string[] }>;
  readonly namespaces: ReadonlyArray<{ name: string; labels: Record<string, string> }>;
  readonly endpoints: ReadonlyArray<{ namespace: string; pod: string; host: string; labels: Record<string, string>; ips: string[] }>;
  /** The evaluator's verdict on each asked connection, in order. */
  readonly allowed: readonly boolean[];
}

/**
 * The policy world as weftd's policy service reads it — KubeKeyValueStore over the API, then
 * loadPolicyWorld — with the evaluator's verdict on `conns`. It runs in kube-world.js inside the
 * lab's outside namespace: the API server listens nowhere this process can reach.
 */
export async function readWorld(lab: KubeLab, conns: readonly WorldConn[]): Promise<WorldAnswer> {
  const r = await execIn(lab.rec.outside ?? '', [process.execPath, WORLD_SCRIPT, join(lab.dirs.kube, 'admin.kubeconfig')], {
    input: JSON.stringify({ conns }), timeoutMs: 30_000,
  });
  if (r.code !== 0) throw new Error(`kube-world.js failed (${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as WorldAnswer;
}

// The policy side of kube mode: NetworkPolicy, Namespace and Pod objects seen through the same
// key/value view the policy service reads from etcd or the file store, so the service, the
// compiler and the enforcer do not know where their world came from:
//   policies/<ns>/<name>               a NetworkPolicy (apiVersion, kind, metadata, spec)
//   namespaces/<name>                  {"name","labels"}
//   endpoints/<node>/<ns>/<pod>/eth0   a Pod with addresses in status.podIPs (other nodes' pods)
//   pods/<ns>/<name>                   {"labels","namedPorts"} of every pod, addresses or not: a
//                                      local pod's labels before the kubelet posts its status
// Each prefix is one list+watch informer. The view is read-only: policies are applied with
// kubectl, pod addresses are the kubelet's to publish.
import { CniCode, WeftError } from '../../errors.js';
import { createLogger, type Logger } from '../../log.js';
import { type KubeClient, KubeError } from '../../kube/client.js';
import { Informer, type InformerEvent, type InformerState, type KubeObject, listAll } from '../../kube/informer.js';
import { PODS } from '../../policy/store.js';
import type { KeyValue, KeyValueEvent, KeyValueStore, KeyValueWatch } from '../kv.js';


interface ContainerPort { readonly name?: string; readonly containerPort?: number; readonly protocol?: string }

export interface PodObject extends KubeObject {
  readonly spec?: {
    readonly nodeName?: string;
    readonly hostNetwork?: boolean;
    readonly containers?: readonly { readonly ports?: readonly ContainerPort[] }[];
  };
  readonly status?: { readonly phase?: string; readonly podIPs?: readonly { readonly ip: string }[]; readonly podIP?: string };
}

interface NetworkPolicyObject extends KubeObject {
  readonly spec?: unknown;
}

interface Resource {
  readonly path: string;
  /** key → value for one object; empty when the object is not part of this view. */
  readonly entries: (obj: never) => KeyValue[];
}

/** Pod containers' named ports, as NetworkPolicy resolves `port: http`. */
function namedPorts(pod: PodObject): Record<string, { port: number; protocol: string }> | undefined {
  const out: Record<string, { port: number; protocol: string }> = {};
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) {
      if (p.name && p.containerPort !== undefined) out[p.name] = { port: p.containerPort, protocol: p.protocol ?? 'TCP' };
    }
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Pods whose addresses belong to them: not host-network, not finished (their IPs are reused). */
function podHoldsAddresses(pod: PodObject): boolean {
  return pod.spec?.hostNetwork !== true && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
}

function podIPs(pod: PodObject): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip).filter((ip) => typeof ip === 'string' && ip !== '');
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips;
}

const RESOURCES: Record<string, Resource> = {
  'policies/': {
    path: '/apis/networking.k8s.io/v1/networkpolicies',
    entries: (p: NetworkPolicyObject) => [{
      key: `policies/${p.metadata.namespace ?? 'default'}/${p.metadata.name}`,
      value: JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: p.metadata.name, namespace: p.metadata.namespace }, spec: p.spec }),
    }],
  },
  'namespaces/': {
    path: '/api/v1/namespaces',
    entries: (n: KubeObject) => [{ key: `namespaces/${n.metadata.name}`, value: JSON.stringify({ name: n.metadata.name, labels: n.metadata.labels ?? {} }) }],
  },
  'endpoints/': {
    path: '/api/v1/pods',
    entries: (pod: PodObject) => {
      const ips = podIPs(pod);
      const node = pod.spec?.nodeName;
      if (!node || ips.length === 0 || !podHoldsAddresses(pod)) return [];
      const ns = pod.metadata.namespace ?? 'default';
      const ports = namedPorts(pod);
      return [{
        key: `endpoints/${node}/${ns}/${pod.metadata.name}/eth0`,
        value: JSON.stringify({ namespace: ns, pod: pod.metadata.name, labels: pod.metadata.labels ?? {}, ips, host: node, ifname: 'eth0', ...(ports && { namedPorts: ports }) }),
      }];
    },
  },
  [PODS]: {
    path: '/api/v1/pods',
    entries: (pod: PodObject) => {
      if (!podHoldsAddresses(pod)) return [];
      const ports = namedPorts(pod);
      return [{ key: `${PODS}${pod.metadata.namespace ?? 'default'}/${pod.metadata.name}`, value: JSON.stringify({ labels: pod.metadata.labels ?? {}, ...(ports && { namedPorts: ports }) }) }];
    },
  },
};

/** The view holding `prefix`: its own (`policies/`) or a part of it (`policies/prod/`). */
function resourceFor(prefix: string): Resource {
  const r = Object.entries(RESOURCES).find(([p]) => prefix.startsWith(p))?.[1];
  if (!r) throw new WeftError(CniCode.Internal, `kube store: no API view for ${JSON.stringify(prefix)} (known: ${Object.keys(RESOURCES).join(', ')})`);
  return r;
}

const objectId = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;

interface Subscriber {
  state(s: InformerState): void;
  event(ev: InformerEvent<KubeObject>): void;
}

interface SharedInformer {
  readonly informer: Informer<KubeObject>;
  readonly subs: Set<Subscriber>;
}

export class KubeKeyValueStore implements KeyValueStore {
  readonly where: string;
  private readonly log: Logger;
  /** Informers created this turn, not started yet: a watch of the same collection joins one. */
  private readonly starting = new Map<string, SharedInformer>();

  constructor(private readonly client: KubeClient, private readonly onClose: () => Promise<void> = async () => {}, log?: Logger) {
    this.where = client.server;
    this.log = log ?? createLogger({ component: 'kube-kv' });
  }

  async get(key: string): Promise<string | undefined> {
    if (!Object.keys(RESOURCES).some((p) => key.startsWith(p))) return undefined;
    // One pod is one GET (the policy service asks when a CNI ADD beats the pod watch).
    const pod = key.startsWith(PODS) ? key.slice(PODS.length).split('/') : undefined;
    if (pod?.length === 2) {
      try {
        const obj = await this.client.get<PodObject>(`/api/v1/namespaces/${encodeURIComponent(pod[0]!)}/pods/${encodeURIComponent(pod[1]!)}`);
        return RESOURCES[PODS]!.entries(obj as never)[0]?.value;
      } catch (err) {
        if (err instanceof KubeError && err.httpStatus === 404) return undefined;
        throw err;
      }
    }
    return (await this.list(key.slice(0, key.lastIndexOf('/') + 1))).find((e) => e.key === key)?.value;
  }

  async put(key: string): Promise<void> {
    throw this.readOnly(key);
  }

  async delete(key: string): Promise<boolean> {
    throw this.readOnly(key);
  }

  private readOnly(key: string): WeftError {
    const what = key.startsWith('policies/') ? 'NetworkPolicies are API objects: kubectl apply / kubectl delete'
      : key.startsWith('namespaces/') ? 'Namespaces are API objects: kubectl label namespace'
        : 'pod addresses are published by the kubelet in Pod status';
    return new WeftError(CniCode.InvalidEnvironment, `kube store is read-only for ${key}: ${what}`);
  }

  async list(prefix: string): Promise<KeyValue[]> {
    const r = resourceFor(prefix);
    const { items } = await listAll<KubeObject>(this.client, r.path);
    return items.flatMap((o) => r.entries(o as never)).filter((e) => e.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Snapshot, then put/delete per object change; an object that leaves the view (a pod that
   * finished, lost its node) is a delete of the key it had. A re-list after 410 is a new snapshot.
   * Watches of one collection opened in the same turn share one informer: endpoints/ and pods/
   * both read Pods, and a second watch of every Pod in the cluster would double the API server's
   * work and weftd's parsing.
   */
  watch(prefix: string, onEvent: (ev: KeyValueEvent) => void): KeyValueWatch {
    const r = resourceFor(prefix);
    const keysOf = new Map<string, string[]>();
    const view = (o: KubeObject) => r.entries(o as never).filter((e) => e.key.startsWith(prefix));
    const sub: Subscriber = {
      state: (s) => { if (s.type === 'disconnected') onEvent({ type: 'error', reason: s.reason }); },
      event: (ev) => {
        if (ev.type === 'snapshot') {
          keysOf.clear();
          const entries: KeyValue[] = [];
          for (const o of ev.items) {
            const es = view(o);
            keysOf.set(objectId(o), es.map((e) => e.key));
            entries.push(...es);
          }
          onEvent({ type: 'snapshot', entries });
          return;
        }
        const id = objectId(ev.obj);
        const before = keysOf.get(id) ?? [];
        const now = ev.type === 'delete' ? [] : view(ev.obj);
        const nowKeys = new Set(now.map((e) => e.key));
        for (const k of before) if (!nowKeys.has(k)) onEvent({ type: 'delete', key: k });
        for (const e of now) onEvent({ type: 'put', key: e.key, value: e.value });
        if (now.length > 0) keysOf.set(id, [...nowKeys]);
        else keysOf.delete(id);
      },
    };
    let shared = this.starting.get(r.path);
    if (!shared) {
      const subs = new Set<Subscriber>();
      const informer = new Informer<KubeObject>({
        client: this.client,
        path: r.path,
        log: this.log,
        onState: (st) => { for (const x of subs) x.state(st); },
        onEvent: (ev) => { for (const x of subs) x.event(ev); },
      });
      const created: SharedInformer = { informer, subs };
      shared = created;
      this.starting.set(r.path, created);
      queueMicrotask(() => {
        this.starting.delete(r.path);
        void created.informer.start();
      });
    }
    const mine = shared;
    mine.subs.add(sub);
    return {
      close: async () => {
        mine.subs.delete(sub);
        if (mine.subs.size === 0) await mine.informer.close();
      },
    };
  }

  async close(): Promise<void> {
    await this.onClose();
  }
}

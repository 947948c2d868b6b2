// bench kube's hands inside the topology's outside namespace, where etcd and kube-apiserver
// listen and the root namespace cannot reach: a long-lived process that reads one JSON request
// per stdin line and answers one JSON line each, in order. Keeping it alive keeps its store
// connection warm, so a timed write costs one request, not a process start and a TLS handshake.
//   {op:'pods', pods}          kube: Pods bound to their node, then status.podIPs posted (as the
//                              scheduler binds and the kubelet posts them); not timed
//   {op:'dump'}                the policy world's raw entries (policies/, namespaces/, endpoints/)
//                              as the weftds' key/value view of the store shows them
//   {op:'put-policy', obj}     one NetworkPolicy written the store's own way (kube: POST to the
//                              API; etcd: the key `weftctl policy apply` writes); answers
//                              {t0, t1}, epoch ms just before the request and after its answer
// argv[2]: {store: {type:'kube', kubeconfig} | {type:'etcd', endpoint}}.
import { createInterface } from 'node:readline';
import { KubeClient } from '../src/kube/client.js';
import { resolveKubeConnection } from '../src/kube/config.js';
import { mapLimit } from '../src/map-limit.js';
import { ENDPOINTS, NAMESPACES, POLICIES, policyKey } from '../src/policy/store.js';
import { DEFAULT_PREFIX } from '../src/store/flags.js';
import { type KeyValue, type KeyValueStore, openKeyValueStore } from '../src/store/kv.js';

export type DriverStore = { readonly type: 'kube'; readonly kubeconfig: string } | { readonly type: 'etcd'; readonly endpoint: string };

export interface DriverPod {
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  readonly labels: Record<string, string>;
  readonly ip: string;
}

export type DriverRequest =
  | { readonly op: 'pods'; readonly pods: readonly DriverPod[] }
  | { readonly op: 'dump' }
  | { readonly op: 'put-policy'; readonly obj: { metadata: { namespace: string; name: string } } };

export type DriverAnswer =
  | { readonly ok: true; readonly t0?: number; readonly t1?: number; readonly entries?: KeyValue[] }
  | { readonly ok: false; readonly error: string };

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

async function main(store: DriverStore): Promise<void> {
  const client = store.type === 'kube' ? new KubeClient(resolveKubeConnection(store.kubeconfig)) : undefined;
  const kv: KeyValueStore = await openKeyValueStore(store.type === 'kube'
    ? { type: 'kube', kubeconfig: store.kubeconfig, netConfig: '/dev/null', annotationPrefix: 'flannel.alpha.coreos.com', prefix: DEFAULT_PREFIX }
    : { type: 'etcd', endpoints: [store.endpoint], prefix: DEFAULT_PREFIX });
  const handle = async (req: DriverRequest): Promise<DriverAnswer> => {
    switch (req.op) {
      case 'pods': {
        if (!client) throw new Error('pods: only for the kube store');
        await mapLimit(req.pods, 16, async (p) => {
          const path = `/api/v1/namespaces/${p.namespace}/pods`;
          await client.request('POST', path, { body: {
            apiVersion: 'v1', kind: 'Pod', metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
            spec: { nodeName: p.node, automountServiceAccountToken: false, containers: [{ name: 'c', image: 'weft.invalid/bench' }] },
          } });
          await client.mergePatch(`${path}/${p.name}/status`, { status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] } });
        });
        return { ok: true };
      }
      case 'dump': {
        const entries = (await Promise.all([POLICIES, NAMESPACES, ENDPOINTS].map((p) => kv.list(p)))).flat();
        return { ok: true, entries };
      }
      case 'put-policy': {
        const { namespace, name } = req.obj.metadata;
        const t0 = epochMs();
        if (client) await client.request('POST', `/apis/networking.k8s.io/v1/namespaces/${namespace}/networkpolicies`, { body: req.obj });
        else await kv.put(policyKey(namespace, name), JSON.stringify(req.obj));
        return { ok: true, t0, t1: epochMs() };
      }
    }
  };
  // One request at a time, answers in order: the bench awaits each before it sends the next.
  let chain = Promise.resolve();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    chain = chain.then(async () => {
      let answer: DriverAnswer;
      try {
        answer = await handle(JSON.parse(line) as DriverRequest);
      } catch (err) {
        answer = { ok: false, error: err instanceof Error ? err.message : String(err) };
      }
      process.stdout.write(`${JSON.stringify(answer)}\n`);
    });
  });
  await new Promise((r) => lines.once('close', r));
  await chain;
  client?.close();
  await kv.close();
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '')) {
  main((JSON.parse(process.argv[2] ?? '{}') as { store: DriverStore }).store).catch((err: unknown) => {
    process.stderr.write(`kube-driver: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}

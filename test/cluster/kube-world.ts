// Run inside a kube lab's outside namespace, where its API server listens:
//   node kube-world.js KUBECONFIG   < {"conns":[{"src","dst","protocol","port"}]}
// Lists the policy world through the same KubeKeyValueStore weftd's policy service reads and
// loadPolicyWorld, and prints it (as WorldAnswer in kube-lab.ts) with the evaluator's verdict on
// every connection asked about.
import { readFileSync } from 'node:fs';
import { KubeClient } from '../../src/kube/client.js';
import { loadKubeconfig } from '../../src/kube/config.js';
import { formatIP, parseIP } from '../../src/net/ip.js';
import { allowed, policySelects } from '../../src/policy/evaluate.js';
import { loadPolicyWorld } from '../../src/policy/store.js';
import { KubeKeyValueStore } from '../../src/store/kube/kube-kv.js';
import type { WorldAnswer, WorldConn } from './kube-lab.js';

async function main(): Promise<void> {
  const kubeconfig = process.argv[2];
  if (kubeconfig === undefined) throw new Error('usage: kube-world.js KUBECONFIG < {"conns":[…]}');
  const { conns } = JSON.parse(readFileSync(0, 'utf8')) as { conns: WorldConn[] };
  const client = new KubeClient(loadKubeconfig(kubeconfig));
  const kv = new KubeKeyValueStore(client, async () => client.close());
  try {
    const { world, skipped } = await loadPolicyWorld(kv);
    const answer: WorldAnswer = {
      skipped,
      policies: world.policies.map((p) => ({
        namespace: p.namespace, name: p.name,
        hosts: [...new Set(world.endpoints.filter((e) => policySelects(p, e)).map((e) => e.host))].sort(),
      })),
      namespaces: world.namespaces.map((n) => ({ name: n.name, labels: { ...n.labels } })),
      endpoints: world.endpoints.map((e) => ({ namespace: e.namespace, pod: e.pod, host: e.host, labels: { ...e.labels }, ips: e.ips.map(formatIP) })),
      allowed: conns.map((c) => allowed({ src: parseIP(c.src), dst: parseIP(c.dst), protocol: c.protocol, port: c.port }, world)),
    };
    process.stdout.write(JSON.stringify(answer) + '\n');
  } finally {
    await kv.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});

// The converge benchmark's store writer, run as its own process so it can sit in the namespace
// that reaches the store (etcd and kube-apiserver listen in the topology's outside namespace,
// which the root namespace cannot reach). argv[2] is a JSON job; it prints one JSON line
// {t0, t1}: epoch ms (sub-ms precision) just before the first write and just after the last.
// For the kube store a peer is a Node, created as flannel's/weft's nodes leave it: podCIDR set,
// public-ip / backend-type / backend-data / kube-subnet-manager annotations.
import { KubeClient } from '../src/kube/client.js';
import { resolveKubeConnection } from '../src/kube/config.js';
import { mapLimit } from '../src/map-limit.js';
import { formatCidr, ipFromValue, parseIPv4 } from '../src/net/ip.js';
import type { Cidr } from '../src/net/ip.js';
import { EtcdStore } from '../src/store/etcd/etcd-store.js';
import { FileStore } from '../src/store/file/file-store.js';
import { DEFAULT_ANNOTATION_PREFIX } from '../src/store/flags.js';

export interface WriterJob {
  readonly store:
    | { readonly type: 'file'; readonly dir: string }
    | { readonly type: 'etcd'; readonly endpoint: string }
    /** POSTs Nodes with this (admin) kubeconfig, `concurrency` requests in flight. */
    | { readonly type: 'kube'; readonly kubeconfig: string; readonly concurrency: number };
  /** Network config text to put first (not timed). */
  readonly config?: string;
  /** Peer leases to write (subnet i of 10.0.0.0/8 as /24, skipping `skip`). */
  readonly peers: number;
  /** Index of a subnet that must not be written (the agent's own), or -1. */
  readonly skip: number;
}

/** Keys per bulk call: for etcd the bulk call splits into ≤ 128-key transactions itself. */
const BULK = 1024;

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

function octets(v: number): string {
  return [24, 16, 8, 0].map((s) => String((v >>> s) & 255)).join('.');
}

/** The i-th fake peer: subnet 10.x.y.0/24, PublicIP in 198.19/16, a unique VtepMAC. */
export function peerLease(i: number): { subnet: Cidr; value: string } {
  const subnet: Cidr = { ip: ipFromValue(4, parseIPv4('10.0.0.0').value + (BigInt(i) << 8n)), prefix: 24 };
  const hex = (x: number) => (x & 255).toString(16).padStart(2, '0');
  const mac = `0a:58:${hex(i >> 16)}:${hex(i >> 8)}:${hex(i)}:01`;
  const publicIP = octets(((198 << 24) | (19 << 16)) + i + 1);
  return { subnet, value: JSON.stringify({ PublicIP: publicIP, BackendType: 'vxlan', BackendData: { VtepMAC: mac } }) };
}

/** The i-th fake peer as a Node (name, podCIDR, flannel's annotations with the lease's values). */
export function peerNode(i: number): Record<string, unknown> {
  const { subnet, value } = peerLease(i);
  const v = JSON.parse(value) as { PublicIP: string; BackendType: string; BackendData: unknown };
  const a = DEFAULT_ANNOTATION_PREFIX;
  const cidr = formatCidr(subnet);
  return {
    apiVersion: 'v1', kind: 'Node',
    metadata: {
      name: `peer-${i}`,
      annotations: {
        [`${a}/public-ip`]: v.PublicIP, [`${a}/backend-type`]: v.BackendType,
        [`${a}/backend-data`]: JSON.stringify(v.BackendData), [`${a}/kube-subnet-manager`]: 'true',
      },
    },
    spec: { podCIDR: cidr, podCIDRs: [cidr] },
  };
}

/**
 * Nodes created through the API as fast as it takes them. KubeClient keeps at most 16 sockets,
 * so above that the requests are spread over several clients (HTTP/1.1: one request per socket).
 */
async function createNodes(job: WriterJob & { store: { type: 'kube' } }): Promise<void> {
  const conn = resolveKubeConnection(job.store.kubeconfig);
  const clients = Array.from({ length: Math.max(1, Math.ceil(job.store.concurrency / 16)) }, () => new KubeClient(conn));
  try {
    const nodes: Record<string, unknown>[] = [];
    for (let i = 0; nodes.length < job.peers; i++) if (i !== job.skip) nodes.push(peerNode(i));
    // Connections (TLS handshakes) are opened before the clock starts, as a controller's would be.
    await Promise.all(clients.flatMap((c) => Array.from({ length: Math.min(16, job.store.concurrency) }, () => c.get('/version'))));
    const t0 = epochMs();
    await mapLimit(nodes, job.store.concurrency, (node, i) => clients[i % clients.length]!.request('POST', '/api/v1/nodes', { body: node, timeoutMs: 60_000 }));
    const t1 = epochMs();
    process.stdout.write(`${JSON.stringify({ t0, t1 })}\n`);
  } finally {
    for (const c of clients) c.close();
  }
}

async function main(job: WriterJob): Promise<void> {
  if (job.store.type === 'kube') {
    if (job.config !== undefined) throw new Error('kube: the network config is a file, not written by the writer');
    await createNodes(job as WriterJob & { store: { type: 'kube' } });
    return;
  }
  const store = job.store.type === 'file'
    ? new FileStore({ dir: job.store.dir, prefix: '/weft/network' })
    : new EtcdStore({ endpoints: [job.store.endpoint], prefix: '/weft/network', requestTimeoutMs: 10_000 });
  try {
    if (job.config !== undefined) {
      // etcd was just started: retry until it answers.
      const deadline = Date.now() + 20_000;
      for (;;) {
        try { await store.putConfig(job.config); break; } catch (err) {
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    const items: { subnet: Cidr; value: string }[] = [];
    for (let i = 0; items.length < job.peers; i++) if (i !== job.skip) items.push(peerLease(i));
    const t0 = epochMs();
    for (let s = 0; s < items.length; s += BULK) {
      const res = await store.writeSubnetsIfAbsent(items.slice(s, s + BULK), 3600);
      const conflicts = res.filter((r) => r.type === 'conflict').length;
      if (conflicts > 0) throw new Error(`${conflicts} of the peer leases were already taken`);
    }
    const t1 = epochMs();
    process.stdout.write(`${JSON.stringify({ t0, t1 })}\n`);
  } finally {
    await store.close();
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '')) {
  main(JSON.parse(process.argv[2] ?? '{}') as WriterJob).catch((err: unknown) => {
    process.stderr.write(`converge-writer: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}

// `weftctl doctor SRC DST`: walks the path a packet from SRC to DST would take and looks at each
// stretch in the kernel and the store, in path order — source pod, its node's side, the backend's
// entries toward the destination's subnet, the lease and agents behind them, policy, weftd's
// nftables, the destination node's side, the destination pod. Nothing is changed.
import { parseLease, type Lease } from '../store/lease.js';
import { parseNetworkConfig } from '../store/config.js';
import { openStore, type StoreSettings } from '../store/flags.js';
import { openKeyValueStore } from '../store/kv.js';
import { loadPolicyWorld } from '../policy/store.js';
import type { PolicyWorld } from '../policy/model.js';
import { formatIP } from '../net/ip.js';
import { hostLinkHop } from './host.js';
import { agentHop, leaseFor, peerLeaseHop, sameNode } from './lease.js';
import { type Topology, resolvePod } from './locate.js';
import { agentRulesHop } from './nft-rules.js';
import { podInterfaceHop, podRouteHop } from './pod.js';
import { policyHop } from './policy.js';
import { routedBackendHops } from './routes.js';
import { vxlanHops } from './vxlan.js';
import type { DoctorContext, DoctorReport, Hop, Probe } from './types.js';

export interface StoreView {
  readonly leases: Lease[];
  readonly backend: DoctorContext['backend'];
  readonly world: PolicyWorld | undefined;
  /** Problems reading the store, reported as a hop. */
  readonly problems: string[];
}

export async function readStore(settings: StoreSettings): Promise<StoreView> {
  const problems: string[] = [];
  let leases: Lease[] = [];
  let backend: DoctorContext['backend'];
  let world: PolicyWorld | undefined;
  try {
    const store = await openStore(settings, { create: false });
    try {
      const text = await store.getConfig();
      if (text !== undefined) {
        const cfg = parseNetworkConfig(text);
        // Each backend's parsed settings object (its own keys with defaults), read here by key.
        backend = { type: cfg.backend.type, settings: cfg.backend.settings as Readonly<Record<string, unknown>> };
      }
      const { entries } = await store.listSubnets({ withExpiry: true });
      for (const e of entries) {
        const p = parseLease(e);
        if (p.ok) leases.push(p.lease);
        else problems.push(`skipped a lease: ${p.reason}`);
      }
    } finally {
      await store.close();
    }
  } catch (err) {
    problems.push(`leases: ${err instanceof Error ? err.message : String(err)}`);
    leases = [];
  }
  try {
    const kv = await openKeyValueStore(settings, { create: false });
    try {
      const r = await loadPolicyWorld(kv);
      world = r.world;
      for (const s of r.skipped) problems.push(`skipped ${s.key}: ${s.reason}`);
    } finally {
      await kv.close();
    }
  } catch (err) {
    problems.push(`policies: ${err instanceof Error ? err.message : String(err)}`);
  }
  return { leases, backend, world, problems };
}

function backendHops(ctx: DoctorContext): Hop[] {
  const node = ctx.src.node;
  if (sameNode(ctx)) return [{ id: 'backend-route', where: `node ${node?.name ?? '?'}`, title: 'backend', status: 'skip', detail: 'both pods on one node: no backend between them' }];
  if (ctx.backend === undefined) return [{ id: 'backend-route', where: `node ${node?.name ?? '?'}`, title: 'backend', status: 'skip', detail: 'no overlay (no network config): the underlay carries the packet' }];
  if (!node) return [{ id: 'backend-route', where: 'node ?', title: 'backend', status: 'skip', detail: 'the source node is not visible from here' }];
  const lease = leaseFor(ctx.leases, ctx.dst.ip);
  if (!lease) return [{ id: 'backend-route', where: `node ${node.name}`, title: 'backend', status: 'skip', detail: `no lease covers ${formatIP(ctx.dst.ip)} (see the lease)` }];
  if (ctx.backend.type === 'vxlan') return vxlanHops(ctx, node, lease);
  return routedBackendHops(ctx, node, lease, ctx.backend.type);
}

export interface DoctorInput {
  readonly topology: Topology;
  readonly src: string;
  readonly dst: string;
  readonly probe: Probe;
  readonly store: StoreView;
  readonly storeFlags: string;
}

export async function runDoctor(input: DoctorInput): Promise<DoctorReport> {
  const endpoints = input.store.world?.endpoints ?? [];
  const src = resolvePod(input.src, input.topology, endpoints);
  const dst = resolvePod(input.dst, input.topology, endpoints);
  const srcAgentHealth = src.node?.health ? await src.node.health() : undefined;
  const ctx: DoctorContext = {
    src, dst, probe: input.probe, leases: input.store.leases, backend: input.store.backend, world: input.store.world,
    storeFlags: input.storeFlags, now: Date.now(), srcAgent: srcAgentHealth,
  };
  const hops: Hop[] = [];
  if (input.store.problems.length > 0) {
    hops.push({ id: 'store', where: 'store', title: 'reading the store', status: 'warn', detail: input.store.problems.join('; '), cause: 'what doctor knows from the store may be incomplete' });
  }
  hops.push(podInterfaceHop(src, 'src'), podRouteHop(ctx), hostLinkHop(src, 'src'));
  hops.push(...backendHops(ctx));
  hops.push(await agentHop(ctx, 'src', srcAgentHealth));
  if (!sameNode(ctx)) {
    hops.push(peerLeaseHop(ctx));
    hops.push(await agentHop(ctx, 'dst', dst.node?.health ? await dst.node.health() : undefined));
  }
  hops.push(await policyHop(ctx), await agentRulesHop(ctx, src.node, 'src'));
  if (!sameNode(ctx)) hops.push(await agentRulesHop(ctx, dst.node, 'dst'));
  hops.push(hostLinkHop(dst, 'dst'));
  hops.push(podInterfaceHop(dst, 'dst'));
  const firstFailure = hops.find((h) => h.status === 'fail');
  return {
    src: { name: src.name, ip: formatIP(src.ip), node: src.nodeName },
    dst: { name: dst.name, ip: formatIP(dst.ip), node: dst.nodeName },
    probe: input.probe, hops, ok: firstFailure === undefined, firstFailure,
  };
}

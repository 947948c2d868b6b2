// The web view's model from what the server gathered: the store's leases, network config and
// policy world, and each host's weftd's answer. Pure, so the rules (which name a host gets, which
// peers an agent lacks, which policies select a pod) are unit-tested without a store or a browser.
import { type Cidr, type IP, cidrContains, formatCidr, formatIP, networkOf } from '../net/ip.js';
import type { Lease } from '../store/lease.js';
import type { Endpoint, PolicyWorld } from '../policy/model.js';
import { policySelects } from '../policy/evaluate.js';
import { UI_MODEL_VERSION, type UiAgent, type UiBgpSession, type UiDrop, type UiHost, type UiModel, type UiPod, type UiPolicy } from './model.js';
import type { FlowRecord } from '../flows/record.js';
import { mergeFlows } from '../flows/query.js';

/** What asking one host's weftd gave. */
export type AgentAnswer =
  | {
    readonly type: 'answered';
    /** The node name weftd runs with. */
    readonly node: string;
    readonly ready: boolean;
    readonly detail: string;
    /** Peer subnets (formatCidr) in its dataplane after its last pass. */
    readonly programmed: readonly string[];
    readonly problems: readonly string[];
    readonly bgp?: { readonly asn: number; readonly sessions: readonly UiBgpSession[] };
  }
  | { readonly type: 'down'; readonly detail: string }
  | { readonly type: 'unknown'; readonly detail: string };

export interface ModelInput {
  readonly seq: number;
  readonly at: number;
  readonly source: UiModel['source'];
  readonly network: UiModel['network'];
  readonly leases: readonly Lease[];
  /** By lease subnet (formatCidr); a lease without an entry is 'unknown'. */
  readonly agents: ReadonlyMap<string, AgentAnswer>;
  /** Node names known from outside the store (a lab's hosts), by lease subnet. */
  readonly names: ReadonlyMap<string, string>;
  readonly world: PolicyWorld | undefined;
  readonly problems: readonly string[];
  /** Each host's bytes to and from its peers (by peer subnet), by host id, where weftd told. */
  readonly traffic?: ReadonlyMap<string, Readonly<Record<string, { readonly tx: number; readonly rx: number }>>>;
  /** Policy-dropped flow records from every weftd asked. */
  readonly drops?: readonly (readonly FlowRecord[])[];
}

/** Drops the model carries, newest first. */
export const MODEL_DROPS = 50;

const NOT_ASKED: AgentAnswer = { type: 'unknown', detail: 'no way to ask this host\'s weftd from here' };

/** Finds the lease holding an address without a scan per address: one map per prefix length. */
export class SubnetIndex {
  private readonly byPrefix = new Map<number, Map<string, string>>();

  /** `subnets`: each lease's subnet (the host's id), with its IPv6 subnet too where it has one. */
  constructor(subnets: readonly (Cidr | { readonly subnet: Cidr; readonly ipv6Subnet?: Cidr | undefined })[]) {
    for (const x of subnets) {
      const own = 'subnet' in x ? x : { subnet: x };
      for (const s of [own.subnet, ...(own.ipv6Subnet ? [own.ipv6Subnet] : [])]) {
        let m = this.byPrefix.get(s.prefix);
        if (!m) this.byPrefix.set(s.prefix, (m = new Map()));
        m.set(formatCidr(networkOf(s)), formatCidr(own.subnet));
      }
    }
  }

  /** The id (formatCidr) of the subnet holding ip, the longest prefix first. */
  find(ip: IP): string | undefined {
    for (const prefix of [...this.byPrefix.keys()].sort((a, b) => b - a)) {
      if (prefix > (ip.family === 4 ? 32 : 128)) continue;
      const key = formatCidr(networkOf({ ip, prefix }));
      const hit = this.byPrefix.get(prefix)?.get(key);
      if (hit !== undefined) return hit;
    }
    return undefined;
  }
}

/**
 * An answer's UiAgent for one set of hosts. An answer is reused while weftd's /peers is unchanged
 * (src/ui/agents.ts) and the hosts mostly are too, so its missing list — a look at every host — is
 * worked out again only when one of them changes: with every weftd answering, a model of n hosts
 * is n² looks, not to be done each second.
 */
const agentMemo = new WeakMap<AgentAnswer, { readonly hostsKey: string; readonly agent: UiAgent }>();

function agentOf(answer: AgentAnswer, self: string, hostIds: readonly string[], hostsKey: string): UiAgent {
  if (answer.type !== 'answered') return { state: answer.type, detail: answer.detail };
  const memo = agentMemo.get(answer);
  if (memo?.hostsKey === hostsKey) return memo.agent;
  const agent = missingOf(answer, self, hostIds);
  agentMemo.set(answer, { hostsKey, agent });
  return agent;
}

function missingOf(answer: Extract<AgentAnswer, { type: 'answered' }>, self: string, hostIds: readonly string[]): UiAgent {
  const have = new Set(answer.programmed);
  return {
    state: answer.ready ? 'ready' : 'not-ready',
    detail: answer.detail,
    programmed: answer.programmed.length,
    missing: hostIds.filter((id) => id !== self && !have.has(id)),
    problems: answer.problems,
  };
}

function podsOf(endpoints: readonly Endpoint[], index: SubnetIndex): Map<string, { ep: Endpoint; ips: string[]; hostId: string | undefined }> {
  const pods = new Map<string, { ep: Endpoint; ips: string[]; hostId: string | undefined }>();
  for (const ep of endpoints) {
    const id = `${ep.namespace}/${ep.pod}`;
    const ips = ep.ips.map(formatIP);
    const hostId = ep.ips.map((ip) => index.find(ip)).find((h) => h !== undefined);
    const seen = pods.get(id);
    // A pod with a second interface (net1) is one pod with more addresses.
    if (seen) { for (const ip of ips) if (!seen.ips.includes(ip)) seen.ips.push(ip); seen.hostId ??= hostId; } else pods.set(id, { ep, ips, hostId });
  }
  return pods;
}

export function buildModel(input: ModelInput): UiModel {
  const leases = [...input.leases].sort((a, b) => (a.subnet.ip.value < b.subnet.ip.value ? -1 : a.subnet.ip.value > b.subnet.ip.value ? 1 : a.subnet.prefix - b.subnet.prefix));
  const ids = leases.map((l) => formatCidr(l.subnet));
  const hostsKey = ids.join(',');
  // A pod of a dual-stack host is found by either of its addresses.
  const index = new SubnetIndex(leases);
  const world = input.world;
  const pods = podsOf(world?.endpoints ?? [], index);
  // A host's name from its pods' endpoints, where neither weftd nor the lab named it.
  const nodeOfHost = new Map<string, string>();
  for (const p of pods.values()) if (p.hostId !== undefined && !nodeOfHost.has(p.hostId)) nodeOfHost.set(p.hostId, p.ep.host);

  const hosts: UiHost[] = leases.map((l, i) => {
    const id = ids[i] ?? formatCidr(l.subnet);
    const answer = input.agents.get(id) ?? NOT_ASKED;
    const traffic = input.traffic?.get(id);
    const name = (answer.type === 'answered' ? answer.node : undefined) ?? input.names.get(id) ?? nodeOfHost.get(id) ?? formatIP(l.attrs.publicIP);
    return {
      id, name, subnet: id, publicIP: formatIP(l.attrs.publicIP), backend: l.attrs.backendType,
      ...(l.ipv6Subnet && l.ipv6Subnet !== l.subnet && { ipv6Subnet: formatCidr(l.ipv6Subnet) }),
      ...(l.attrs.publicIPv6 && l.attrs.publicIPv6 !== l.attrs.publicIP && { publicIPv6: formatIP(l.attrs.publicIPv6) }),
      ...(l.expiresAt !== undefined && { expiresAt: l.expiresAt }),
      agent: agentOf(answer, id, ids, hostsKey),
      ...(answer.type === 'answered' && answer.bgp && { bgp: answer.bgp }),
      ...(traffic !== undefined && { traffic }),
    };
  });

  const policies = world?.policies ?? [];
  const policyIds = policies.map((p) => `${p.namespace}/${p.name}`);
  const uiPods: UiPod[] = [...pods.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([id, { ep, ips, hostId }]) => {
    const selecting = policies.filter((p) => policySelects(p, ep));
    return {
      id, namespace: ep.namespace, pod: ep.pod, node: ep.host, ...(hostId !== undefined && { hostId }), ips, labels: ep.labels,
      policies: selecting.map((p) => `${p.namespace}/${p.name}`),
      isolated: { ingress: selecting.some((p) => p.types.ingress), egress: selecting.some((p) => p.types.egress) },
    };
  });
  const uiPolicies: UiPolicy[] = policies.map((p, i) => ({
    id: policyIds[i] ?? `${p.namespace}/${p.name}`, namespace: p.namespace, name: p.name,
    types: [...(p.types.ingress ? ['Ingress' as const] : []), ...(p.types.egress ? ['Egress' as const] : [])],
    selects: uiPods.filter((pod) => pod.policies.includes(`${p.namespace}/${p.name}`)).map((pod) => pod.id),
  })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  return {
    version: UI_MODEL_VERSION, seq: input.seq, at: input.at, source: input.source,
    ...(input.network !== undefined && { network: input.network }),
    hosts, pods: uiPods, policies: uiPolicies, problems: input.problems,
    ...(input.drops && { drops: dropsOf(input.drops) }),
  };
}

/** The latest drops of every node, one per connection (two nodes may both have seen one), newest first. */
function dropsOf(lists: readonly (readonly FlowRecord[])[]): UiDrop[] {
  return mergeFlows(lists).filter((f) => f.verdict === 'dropped').reverse().slice(0, MODEL_DROPS).map((f) => ({
    src: f.src, dst: f.dst, proto: f.proto, dstPort: f.dstPort, ...(f.policy !== undefined && { policy: f.policy }),
    packets: f.packets, at: f.end ?? f.start, node: f.node,
  }));
}

/** The host id holding an address, for the doctor's answer. */
export function hostIdOf(leases: readonly Lease[], ip: IP): string | undefined {
  const l = leases.find((x) => cidrContains(x.subnet, ip));
  return l ? formatCidr(l.subnet) : undefined;
}

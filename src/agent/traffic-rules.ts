// weftd's nftables rules, all in its own table `inet weft` (the CNI plugins use `weft-cni`;
// nothing else is touched): forward accept for the cluster network, with --ip-masq masquerade
// for pod traffic leaving it, and, once the node's subnet is known, the per-peer traffic
// counters' maps and rules (src/agent/peer-traffic.ts). The table is written whole in one
// transaction (create, flush, fill), so re-applying is idempotent and never leaves a half state;
// `flush table` removes rules only, so the counters and map elements weftd keeps for its peers
// survive it.
import { type Cidr, formatCidr } from '../net/ip.js';
import { nftApply, nftListRules } from '../nft/nft.js';
import { PEER_RULES, peerAccountingScript } from './peer-traffic.js';

export const AGENT_TABLE = 'weft';

export interface AgentRulesSpec {
  /** The whole cluster network (FLANNEL_NETWORK; FLANNEL_IPV6_NETWORK on an IPv6-only network). */
  readonly network: Cidr;
  /** The IPv6 cluster network of a dual-stack network (FLANNEL_IPV6_NETWORK). */
  readonly ipv6Network?: Cidr | undefined;
  readonly ipMasq: boolean;
  /** This node's pod subnet: with it the table also counts traffic per (IPv4) peer subnet. */
  readonly subnet?: Cidr;
  /**
   * A `ct` match in the forward chain: the kernel tracks a namespace's connections only once some
   * rule there uses conntrack (masquerade, a policy), and flow records come from its events.
   */
  readonly track?: boolean;
}

/** The cluster networks, each with its nft address match (`ip` or `ip6`). */
function networksOf(s: AgentRulesSpec): { net: string; match: 'ip' | 'ip6' }[] {
  return [s.network, ...(s.ipv6Network ? [s.ipv6Network] : [])]
    .map((n) => ({ net: formatCidr(n), match: n.ip.family === 4 ? 'ip' as const : 'ip6' as const }));
}

export function agentRulesScript(s: AgentRulesSpec): string {
  const t = `inet ${AGENT_TABLE}`;
  const nets = networksOf(s);
  const lines = [
    `add table ${t}`,
    `flush table ${t}`,
    `add chain ${t} forward { type filter hook forward priority filter; policy accept; }`,
    ...(s.track ? [`add rule ${t} forward ct state invalid counter comment "weft: connections tracked (flow records)"`] : []),
  ];
  for (const { net, match } of nets) {
    lines.push(
      `add rule ${t} forward ${match} saddr ${net} accept comment "weft: from the cluster network"`,
      `add rule ${t} forward ${match} daddr ${net} accept comment "weft: to the cluster network"`,
    );
  }
  if (s.ipMasq) {
    lines.push(`add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`);
    for (const { net, match } of nets) {
      const multicast = match === 'ip' ? '224.0.0.0/4' : 'ff00::/8';
      lines.push(
        // Pod to pod keeps its source address, on every backend.
        `add rule ${t} postrouting ${match} saddr ${net} ${match} daddr ${net} return comment "weft: inside the cluster network"`,
        `add rule ${t} postrouting ${match} saddr ${net} ${match} daddr != ${multicast} masquerade fully-random comment "weft: leaving the cluster network"`,
      );
    }
  }
  if (s.subnet && s.subnet.ip.family === 4) lines.push(...peerAccountingScript(AGENT_TABLE, s.network, s.subnet));
  return lines.join('\n') + '\n';
}

/** How many rules agentRulesScript puts in the table, for the repair check. */
export function agentRuleCount(s: AgentRulesSpec): number {
  const families = s.ipv6Network ? 2 : 1;
  return families * (s.ipMasq ? 4 : 2) + (s.subnet && s.subnet.ip.family === 4 ? PEER_RULES : 0) + (s.track ? 1 : 0);
}

export async function applyAgentRules(s: AgentRulesSpec): Promise<void> {
  await nftApply(agentRulesScript(s));
}

/** True when the table holds exactly the expected rules (by count and comment). */
export async function agentRulesInPlace(s: AgentRulesSpec): Promise<boolean> {
  const rules = await nftListRules('inet', AGENT_TABLE);
  return rules.length === agentRuleCount(s) && rules.every((r) => r.comment?.startsWith('weft: '));
}

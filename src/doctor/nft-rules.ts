// weftd's own nftables table on a node (`inet weft`, src/agent/traffic-rules.ts): the forward
// accepts for the cluster network and, with --ip-masq, the return that keeps pod-to-pod traffic
// un-masqueraded. Rules are recognised by the comments weftd gives them.
import { nftListRules } from '../nft/nft.js';
import { AGENT_TABLE } from '../agent/traffic-rules.js';
import type { DoctorContext, DoctorNode, Hop } from './types.js';

const FORWARD_COMMENTS = ['weft: from the cluster network', 'weft: to the cluster network'];
const INSIDE_COMMENT = 'weft: inside the cluster network';

export async function agentRulesHop(ctx: DoctorContext, node: DoctorNode | undefined, role: 'src' | 'dst'): Promise<Hop> {
  const hopId = `${role}-nft`;
  const where = `node ${node?.name ?? '?'}`;
  const title = `weftd's nftables (inet ${AGENT_TABLE}): forward and masquerade`;
  if (!node) return { id: hopId, where, title, status: 'skip', detail: 'the node is not visible from here' };
  if (ctx.backend === undefined) return { id: hopId, where, title, status: 'skip', detail: 'no agent in this network' };
  let comments: string[];
  try {
    comments = (await nftListRules('inet', AGENT_TABLE, node.nsName !== undefined ? { netns: node.nsName } : {})).flatMap((r) => (r.comment !== undefined ? [r.comment] : []));
  } catch (err) {
    return { id: hopId, where, title, status: 'skip', detail: `cannot list: ${(err as Error).message}` };
  }
  const missing = FORWARD_COMMENTS.filter((c) => !comments.includes(c));
  const masq = node.env?.ipMasq === true;
  if (masq && !comments.includes(INSIDE_COMMENT)) missing.push(INSIDE_COMMENT);
  if (missing.length > 0) {
    return {
      id: hopId, where, title, status: 'fail',
      detail: `missing: ${missing.map((m) => `"${m}"`).join(', ')}`,
      cause: missing.includes(INSIDE_COMMENT)
        ? 'pod-to-pod traffic may be masqueraded (policies then see the node\'s address) or forwarded traffic dropped by another table'
        : 'forwarded pod traffic is left to other tables\' verdicts (a default-drop forward chain drops it)',
      fix: `restart weftd on ${node.name} (it rewrites inet ${AGENT_TABLE} whole); look: ${node.nsName !== undefined ? `ip netns exec ${node.nsName} ` : ''}nft list table inet ${AGENT_TABLE}`,
    };
  }
  return { id: hopId, where, title, status: 'ok', detail: `forward accepts the cluster network${masq ? '; pod-to-pod traffic is not masqueraded' : '; no masquerade (FLANNEL_IPMASQ=false)'}` };
}

// NetworkPolicy between the two pods, as weft enforces it: the store's policy world evaluated by
// src/policy/evaluate.ts for this connection (egress at the source, ingress at the destination),
// naming each policy that isolates an end without admitting the other, and whether the node that
// enforces it already holds it in its `inet weft-policy` table.
import { formatIP } from '../net/ip.js';
import { egressAllowed, ingressAllowed, policySelects } from '../policy/evaluate.js';
import type { Endpoint, NetworkPolicy, PolicyWorld } from '../policy/model.js';
import { nftListJson } from '../nft/nft.js';
import { ipEquals } from '../net/ip.js';
import type { DoctorContext, DoctorNode, Hop } from './types.js';

export const POLICY_TABLE = 'weft-policy';

function endpointAt(world: PolicyWorld, ip: DoctorContext['src']['ip']): Endpoint | undefined {
  return world.endpoints.find((e) => e.ips.some((a) => ipEquals(a, ip)));
}

const id = (p: NetworkPolicy): string => `${p.namespace}/${p.name}`;

/** A node's weft-policy table as JSON text: undefined when it has none, null when it cannot be read. */
export async function policyTableText(node: DoctorNode | undefined): Promise<string | undefined | null> {
  if (!node) return null;
  try {
    const items = await nftListJson(['table', 'inet', POLICY_TABLE], { ...(node.nsName !== undefined && { netns: node.nsName }), terse: true });
    return items === undefined ? undefined : JSON.stringify(items);
  } catch {
    return null;
  }
}

/** Whether the node's policy table (read by policyTableText) mentions the policy (weftd tags each policy's rules with its id). */
function enforcedOn(node: DoctorNode | undefined, table: string | undefined | null, p: NetworkPolicy): string {
  if (!node || table === null) return '';
  if (table === undefined) return `; ${node.name} has no inet ${POLICY_TABLE} table yet`;
  return table.includes(id(p)) ? `; enforced on ${node.name}` : `; not yet in ${node.name}'s inet ${POLICY_TABLE}`;
}

function describeConn(ctx: DoctorContext): string {
  return ctx.probe.protocol === 'ICMP' ? 'ICMP' : `${ctx.probe.protocol} port ${ctx.probe.port}`;
}

export async function policyHop(ctx: DoctorContext): Promise<Hop> {
  const where = 'policy';
  const title = `NetworkPolicy for ${describeConn(ctx)}`;
  const world = ctx.world;
  if (!world) return { id: 'policy', where, title, status: 'skip', detail: 'no policies to evaluate: no agent in this network, or the store could not be read (see the store hop)' };
  const conn = { src: ctx.src.ip, dst: ctx.dst.ip, protocol: ctx.probe.protocol, port: ctx.probe.port };
  const srcEp = endpointAt(world, ctx.src.ip);
  const dstEp = endpointAt(world, ctx.dst.ip);
  const deniedBy = (side: 'egress' | 'ingress', ep: Endpoint | undefined): NetworkPolicy[] => {
    if (!ep) return [];
    const check = side === 'egress' ? egressAllowed : ingressAllowed;
    if (check(conn, world)) return [];
    return world.policies.filter((p) => p.types[side] && policySelects(p, ep));
  };
  const egress = deniedBy('egress', srcEp);
  const ingress = deniedBy('ingress', dstEp);
  if (egress.length === 0 && ingress.length === 0) {
    const selecting = world.policies.filter((p) => (srcEp && p.types.egress && policySelects(p, srcEp)) || (dstEp && p.types.ingress && policySelects(p, dstEp)));
    const who = [srcEp ? `${srcEp.namespace}/${srcEp.pod}` : `${formatIP(ctx.src.ip)} (no pod endpoint)`, dstEp ? `${dstEp.namespace}/${dstEp.pod}` : `${formatIP(ctx.dst.ip)} (no pod endpoint)`];
    return {
      id: 'policy', where, title, status: 'ok',
      detail: selecting.length === 0 ? `no policy selects ${who.join(' or ')}` : `allowed by ${selecting.map(id).join(', ')}`,
    };
  }
  const srcTable = egress.length > 0 ? await policyTableText(ctx.src.node) : null;
  const dstTable = ingress.length > 0 ? await policyTableText(ctx.dst.node) : null;
  const parts: string[] = [];
  if (egress.length > 0 && srcEp) parts.push(`${egress.map(id).join(', ')} isolate${egress.length === 1 ? 's' : ''} ${srcEp.namespace}/${srcEp.pod} for egress and no egress rule admits ${formatIP(ctx.dst.ip)}${egress.map((p) => enforcedOn(ctx.src.node, srcTable, p)).join('')}`);
  if (ingress.length > 0 && dstEp) parts.push(`${ingress.map(id).join(', ')} isolate${ingress.length === 1 ? 's' : ''} ${dstEp.namespace}/${dstEp.pod} for ingress and no ingress rule admits ${srcEp ? `${srcEp.namespace}/${srcEp.pod}` : formatIP(ctx.src.ip)}${ingress.map((p) => enforcedOn(ctx.dst.node, dstTable, p)).join('')}`);
  const first = ingress[0] ?? egress[0];
  const side = ingress.length > 0 ? 'ingress' : 'egress';
  return {
    id: 'policy', where, title, status: 'fail',
    detail: parts.join('; '),
    cause: `denied by NetworkPolicy ${[...egress, ...ingress].map(id).join(', ')}`,
    fix: first
      ? `if this traffic should pass, add an ${side} rule admitting it to ${id(first)} (weftctl policy get ${first.name} -n ${first.namespace} -o yaml ${ctx.storeFlags}), or remove it: weftctl policy delete ${first.name} -n ${first.namespace} ${ctx.storeFlags}`.trimEnd()
      : 'review the policies selecting these pods (weftctl policy list -A)',
  };
}

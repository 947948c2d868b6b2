// The destination's node as the store sees it: the lease that owns the destination's subnet,
// and whether the weftd holding it is alive (its /healthz where doctor can ask, else the lease's
// expiry, which is all another node can know).
import { type IP, cidrContains, formatCidr, formatIP } from '../net/ip.js';
import type { Lease } from '../store/lease.js';
import type { DoctorContext, DoctorNode, Hop } from './types.js';

/** The lease holding `ip` in either of its subnets (a dual-stack lease has two). */
export function leaseFor(leases: readonly Lease[], ip: IP): Lease | undefined {
  return leases.find((l) => cidrContains(l.subnet, ip) || (l.ipv6Subnet !== undefined && cidrContains(l.ipv6Subnet, ip)));
}

export function sameNode(ctx: DoctorContext): boolean {
  if (ctx.src.nodeName !== undefined && ctx.src.nodeName === ctx.dst.nodeName) return true;
  const env = ctx.src.node?.env;
  return [env?.subnet, env?.ipv6Subnet].some((own) => own !== undefined && cidrContains(own, ctx.dst.ip));
}

function expiry(l: Lease, now: number): string {
  if (l.expiresAt === null) return 'a reservation (no expiry)';
  if (l.expiresAt === undefined) return 'expiry unknown';
  const s = Math.round((l.expiresAt - now) / 1000);
  return `expires ${new Date(l.expiresAt).toISOString()} (in ${s} s)`;
}

export function peerLeaseHop(ctx: DoctorContext): Hop {
  const id = 'peer-lease';
  const title = `lease of ${ctx.dst.name}'s subnet`;
  const where = 'store';
  if (ctx.backend === undefined) return { id, where, title, status: 'skip', detail: 'no network config in the store (underlay addresses, e.g. macvlan): no leases' };
  const l = leaseFor(ctx.leases, ctx.dst.ip);
  if (!l) {
    return {
      id, where, title, status: 'fail', detail: `no live lease covers ${formatIP(ctx.dst.ip)}`,
      cause: 'no node owns that subnet now, so no node routes to it (its weftd lost or released the lease, or the address is not a pod address)',
      fix: `start weftd on the destination's node; see weftctl leases list ${ctx.storeFlags}`.trimEnd(),
    };
  }
  if (l.expiresAt !== null && l.expiresAt !== undefined && l.expiresAt <= ctx.now) {
    return { id, where, title, status: 'fail', detail: `${formatCidr(l.subnet)} ${expiry(l, ctx.now)}`, cause: 'the lease has run out: peers drop their routes to it', fix: 'restart weftd on the node that held it (it takes the lease back)' };
  }
  if (l.attrs.backendType !== ctx.backend.type) {
    return {
      id, where, title, status: 'fail', detail: `${formatCidr(l.subnet)} (${formatIP(l.attrs.publicIP)}) runs backend ${l.attrs.backendType}, the network config says ${ctx.backend.type}`,
      cause: 'nodes of different backends skip each other', fix: `restart that node's weftd after weftctl config get ${ctx.storeFlags} shows the right Backend`.trimEnd(),
    };
  }
  return { id, where, title, status: 'ok', detail: `${formatCidr(l.subnet)} → ${formatIP(l.attrs.publicIP)} (${l.attrs.backendType}), ${expiry(l, ctx.now)}` };
}

export async function agentHop(ctx: DoctorContext, role: 'src' | 'dst', health: { ok: boolean; detail: string } | undefined): Promise<Hop> {
  const pod = role === 'src' ? ctx.src : ctx.dst;
  const node: DoctorNode | undefined = pod.node;
  const id = `${role}-agent`;
  const name = node?.name ?? pod.nodeName ?? 'its node';
  const title = `weftd on ${name}`;
  const where = `node ${name}`;
  if (ctx.backend === undefined) return { id, where, title, status: 'skip', detail: 'no agent in this network (no network config in the store)' };
  if (health === undefined) {
    const l = leaseFor(ctx.leases, pod.ip);
    return { id, where, title, status: 'skip', detail: `not asked from here; ${l ? `its lease ${expiry(l, ctx.now)}` : 'no lease'}` };
  }
  if (health.ok) return { id, where, title, status: 'ok', detail: health.detail };
  return {
    id, where, title, status: 'fail', detail: health.detail,
    cause: role === 'dst'
      ? `${name}'s weftd is down: its routes stay until the lease expires, but nothing repairs them, renews the lease or learns new peers`
      : `${name}'s weftd is down: nothing repairs this node's routes or learns new peers`,
    fix: node?.agentHint ?? `start weftd on ${name}`,
  };
}

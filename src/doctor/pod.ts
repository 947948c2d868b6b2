// The pod's end of the path, looked at from inside its own namespace: its interface (present,
// up, carrying its address, at the network's MTU) and, for the source, the route its packets to
// the destination take.
import { formatCidr, formatIP, ipEquals } from '../net/ip.js';
import { describeRoute, ipCmd, lookupRoute, routeIsUnicast, withNl } from './kernel.js';
import type { DoctorContext, DoctorPod, Hop } from './types.js';

function where(pod: DoctorPod): string {
  return `pod ${pod.name}`;
}

export function podInterfaceHop(pod: DoctorPod, role: 'src' | 'dst'): Hop {
  const id = `${role}-pod-interface`;
  const title = `${role === 'src' ? 'source' : 'destination'} pod interface ${pod.ifname}`;
  const place = pod.place;
  if (!place) {
    return { id, where: where(pod), title, status: 'skip', detail: `${pod.name} runs on ${pod.nodeName ?? 'another node'}; its namespace is not visible from here (run doctor there)` };
  }
  const ip = ipCmd(place);
  return withNl(place, (nl) => {
    const link = nl.getLink(pod.ifname);
    if (!link) {
      return { id, where: where(pod), title, status: 'fail', detail: `no ${pod.ifname} in the pod's namespace`, cause: 'the pod has no network attachment (CNI ADD never ran, or its interface was deleted)', fix: 're-create the pod (its runtime runs CNI ADD again)' };
    }
    if (!link.up) {
      return { id, where: where(pod), title, status: 'fail', detail: `${pod.ifname} is down`, cause: 'a down interface sends nothing', fix: `${ip} link set dev ${pod.ifname} up` };
    }
    const addrs = nl.listAddresses({ link: link.index, family: pod.ip.family });
    if (!addrs.some((a) => ipEquals(a.cidr.ip, pod.ip))) {
      return {
        id, where: where(pod), title, status: 'fail',
        detail: `${pod.ifname} has ${addrs.map((a) => formatCidr(a.cidr)).join(', ') || 'no address'}, not ${formatIP(pod.ip)}`,
        cause: 'the pod lost the address IPAM gave it', fix: 're-create the pod, or restore the address from its CNI result',
      };
    }
    const want = pod.node?.env?.mtu;
    if (want !== undefined && link.mtu !== want) {
      return {
        id, where: where(pod), title, status: 'fail',
        detail: `${pod.ifname} MTU ${link.mtu}, but the network's MTU on ${pod.node?.name ?? 'its node'} is ${want} (FLANNEL_MTU)`,
        cause: link.mtu > want
          ? `packets bigger than ${want} bytes leave the pod and are dropped where the path is only ${want} bytes wide`
          : `the pod announces a smaller MSS than its peers and drops or fragments what they send at ${want} bytes`,
        fix: `${ip} link set dev ${pod.ifname} mtu ${want}`,
      };
    }
    return { id, where: where(pod), title, status: 'ok', detail: `${pod.ifname} up, ${formatIP(pod.ip)}, MTU ${link.mtu}` };
  });
}

export function podRouteHop(ctx: DoctorContext): Hop {
  const pod = ctx.src;
  const id = 'src-pod-route';
  const title = `route to ${formatIP(ctx.dst.ip)} in the source pod`;
  if (!pod.place) return { id, where: where(pod), title, status: 'skip', detail: 'the source pod\'s namespace is not visible from here' };
  const place = pod.place;
  return withNl(place, (nl) => {
    const r = lookupRoute(nl, ctx.dst.ip);
    const gw = pod.node?.env?.subnet;
    const fixDefault = gw ? `${ipCmd(place)} route replace default via ${formatIP(gw.ip)} dev ${pod.ifname}` : 're-create the pod (CNI ADD installs its routes)';
    if (!r) return { id, where: where(pod), title, status: 'fail', detail: `no route to ${formatIP(ctx.dst.ip)}`, cause: 'the pod has nowhere to send the packet', fix: fixDefault };
    if (!routeIsUnicast(r)) return { id, where: where(pod), title, status: 'fail', detail: describeRoute(nl, r), cause: `a ${r.type} route drops the packet`, fix: `${ipCmd(place)} route del ${formatCidr(r.dst)} type ${r.type}` };
    const dev = r.oif !== undefined ? nl.getLink(r.oif) : undefined;
    if (dev && dev.name !== pod.ifname) {
      return { id, where: where(pod), title, status: 'warn', detail: describeRoute(nl, r), cause: `the packet leaves through ${dev.name}, not weft's ${pod.ifname}` };
    }
    return { id, where: where(pod), title, status: 'ok', detail: describeRoute(nl, r) };
  });
}

// The pod's node side of its attachment, in the node's namespace: the veth's host end and the
// bridge it hangs on (weft-bridge), or the /32 host route to it (weft-routed), or the macvlan
// master (weft-macvlan); the node's route back to the pod; and IPv4 forwarding.
import { formatIP } from '../net/ip.js';
import { readSysctl } from '../netns/index.js';
import type { Link } from '../netlink/index.js';
import { describeRoute, ipCmd, lookupRoute, withNl } from './kernel.js';
import type { DoctorPod, Hop } from './types.js';

export function hostLinkHop(pod: DoctorPod, role: 'src' | 'dst'): Hop {
  const id = `${role}-host-link`;
  const node = pod.node;
  const title = `${node?.name ?? 'node'}'s side of ${pod.name}`;
  const where = `node ${node?.name ?? pod.nodeName ?? '?'}`;
  if (!node || !pod.place) return { id, where, title, status: 'skip', detail: `${pod.name}'s node is not visible from here` };
  const podPlace = pod.place;
  const podLink = withNl(podPlace, (nl) => nl.getLink(pod.ifname));
  if (!podLink) return { id, where, title, status: 'skip', detail: `${pod.name} has no ${pod.ifname} (see the pod interface)` };
  const ip = ipCmd(node);
  return withNl(node, (nl): Hop => {
    const parts: string[] = [];
    let hostEnd: Link | undefined;
    let bridge: Link | undefined;
    if (podLink.kind === 'macvlan') {
      const master = podLink.parentIndex !== undefined ? nl.getLink(podLink.parentIndex) : undefined;
      if (!master) return { id, where, title, status: 'fail', detail: 'the macvlan\'s master is not in this namespace', cause: 'the underlay interface the pod sits on is gone', fix: 're-create the pod once the master interface is back' };
      if (!master.up) return { id, where, title, status: 'fail', detail: `macvlan master ${master.name} is down`, cause: 'every pod on this master is cut off', fix: `${ip} link set dev ${master.name} up` };
      return { id, where, title, status: 'ok', detail: `macvlan on ${master.name} (up, MTU ${master.mtu})` };
    }
    if (podLink.kind === 'veth') {
      hostEnd = podLink.parentIndex !== undefined ? nl.getLink(podLink.parentIndex) : undefined;
      if (!hostEnd || hostEnd.kind !== 'veth') {
        return { id, where, title, status: 'fail', detail: `the host end of ${pod.name}'s veth is not on ${node.name}`, cause: 'the pod\'s cable is cut', fix: 're-create the pod (CNI DEL then ADD)' };
      }
      if (!hostEnd.up) return { id, where, title, status: 'fail', detail: `host veth ${hostEnd.name} is down`, cause: 'nothing passes a down veth', fix: `${ip} link set dev ${hostEnd.name} up` };
      parts.push(`veth ${hostEnd.name} up`);
      const want = node.env?.mtu;
      if (want !== undefined && hostEnd.mtu !== want) {
        return { id, where, title, status: 'fail', detail: `host veth ${hostEnd.name} MTU ${hostEnd.mtu}, network MTU ${want}`, cause: 'the two ends of the path disagree on packet size', fix: `${ip} link set dev ${hostEnd.name} mtu ${want}` };
      }
      if (hostEnd.master !== undefined) {
        bridge = nl.getLink(hostEnd.master);
        if (bridge && !bridge.up) return { id, where, title, status: 'fail', detail: `bridge ${bridge.name} is down`, cause: 'every pod on the bridge is cut off', fix: `${ip} link set dev ${bridge.name} up` };
        if (bridge) parts.push(`on bridge ${bridge.name}`);
      }
    }
    const back = lookupRoute(nl, pod.ip);
    const via = new Set([hostEnd?.index, bridge?.index].filter((x): x is number => x !== undefined));
    if (via.size > 0 && (!back || back.oif === undefined || !via.has(back.oif))) {
      const dev = bridge ?? hostEnd;
      return {
        id, where, title, status: 'fail',
        detail: back ? `${node.name} routes ${formatIP(pod.ip)} as ${describeRoute(nl, back)}` : `${node.name} has no route to ${formatIP(pod.ip)}`,
        cause: `replies and forwarded packets for ${pod.name} do not reach ${dev?.name ?? 'its interface'}`,
        fix: bridge
          ? `give ${bridge.name} its gateway address again: ${ip} addr add ${node.env?.subnet ? `${formatIP(node.env.subnet.ip)}/${node.env.subnet.prefix}` : 'GATEWAY/PREFIX'} dev ${bridge.name}`
          : `${ip} route replace ${formatIP(pod.ip)}/32 dev ${hostEnd?.name ?? 'VETH'} proto 200`,
      };
    }
    if (back) parts.push(`route back: ${describeRoute(nl, back)}`);
    let forwarding: string;
    try {
      forwarding = readSysctl('net.ipv4.ip_forward', node.nsPath);
    } catch {
      forwarding = '?';
    }
    if (forwarding === '0') {
      return { id, where, title, status: 'fail', detail: `${node.name} has net.ipv4.ip_forward=0`, cause: 'the node does not forward between its pods and the network', fix: `${node.nsName !== undefined ? `ip netns exec ${node.nsName} ` : ''}sysctl -w net.ipv4.ip_forward=1` };
    }
    return { id, where, title, status: 'ok', detail: parts.join(', ') || 'attached' };
  });
}

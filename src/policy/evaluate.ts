// Kubernetes NetworkPolicy semantics as a pure function: the reference the compiled nftables
// rules are tested against. It sees connections the way the kernel does — addresses, protocol,
// destination port — and finds the endpoints behind the addresses itself.
import { type IP, cidrContains, ipEquals } from '../net/ip.js';
import type {
  Endpoint, LabelSelector, Namespace, NetworkPolicy, Peer, PolicyPort, PolicyRule, PolicyWorld, Protocol,
} from './model.js';

export interface Connection {
  readonly src: IP;
  readonly dst: IP;
  /**
   * ICMP is no NetworkPolicy protocol: only rules without ports (every protocol) let it through,
   * as the compiled rules do (their port matches name an L4 protocol). Its port is ignored.
   */
  readonly protocol: Protocol | 'ICMP';
  readonly port: number;
}

/** Kubernetes labels every namespace with its own name; selectors may rely on it. */
export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

export function selectorMatches(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels)) if (labels[k] !== v) return false;
  for (const r of sel.matchExpressions) {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.operator) {
      case 'In': if (v === undefined || !r.values.includes(v)) return false; break;
      case 'NotIn': if (v !== undefined && r.values.includes(v)) return false; break;
      case 'Exists': if (!has) return false; break;
      case 'DoesNotExist': if (has) return false; break;
    }
  }
  return true;
}

/** A namespace's labels including the implicit name label; unknown namespaces have only that. */
export function namespaceLabels(name: string, namespaces: readonly Namespace[]): Readonly<Record<string, string>> {
  const ns = namespaces.find((n) => n.name === name);
  return { ...(ns?.labels ?? {}), [NAMESPACE_NAME_LABEL]: name };
}

export function policySelects(p: NetworkPolicy, ep: Endpoint): boolean {
  return p.namespace === ep.namespace && selectorMatches(p.podSelector, ep.labels);
}

/** Whether a pod peer of a policy in namespace `policyNs` covers endpoint `ep`. */
export function podPeerMatches(
  peer: Extract<Peer, { type: 'pods' }>, policyNs: string, ep: Endpoint, namespaces: readonly Namespace[],
): boolean {
  const nsOk = peer.namespaceSelector
    ? selectorMatches(peer.namespaceSelector, namespaceLabels(ep.namespace, namespaces))
    : ep.namespace === policyNs;
  return nsOk && (peer.podSelector ? selectorMatches(peer.podSelector, ep.labels) : true);
}

export function ipBlockMatches(peer: Extract<Peer, { type: 'ipBlock' }>, ip: IP): boolean {
  return cidrContains(peer.cidr, ip) && !peer.except.some((e) => cidrContains(e, ip));
}

function endpointAt(ip: IP, world: PolicyWorld): Endpoint | undefined {
  return world.endpoints.find((e) => e.ips.some((a) => ipEquals(a, ip)));
}

function peerMatches(peer: Peer, policyNs: string, ip: IP, ep: Endpoint | undefined, world: PolicyWorld): boolean {
  if (peer.type === 'ipBlock') return ipBlockMatches(peer, ip);
  return ep !== undefined && podPeerMatches(peer, policyNs, ep, world.namespaces);
}

/** Ports are resolved against the destination: named ports only exist on pods. */
function portMatches(ports: readonly PolicyPort[], conn: Connection, dstEp: Endpoint | undefined): boolean {
  if (ports.length === 0) return true;
  return ports.some((p) => {
    if (p.protocol !== conn.protocol) return false;
    switch (p.port.type) {
      case 'any': return true;
      case 'number': return conn.port >= p.port.port && conn.port <= p.port.endPort;
      case 'named': {
        const np = dstEp?.namedPorts?.[p.port.name];
        return np !== undefined && np.protocol === conn.protocol && np.port === conn.port;
      }
    }
  });
}

function ruleAllows(rule: PolicyRule, policyNs: string, peerIp: IP, peerEp: Endpoint | undefined, conn: Connection, dstEp: Endpoint | undefined, world: PolicyWorld): boolean {
  const peerOk = rule.peers === 'all' || rule.peers.some((peer) => peerMatches(peer, policyNs, peerIp, peerEp, world));
  return peerOk && portMatches(rule.ports, conn, dstEp);
}

/** Egress side: may the source endpoint send this? (true when the source is not a pod) */
export function egressAllowed(conn: Connection, world: PolicyWorld): boolean {
  const src = endpointAt(conn.src, world);
  if (!src) return true;
  const dst = endpointAt(conn.dst, world);
  const isolating = world.policies.filter((p) => p.types.egress && policySelects(p, src));
  if (isolating.length === 0) return true;
  return isolating.some((p) => p.egress.some((r) => ruleAllows(r, p.namespace, conn.dst, dst, conn, dst, world)));
}

/** Ingress side: may the destination endpoint receive this? (true when it is not a pod) */
export function ingressAllowed(conn: Connection, world: PolicyWorld): boolean {
  const dst = endpointAt(conn.dst, world);
  if (!dst) return true;
  const src = endpointAt(conn.src, world);
  const isolating = world.policies.filter((p) => p.types.ingress && policySelects(p, dst));
  if (isolating.length === 0) return true;
  return isolating.some((p) => p.ingress.some((r) => ruleAllows(r, p.namespace, conn.src, src, conn, dst, world)));
}

/** The reference decision for a new connection: both the sender's egress and the receiver's ingress. */
export function allowed(conn: Connection, world: PolicyWorld): boolean {
  return egressAllowed(conn, world) && ingressAllowed(conn, world);
}

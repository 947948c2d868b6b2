// Who this node's BGP speaker talks to, worked out from the config and the other nodes' leases.
// Pure: the backend diffs this plan against the speaker's current neighbours.
//
//   full mesh (default)    every bgp node (iBGP, ASN) + every configured Peer
//   NodeMesh: false        only the configured Peers (e.g. a top-of-rack router per node)
//   RouteReflector: true   only the reflectors: configured Peers (iBGP ones are reflectors, eBGP
//                          ones stay plain routers) and nodes listed in RouteReflectorNodes;
//                          a node that is itself listed peers with every node, as rr-client.
import { type IP, formatIP, parseIPv4 } from '../../net/ip.js';
import type { BgpConfig } from './bgp.js';
import type { Lease } from '../../store/lease.js';

export interface PlannedPeer {
  readonly address: string;
  readonly asn: number;
  readonly rrClient: boolean;
  /** Where the peer came from, for status and logs. */
  readonly origin: 'node' | 'configured';
}

export interface PeerPlan {
  readonly peers: readonly PlannedPeer[];
  /** This node reflects routes for its clients (RFC 4456). */
  readonly reflector: boolean;
  readonly clusterId: string | undefined;
  /** Leases skipped, with why (another backend, no address) — for /readyz. */
  readonly skipped: readonly string[];
}

export function planPeers(cfg: BgpConfig, self: IP, others: readonly Lease[]): PeerPlan {
  const me = formatIP(self);
  const reflectorNodes = new Set(cfg.RouteReflectorNodes.map((a) => formatIP(parseIPv4(a))));
  const reflector = cfg.RouteReflector && reflectorNodes.has(me);
  const peers = new Map<string, PlannedPeer>();
  const skipped: string[] = [];
  for (const l of others) {
    const addr = formatIP(l.attrs.publicIP);
    if (l.attrs.backendType !== 'bgp') {
      skipped.push(`node ${addr} runs backend ${l.attrs.backendType}, not bgp; not peered`);
      continue;
    }
    // Sessions run over the underlay's family: IPv4, or IPv6 between IPv6-only hosts.
    if (l.attrs.publicIP.family !== self.family || addr === me) continue;
    if (cfg.RouteReflector ? !reflector && !reflectorNodes.has(addr) : !cfg.NodeMesh) continue;
    peers.set(addr, { address: addr, asn: cfg.ASN, rrClient: reflector && !reflectorNodes.has(addr), origin: 'node' });
  }
  for (const p of cfg.Peers) {
    const addr = formatIP(parseIPv4(p.Address));
    if (addr === me) continue;
    // A configured router wins over a node lease at the same address: the operator said so.
    peers.set(addr, { address: addr, asn: p.ASN, rrClient: false, origin: 'configured' });
  }
  const clusterId = reflector ? cfg.RouteReflectorClusterID ?? me : undefined;
  return { peers: [...peers.values()].sort((a, b) => a.address.localeCompare(b.address)), reflector, clusterId, skipped };
}

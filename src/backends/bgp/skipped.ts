// Which peer leases a bgp pass left without a route, and why. The bgp backend programs no peer
// directly: a peer's subnet is programmed when a route for it, learnt over BGP, is in the kernel
// (protocol 88) once the pass is over. Pure, from what the pass already has in hand.
import { formatCidr, formatIP } from '../../net/ip.js';
import type { Lease } from '../../store/lease.js';
import type { SkippedPeer } from '../types.js';
import { describeProtocol } from './kernel.js';

export interface BgpPassFacts {
  /** Prefixes with a bgp-protocol route in the kernel after the pass. */
  readonly installed: ReadonlySet<string>;
  /** Prefix → next hop of the route the speaker has learnt for it. */
  readonly learnt: ReadonlyMap<string, string>;
  /** Prefixes left to another protocol's route → that route's rtm_protocol. */
  readonly held: ReadonlyMap<string, number>;
}

/**
 * Every peer whose subnet has no bgp route in the kernel, with the first reason that applies:
 * another backend (never peered), a route another protocol holds, a learnt route whose next hop
 * cannot be reached, or no route learnt at all (yet). A route reflector or router may carry a
 * non-bgp node's subnet too: what counts is the kernel, so such a peer is programmed then.
 */
export function skippedLeases(peers: readonly Lease[], facts: BgpPassFacts): SkippedPeer[] {
  const out: SkippedPeer[] = [];
  for (const p of peers) {
    const subnet = formatCidr(p.subnet);
    if (facts.installed.has(subnet)) continue;
    const ip = formatIP(p.attrs.publicIP);
    const held = facts.held.get(subnet);
    const nextHop = facts.learnt.get(subnet);
    let reason: string;
    if (p.attrs.backendType !== 'bgp') reason = `peer ${subnet} (${ip}) runs backend ${p.attrs.backendType}, not bgp; not peered, and no route for it learnt`;
    else if (held !== undefined) reason = `bgp: ${subnet} is held by another route in the kernel (${describeProtocol(held)}); not replaced`;
    else if (nextHop !== undefined) reason = `bgp: ${subnet} via ${nextHop}: no route to the next hop; not installed`;
    else reason = `peer ${subnet} (${ip}): no route for it learnt over BGP (yet); nothing installed`;
    out.push({ subnet, reason });
  }
  return out;
}

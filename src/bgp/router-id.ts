// The BGP identifier is a 32-bit number (RFC 4271 §4.2, RFC 6286) whatever families a speaker
// carries, so a node with IPv6 addresses only still needs one: this derives it from an address.
import { createHash } from 'node:crypto';
import { type IP, formatIP, ipFromValue, ipToBytes, parseIP } from '../net/ip.js';

/**
 * A stable router id (dotted quad) for a node without an IPv4 address: the address's low 32 bits
 * XORed with a hash of its upper 96. Addresses in one /96 (hosts numbered in one subnet) always
 * get distinct ids, as with the low 32 bits alone; unlike those, the same host number in
 * different prefixes (2001:db8:0:1::1, 2001:db8:0:2::1 — racks are often numbered so) gets
 * unrelated ids instead of one. Across prefixes two ids collide with odds of 1 in 2^32 per pair;
 * iBGP then refuses the session (Bad BGP Identifier), which the speaker's status shows; a caller with its own routerId is not affected. Never
 * 0.0.0.0, which RFC 6286 forbids.
 */
export function routerIdFromIPv6(address: IP | string): string {
  const ip = typeof address === 'string' ? parseIP(address) : address;
  if (ip.family !== 6) throw new Error(`routerIdFromIPv6 needs an IPv6 address, got ${formatIP(ip)} (an IPv4 address can be the router id itself)`);
  const bytes = ipToBytes(ip);
  const upper = createHash('sha256').update(bytes.subarray(0, 12)).digest().readUInt32BE(0);
  const id = (upper ^ bytes.readUInt32BE(12)) >>> 0;
  return formatIP(ipFromValue(4, BigInt(id === 0 ? 1 : id)));
}

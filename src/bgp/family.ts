// The address families weft's speaker carries (RFC 4760): IPv4 unicast and IPv6 unicast. The
// codec speaks AFI/SAFI numbers; everything above it names a family, so a prefix, a next hop and
// a capability are matched by one word instead of two numbers.
import type { Cidr, IP } from '../net/ip.js';
import { AFI_IPV4, AFI_IPV6, SAFI_UNICAST } from './constants.js';

export type AddressFamily = 'ipv4' | 'ipv6';

/** In the order End-of-RIB markers and ROUTE-REFRESH requests go out. */
export const ADDRESS_FAMILIES: readonly AddressFamily[] = ['ipv4', 'ipv6'];

export function afiSafiOf(f: AddressFamily): { afi: number; safi: number } {
  return { afi: f === 'ipv4' ? AFI_IPV4 : AFI_IPV6, safi: SAFI_UNICAST };
}

/** The family of an AFI/SAFI pair, or undefined for one weft does not carry (VPN, flowspec, …). */
export function familyOfAfiSafi(afi: number, safi: number): AddressFamily | undefined {
  if (safi !== SAFI_UNICAST) return undefined;
  return afi === AFI_IPV4 ? 'ipv4' : afi === AFI_IPV6 ? 'ipv6' : undefined;
}

export function familyOf(x: Cidr | IP): AddressFamily {
  const family = 'prefix' in x ? x.ip.family : x.family;
  return family === 4 ? 'ipv4' : 'ipv6';
}

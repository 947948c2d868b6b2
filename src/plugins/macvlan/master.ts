// Which host interface a macvlan hangs off: the configured one, or (like the reference plugin)
// the interface carrying the namespace's default route. A master that cannot be found is the
// configuration's fault (code 7) at ADD time and "not available" (code 50) for STATUS.
import { CniCode, WeftError } from '../../errors.js';
import type { Link, Netlink } from '../../netlink/index.js';
import type { IPFamily } from '../../net/ip.js';

/** The interface of the first default route (IPv4 first, then IPv6); undefined when there is none. */
export function defaultRouteInterface(nl: Netlink): Link | undefined {
  for (const family of [4, 6] as const satisfies readonly IPFamily[]) {
    const route = nl.listRoutes({ family }).find((r) => r.dst.prefix === 0 && (r.oif !== undefined || (r.nexthops?.length ?? 0) > 0));
    const oif = route?.oif ?? route?.nexthops?.[0]?.oif;
    if (oif !== undefined) return nl.getLink(oif);
  }
  return undefined;
}

/** Resolves the master; `where` names the namespace for messages ("the host", "the container"). */
export function resolveMaster(nl: Netlink, master: string | undefined, where: string, code: CniCode = CniCode.InvalidNetworkConfig): Link {
  if (master === undefined) {
    const link = defaultRouteInterface(nl);
    if (!link) throw new WeftError(code, `no master given and ${where} has no default route to take it from`);
    return link;
  }
  const link = nl.getLink(master);
  if (!link) throw new WeftError(code, `master ${master} does not exist in ${where}`);
  return link;
}

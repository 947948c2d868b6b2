// The container side of every main plugin: put the IPAM result's addresses and routes on the
// container's interface, and verify them again for CHECK. Mirrors the reference plugins'
// ipam.ConfigureIface and ValidateExpectedInterfaceIPs/Route.
import { z } from 'zod';
import type { CniResult, CniRoute } from '../../cni/result.js';
import { CniCode, WeftError } from '../../errors.js';
import { Netlink, type Link } from '../../netlink/index.js';
import { netnsExists } from '../../netns/index.js';
import { cniArg, type CniEnv } from '../../cni/env.js';
import type { IP } from '../../net/ip.js';
import { cidrEquals, formatCidr, formatIP, ipEquals, networkOf } from '../../net/ip.js';
import { Undo } from '../../cni/undo.js';
import type { Logger } from '../../log.js';

/** The gateway a route without `gw` uses: the first IP config of the same family with one. */
function defaultGatewayFor(result: CniResult, route: CniRoute): IP | undefined {
  if (route.gw) return route.gw;
  return result.ips.find((i) => i.gateway && i.gateway.family === route.dst.ip.family)?.gateway;
}

/** A MAC address as the plugins' configs and runtimeConfig carry it. */
export const macSchema = z.string().regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'a MAC address like 0a:58:0a:f4:01:02');

/**
 * Adds the result's addresses that belong to interface `ifIndexInResult`, brings the link up and
 * installs the result's routes through it.
 */
export function configureContainerInterface(nl: Netlink, link: Link, result: CniResult, ifIndexInResult: number): void {
  const mine = result.ips.filter((i) => i.interface === undefined || i.interface === ifIndexInResult);
  for (const ipc of mine) {
    nl.replaceAddress(link, ipc.address, ipc.address.ip.family === 6 ? { noDad: true } : {});
  }
  nl.setLink(link, { up: true });
  for (const route of result.routes) {
    const gw = defaultGatewayFor(result, route);
    nl.replaceRoute({
      dst: route.dst.prefix === 0 ? 'default' : networkOf(route.dst),
      family: route.dst.ip.family,
      oif: link,
      ...(gw && { gateway: gw }),
      ...(route.mtu !== undefined && { mtu: route.mtu }),
      ...(route.priority !== undefined && { priority: route.priority }),
      ...(route.table !== undefined && { table: route.table }),
      ...(route.scope !== undefined && { scope: route.scope }),
    });
  }
}

/** CHECK: every address and route the result promised is on the container interface. */
export function verifyContainerInterface(nl: Netlink, link: Link, result: CniResult, ifIndexInResult: number): void {
  const have = nl.listAddresses({ link });
  for (const ipc of result.ips.filter((i) => i.interface === undefined || i.interface === ifIndexInResult)) {
    if (!have.some((a) => cidrEquals(a.cidr, ipc.address))) {
      throw new WeftError(CniCode.Internal, `${link.name}: address ${formatCidr(ipc.address)} is missing`);
    }
  }
  for (const route of result.routes) {
    const family = route.dst.ip.family;
    const routes = nl.listRoutes({ family, table: route.table ?? 254 });
    const gw = defaultGatewayFor(result, route);
    const found = routes.some(
      (r) =>
        cidrEquals(networkOf(r.dst), networkOf(route.dst)) &&
        r.oif === link.index &&
        (gw === undefined || (r.gateway !== undefined && ipEquals(r.gateway, gw))),
    );
    if (!found) {
      throw new WeftError(CniCode.Internal, `${link.name}: route to ${formatCidr(route.dst)}${gw ? ` via ${formatIP(gw)}` : ''} is missing`);
    }
  }
}

/** CHECK: the container interface named in prevResult is the one in the namespace. */
export function requireResultInterface(result: CniResult, ifname: string, netns: string): number {
  const idx = result.interfaces.findIndex((i) => i.name === ifname && i.sandbox !== undefined && i.sandbox !== '');
  if (idx < 0) throw new WeftError(CniCode.InvalidNetworkConfig, `prevResult has no interface ${ifname} in a sandbox`);
  const sandbox = result.interfaces[idx]?.sandbox;
  if (sandbox !== netns) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `prevResult puts ${ifname} in ${sandbox ?? '?'}, not in ${netns}`);
  }
  return idx;
}

/** CHECK: the link's MAC matches the one the result reported. */
export function verifyMac(link: Link, expected: string | undefined): void {
  if (expected && link.mac?.toLowerCase() !== expected.toLowerCase()) {
    throw new WeftError(CniCode.Internal, `${link.name}: MAC ${link.mac ?? 'none'} differs from ${expected}`);
  }
}

/** A handle on the container's namespace; a CNI_NETNS that is not one is the runtime's mistake (code 4). */
export function openContainerNetns(netns: string): Netlink {
  if (!netnsExists(netns)) {
    throw new WeftError(CniCode.InvalidEnvironment, `CNI_NETNS ${netns} is not a network namespace`);
  }
  try {
    return Netlink.open(netns);
  } catch (err) {
    throw WeftError.wrap(err, CniCode.InvalidEnvironment, `cannot enter network namespace ${netns}`);
  }
}

const MAC_PATTERN = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;

/** The MAC a runtime asked for: CNI_ARGS MAC=… wins over runtimeConfig.mac (as in the reference plugins). */
export function requestedMac(env: Pick<CniEnv, 'args'>, runtimeConfigMac: string | undefined): string | undefined {
  const fromArgs = cniArg(env, 'MAC');
  if (fromArgs !== undefined) {
    if (!MAC_PATTERN.test(fromArgs)) throw new WeftError(CniCode.InvalidNetworkConfig, `CNI_ARGS MAC=${fromArgs} is not a MAC address`);
    return fromArgs;
  }
  return runtimeConfigMac;
}

/** The handles and undo stack one ADD works with. */
export interface AddTransaction {
  readonly hostNl: Netlink;
  readonly containerNl: Netlink;
  readonly undo: Undo;
}

/**
 * Runs an ADD as one transaction: netlink handles on the host and the container namespace,
 * and an undo stack that reverts every recorded step when anything fails.
 */
export async function runAddTransaction<T>(netns: string, log: Logger, body: (tx: AddTransaction) => Promise<T>): Promise<T> {
  const undo = new Undo(log);
  const hostNl = Netlink.open();
  let containerNl: Netlink | undefined;
  try {
    containerNl = openContainerNetns(netns);
    const out = await body({ hostNl, containerNl, undo });
    undo.clear();
    return out;
  } catch (err) {
    await undo.run();
    throw err;
  } finally {
    containerNl?.close();
    hostNl.close();
  }
}

/** DEL's kernel half: the container interface goes; a namespace already gone took it along. */
export function deleteContainerInterface(env: Pick<CniEnv, 'netns' | 'ifname'>): void {
  if (env.netns && netnsExists(env.netns)) {
    Netlink.with(env.netns, (nl) => { nl.deleteLink(env.ifname); });
  }
}

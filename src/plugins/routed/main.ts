// weft-routed: containers routed by the host, Calico style — a veth per container, /32 host
// routes, no bridge and no gateway address on the host (see ./routed.ts for the shape).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { runPlugin, type CniPlugin, type PluginContext } from '../../cni/skel.js';
import { standalonePluginHost } from '../pkg/host.js';
import type { CniResult, CniRoute } from '../../cni/result.js';
import { CniCode, WeftError } from '../../errors.js';
import { Netlink } from '../../netlink/index.js';
import { cidrContains, formatCidr, parseCidr, type Cidr } from '../../net/ip.js';
import {
  deleteContainerInterface, openContainerNetns, requestedMac, requireResultInterface, runAddTransaction, verifyContainerInterface, verifyMac,
  macSchema,
} from '../pkg/iface.js';
import {
  configureContainerSide,
  configureHostSide,
  createRoutedVeth,
  hostRouteOf,
  hostVethName,
  routedGateway,
  verifyGatewayRoute,
  verifyHostSide,
} from './routed.js';
import { checkIpam, ipamExec, ipamExecAdd, ipamExecDel } from '../ipam/main.js';

const confSchema = z
  .object({
    mtu: z.number().int().min(68).max(65535).optional(),
    runtimeConfig: z.object({ mac: macSchema.optional() }).passthrough().optional(),
  })
  .passthrough();

export type RoutedConf = z.infer<typeof confSchema>;
type Ctx = PluginContext<RoutedConf>;

const CONTAINER_IF = 1;
const DEFAULTS: Record<4 | 6, Cidr> = { 4: parseCidr('0.0.0.0/0'), 6: parseCidr('::/0') };

/**
 * Everything leaves through 169.254.1.1 (fe80::1 for IPv6): the default route of each family the
 * container has an address of, plus any route the IPAM asked for (its own gateway would not be
 * reachable from a /32 or /128).
 */
function containerRoutes(ipam: CniResult): CniRoute[] {
  const families = [4, 6].filter((f) => ipam.ips.some((i) => i.address.ip.family === f)) as (4 | 6)[];
  const routes: CniRoute[] = families.map((f) => ({ dst: DEFAULTS[f], gw: routedGateway(f) }));
  for (const r of ipam.routes) {
    const f = r.dst.ip.family;
    // The gateway's own link route must stay a link route.
    if (!families.includes(f) || r.dst.prefix === 0 || cidrContains(r.dst, routedGateway(f))) continue;
    routes.push({ ...r, gw: routedGateway(f) });
  }
  return routes;
}

function requireIpam(ctx: Ctx): void {
  if (!ctx.conf.ipam) throw new WeftError(CniCode.InvalidNetworkConfig, 'weft-routed needs an ipam section: the container address is what gets routed');
}

export const weftRoutedPlugin: CniPlugin<RoutedConf> = {
  name: 'weft-routed',
  confSchema,

  async add(ctx) {
    const cfg = ctx.config;
    const { netns, ifname, containerId } = ctx.env;
    requireIpam(ctx);
    await checkIpam(ctx);
    return runAddTransaction(netns, ctx.log, async ({ hostNl, containerNl, undo }) => {
      const mac = requestedMac(ctx.env, cfg.runtimeConfig?.mac);

      const ipam = await ipamExecAdd(ctx);
      undo.push('release IPAM allocation', () => ipamExec(ctx, 'DEL'));
      if (ipam.ips.length === 0) throw new WeftError(CniCode.InvalidNetworkConfig, 'IPAM plugin returned no IP addresses');

      const veth = createRoutedVeth(hostNl, containerNl, {
        netns,
        ifname,
        hostName: hostVethName(containerId, ifname),
        ...(cfg.mtu !== undefined && { mtu: cfg.mtu }),
        ...(mac !== undefined && { mac }),
      });
      const hostIndex = veth.host.index;
      undo.push('delete veth', () => { hostNl.deleteLink(hostIndex); });
      if (!veth.host.mac) throw new WeftError(CniCode.Internal, `host end ${veth.host.name} has no MAC address`);

      const ips = ipam.ips.map((i) => i.address.ip);
      const result: CniResult = {
        interfaces: [
          { name: veth.host.name, ...(veth.host.mac !== undefined && { mac: veth.host.mac }) },
          { name: ifname, ...(veth.container.mac !== undefined && { mac: veth.container.mac }), sandbox: netns },
        ],
        ips: ips.map((ip) => ({ address: hostRouteOf(ip), gateway: routedGateway(ip.family), interface: CONTAINER_IF })),
        routes: containerRoutes(ipam),
        dns: Object.keys(ipam.dns).length > 0 ? ipam.dns : ctx.conf.dns ?? {},
      };
      configureHostSide(hostNl, veth.host, ips);
      configureContainerSide(containerNl, veth.container, result.ips.map((i) => i.address), result.routes.map((r) => r.dst), veth.host.mac);
      return result;
    });
  },

  async del(ctx) {
    // Tolerant: a config without ipam or with an IPAM plugin that does not exist (a runtime
    // cleaning up after a refused ADD, or a config edited since) still gets its veth and /32 route
    // removed; there is just nothing to release.
    try {
      await ipamExecDel(ctx);
    } finally {
      deleteContainerInterface(ctx.env);
      // Either end takes the other (and the host's /32 route) with it; the host end by name also
      // covers a namespace that is gone while its veth is still being torn down.
      Netlink.with(undefined, (nl) => { nl.deleteLink(hostVethName(ctx.env.containerId, ctx.env.ifname)); });
    }
  },

  async check(ctx) {
    const prev = ctx.conf.prevResult;
    if (!prev) throw new WeftError(CniCode.InvalidNetworkConfig, 'CHECK needs prevResult');
    requireIpam(ctx);
    await ipamExec(ctx, 'CHECK');
    const idx = requireResultInterface(prev, ctx.env.ifname, ctx.env.netns);
    const containerNl = openContainerNetns(ctx.env.netns);
    try {
      const link = containerNl.getLink(ctx.env.ifname);
      if (!link) throw new WeftError(CniCode.Internal, `interface ${ctx.env.ifname} is missing from ${ctx.env.netns}`);
      if (link.kind !== 'veth') throw new WeftError(CniCode.Internal, `${ctx.env.ifname} is a ${link.kind ?? 'plain'} device, not a veth`);
      verifyMac(link, prev.interfaces[idx]?.mac);
      for (const ipc of prev.ips) {
        const host = ipc.address.ip.family === 4 ? 32 : 128;
        if (ipc.address.prefix !== host) throw new WeftError(CniCode.Internal, `prevResult address ${formatCidr(ipc.address)} is not a /${host}`);
      }
      verifyGatewayRoute(containerNl, link, [...new Set(prev.ips.map((i) => i.address.ip.family))]);
      verifyContainerInterface(containerNl, link, prev, idx);
      Netlink.with(undefined, (hostNl) => {
        verifyHostSide(hostNl, hostVethName(ctx.env.containerId, ctx.env.ifname), link, prev.ips.map((i) => i.address.ip));
      });
    } finally {
      containerNl.close();
    }
  },

  async status(ctx) {
    requireIpam(ctx);
    await ipamExec(ctx, 'STATUS');
  },

  async gc(ctx) {
    // The veths (and their /32 routes) die with the container namespaces; only IPAM can leak.
    requireIpam(ctx);
    await ipamExec(ctx, 'GC');
  },
};

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runPlugin(weftRoutedPlugin, standalonePluginHost);
}

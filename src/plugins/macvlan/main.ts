// weft-macvlan: the container sits directly on a host interface's L2 segment through a macvlan
// sub-interface with its own MAC — no bridge, no NAT, no overlay. The reference macvlan plugin's
// keys (master, mode, mtu, ipam, linkInContainer) on weft's netlink layer.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { runPlugin, type CniPlugin, type PluginContext } from '../../cni/skel.js';
import { standalonePluginHost } from '../pkg/host.js';
import { deviceNameSchema } from '../../cni/conf.js';
import type { CniResult } from '../../cni/result.js';
import { CniCode, WeftError } from '../../errors.js';
import { Netlink, type Link } from '../../netlink/index.js';
import { writeSysctl } from '../../netns/index.js';
import {
  configureContainerInterface,
  deleteContainerInterface,
  openContainerNetns,
  requestedMac,
  requireResultInterface,
  runAddTransaction,
  verifyContainerInterface,
  verifyMac,
  macSchema,
} from '../pkg/iface.js';
import { resolveMaster } from './master.js';
import { checkIpam, ipamExec, ipamExecAdd, ipamExecDel } from '../ipam/main.js';

const confSchema = z
  .object({
    /** Absent: the interface of the default route. */
    master: deviceNameSchema.optional(),
    mode: z.enum(['bridge', 'private', 'vepa', 'passthru']).default('bridge'),
    mtu: z.number().int().min(68).max(65535).optional(),
    /** The master lives inside the container's namespace (e.g. a VF or a VLAN moved there). */
    linkInContainer: z.boolean().default(false),
    runtimeConfig: z.object({ mac: macSchema.optional() }).passthrough().optional(),
  })
  .passthrough();

export type MacvlanConf = z.infer<typeof confSchema>;
type Ctx = PluginContext<MacvlanConf>;

/** The index of the container interface in the result: it is the only one. */
const CONTAINER_IF = 0;

function masterWhere(ctx: Ctx): string {
  return ctx.config.linkInContainer ? `the container namespace ${ctx.env.netns}` : 'the host namespace';
}

/** Rejects what the kernel would reject later (or accept wrongly), before anything is allocated. */
function checkMtu(cfg: MacvlanConf, master: Link): void {
  if (cfg.mtu !== undefined && cfg.mtu > master.mtu) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `mtu ${cfg.mtu} is larger than master ${master.name}'s MTU ${master.mtu}`);
  }
}

/**
 * Announce the new MAC as soon as the link comes up (gratuitous ARP), so the underlay's switches
 * and neighbours learn the container without waiting for its first packet. The slash form keeps
 * interface names with dots intact.
 */
function enableArpNotify(netns: string, ifname: string): void {
  writeSysctl(`net/ipv4/conf/${ifname}/arp_notify`, 1, netns);
}

export const weftMacvlanPlugin: CniPlugin<MacvlanConf> = {
  name: 'weft-macvlan',
  confSchema,

  async add(ctx) {
    const cfg = ctx.config;
    const { netns, ifname } = ctx.env;
    if (ctx.conf.ipam) await checkIpam(ctx);
    return runAddTransaction(netns, ctx.log, async ({ hostNl, containerNl, undo }) => {
      const masterNl = cfg.linkInContainer ? containerNl : hostNl;
      const master = resolveMaster(masterNl, cfg.master, masterWhere(ctx));
      checkMtu(cfg, master);
      // The link is born inside the container's namespace, so the only name it can clash with is
      // one already there: no temporary name and rename needed, and a clash is the caller's error.
      if (containerNl.getLink(ifname)) {
        throw new WeftError(CniCode.InvalidNetworkConfig, `container interface ${ifname} already exists in ${netns}`);
      }
      const mac = requestedMac(ctx.env, cfg.runtimeConfig?.mac);

      let ipam: CniResult = { interfaces: [], ips: [], routes: [], dns: {} };
      if (ctx.conf.ipam) {
        ipam = await ipamExecAdd(ctx);
        undo.push('release IPAM allocation', () => ipamExec(ctx, 'DEL'));
        if (ipam.ips.length === 0) throw new WeftError(CniCode.InvalidNetworkConfig, 'IPAM plugin returned no IP addresses');
      }

      const created = masterNl.createMacvlan({
        name: ifname,
        master,
        mode: cfg.mode,
        ...(cfg.mtu !== undefined && { mtu: cfg.mtu }),
        ...(mac !== undefined && { mac }),
        ...(!cfg.linkInContainer && { nsPath: netns }),
      });
      const nl = containerNl;
      undo.push('delete macvlan', () => { nl.deleteLink(created.index); });
      enableArpNotify(netns, ifname);

      const result: CniResult = {
        interfaces: [{ name: ifname, ...(created.mac !== undefined && { mac: created.mac }), sandbox: netns }],
        ips: ipam.ips.map((i) => ({ ...i, interface: CONTAINER_IF })),
        routes: [...ipam.routes],
        dns: Object.keys(ipam.dns).length > 0 ? ipam.dns : ctx.conf.dns ?? {},
      };
      configureContainerInterface(containerNl, created, result, CONTAINER_IF);
      return result;
    });
  },

  async del(ctx) {
    try {
      await ipamExecDel(ctx);
    } finally {
      // A namespace that is gone took the macvlan with it.
      deleteContainerInterface(ctx.env);
    }
  },

  async check(ctx) {
    const cfg = ctx.config;
    const prev = ctx.conf.prevResult;
    if (!prev) throw new WeftError(CniCode.InvalidNetworkConfig, 'CHECK needs prevResult');
    if (ctx.conf.ipam) await ipamExec(ctx, 'CHECK');
    const idx = requireResultInterface(prev, ctx.env.ifname, ctx.env.netns);
    const containerNl = openContainerNetns(ctx.env.netns);
    try {
      const link = containerNl.getLink(ctx.env.ifname);
      if (!link) throw new WeftError(CniCode.Internal, `interface ${ctx.env.ifname} is missing from ${ctx.env.netns}`);
      if (link.info?.kind !== 'macvlan') throw new WeftError(CniCode.Internal, `${ctx.env.ifname} is a ${link.kind ?? 'plain'} device, not a macvlan`);
      if (link.info.mode !== cfg.mode) throw new WeftError(CniCode.Internal, `${ctx.env.ifname} is in macvlan mode ${link.info.mode}, not ${cfg.mode}`);
      const master = cfg.linkInContainer
        ? resolveMaster(containerNl, cfg.master, masterWhere(ctx), CniCode.Internal)
        : Netlink.with(undefined, (hostNl) => resolveMaster(hostNl, cfg.master, masterWhere(ctx), CniCode.Internal));
      // IFLA_LINK is the parent's index in the parent's own namespace.
      if (link.parentIndex !== master.index) {
        throw new WeftError(CniCode.Internal, `${ctx.env.ifname} is not a macvlan of ${master.name} (parent index ${link.parentIndex ?? 'none'}, want ${master.index})`);
      }
      verifyMac(link, prev.interfaces[idx]?.mac);
      verifyContainerInterface(containerNl, link, prev, idx);
    } finally {
      containerNl.close();
    }
  },

  async status(ctx) {
    const cfg = ctx.config;
    // A master inside containers cannot be looked at without one; the host's can.
    if (!cfg.linkInContainer) {
      Netlink.with(undefined, (hostNl) => resolveMaster(hostNl, cfg.master, masterWhere(ctx), CniCode.PluginNotAvailable));
    }
    if (ctx.conf.ipam) await ipamExec(ctx, 'STATUS');
  },

  async gc(ctx) {
    // The macvlans live and die with their namespaces; only the IPAM can hold leftovers.
    if (ctx.conf.ipam) await ipamExec(ctx, 'GC');
  },
};

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runPlugin(weftMacvlanPlugin, standalonePluginHost);
}

// weft-bridge: containers on a Linux bridge through veth pairs — the reference bridge plugin's
// behaviour and config keys, on weft's netlink layer and nftables.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { runPlugin, type CniPlugin, type PluginContext } from '../../cni/skel.js';
import { standalonePluginHost } from '../pkg/host.js';
import { deviceNameSchema } from '../../cni/conf.js';
import { cidrSchema, type CniInterface, type CniResult, type CniRoute } from '../../cni/result.js';
import { CniCode, WeftError } from '../../errors.js';
import { Netlink, type Link } from '../../netlink/index.js';
import type { Cidr } from '../../net/ip.js';
import { cidrEquals, formatCidr, networkOf, nthAddress } from '../../net/ip.js';
import { createContainerVeth, enableForwarding, ensureBridge, ensureGatewayAddress } from './bridge.js';
import {
  configureContainerInterface, openContainerNetns, requestedMac, requireResultInterface, runAddTransaction,
  verifyContainerInterface, verifyMac,
  macSchema,
} from '../pkg/iface.js';
import { addMacSpoofCheck, addMasquerade, attachmentRuleCount, removeAttachmentRules, removeStaleRules } from '../pkg/cni-rules.js';
import { checkIpam, ipamExec, ipamExecAdd, ipamExecDel } from '../ipam/main.js';

const confSchema = z
  .object({
    bridge: deviceNameSchema.default('cni0'),
    isGateway: z.boolean().default(false),
    isDefaultGateway: z.boolean().default(false),
    forceAddress: z.boolean().default(false),
    ipMasq: z.boolean().default(false),
    // weft's own: destinations ipMasq leaves alone besides the container's subnet (the cluster network).
    ipMasqExclude: z.array(cidrSchema).default([]),
    mtu: z.number().int().min(68).max(65535).optional(),
    hairpinMode: z.boolean().default(false),
    promiscMode: z.boolean().default(false),
    macspoofchk: z.boolean().default(false),
    vlan: z.number().int().optional(),
    runtimeConfig: z.object({ mac: macSchema.optional() }).passthrough().optional(),
  })
  .passthrough()
  .superRefine((c, ctx) => {
    if (c.vlan !== undefined && c.vlan !== 0) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['vlan'], message: 'VLAN tagging is not supported by weft-bridge' });
    }
  })
  .transform((c) => ({ ...c, isGateway: c.isGateway || c.isDefaultGateway }));

export type BridgeConf = z.infer<typeof confSchema>;
type Ctx = PluginContext<BridgeConf>;

/** The gateway of each IP config: the IPAM's, or the subnet's first address when we are the gateway. */
function withGateways(result: CniResult, isGateway: boolean): void {
  for (const ipc of result.ips) {
    if (isGateway && !ipc.gateway) ipc.gateway = nthAddress(networkOf(ipc.address), 1);
  }
}

function withDefaultRoutes(result: CniResult): void {
  for (const family of [4, 6] as const) {
    const gw = result.ips.find((i) => i.address.ip.family === family && i.gateway)?.gateway;
    if (!gw) continue;
    const hasDefault = result.routes.some((r) => r.dst.ip.family === family && r.dst.prefix === 0);
    if (hasDefault) continue;
    const dst: Cidr = { ip: nthAddress({ ip: gw, prefix: 0 }, 0), prefix: 0 };
    const route: CniRoute = { dst, gw };
    result.routes.push(route);
  }
}

function gatewayCidrs(result: CniResult): Cidr[] {
  const out: Cidr[] = [];
  for (const ipc of result.ips) {
    if (ipc.gateway) out.push({ ip: ipc.gateway, prefix: ipc.address.prefix });
  }
  return out;
}

function attachment(ctx: Ctx) {
  return { containerId: ctx.env.containerId, ifname: ctx.env.ifname };
}

function iface(link: Link, sandbox?: string): CniInterface {
  return { name: link.name, ...(link.mac !== undefined && { mac: link.mac }), ...(sandbox !== undefined && { sandbox }) };
}

export const weftBridgePlugin: CniPlugin<BridgeConf> = {
  name: 'weft-bridge',
  confSchema,

  async add(ctx) {
    const cfg = ctx.config;
    await checkIpam(ctx);
    return runAddTransaction(ctx.env.netns, ctx.log, async ({ hostNl, containerNl, undo }) => {
      // Everything that can be refused is refused before anything is made, and the allocation (which
      // undo releases) comes before the bridge (which undo leaves: other containers may be joining
      // it, as the reference plugin also keeps it): a failed ADD leaves at most an empty bridge,
      // and only when the kernel fails half way.
      if (containerNl.getLink(ctx.env.ifname)) {
        throw new WeftError(CniCode.InvalidNetworkConfig, `container interface ${ctx.env.ifname} already exists in ${ctx.env.netns}`);
      }
      const mac = requestedMac(ctx.env, ctx.config.runtimeConfig?.mac);

      const ipam = await ipamExecAdd(ctx);
      undo.push('release IPAM allocation', () => ipamExec(ctx, 'DEL'));
      if (ipam.ips.length === 0) throw new WeftError(CniCode.InvalidNetworkConfig, 'IPAM plugin returned no IP addresses');

      const bridge = ensureBridge(hostNl, { name: cfg.bridge, promisc: cfg.promiscMode, ...(cfg.mtu !== undefined && { mtu: cfg.mtu }) });
      const veth = createContainerVeth(hostNl, containerNl, {
        netns: ctx.env.netns,
        ifname: ctx.env.ifname,
        bridge,
        hairpin: cfg.hairpinMode,
        ...(cfg.mtu !== undefined && { mtu: cfg.mtu }),
        ...(mac !== undefined && { mac }),
      });
      const hostIndex = veth.host.index;
      undo.push('delete veth', () => { hostNl.deleteLink(hostIndex); });

      const result: CniResult = {
        interfaces: [iface(bridge), iface(veth.host), iface(veth.container, ctx.env.netns)],
        ips: ipam.ips.map((i) => ({ ...i, interface: 2 })),
        routes: [...ipam.routes],
        dns: Object.keys(ipam.dns).length > 0 ? ipam.dns : ctx.conf.dns ?? {},
      };
      withGateways(result, cfg.isGateway);
      if (cfg.isDefaultGateway) withDefaultRoutes(result);

      configureContainerInterface(containerNl, veth.container, result, 2);

      if (cfg.isGateway) {
        for (const gw of gatewayCidrs(result)) ensureGatewayAddress(hostNl, bridge, gw, cfg.forceAddress);
        enableForwarding(result.ips.map((i) => i.address.ip.family));
      }
      if (cfg.ipMasq || cfg.macspoofchk) {
        undo.push('remove nftables rules', () => removeAttachmentRules(ctx.conf.name, attachment(ctx)));
      }
      if (cfg.ipMasq) await addMasquerade(ctx.conf.name, attachment(ctx), result.ips.map((i) => i.address), cfg.ipMasqExclude);
      if (cfg.macspoofchk && veth.container.mac) {
        await addMacSpoofCheck(ctx.conf.name, attachment(ctx), veth.host.name, veth.container.mac);
      }
      // The bridge's MAC and state may have changed when its first port joined.
      result.interfaces[0] = iface(hostNl.requireLink(bridge.index));
      return result;
    });
  },

  async del(ctx) {
    const cfg = ctx.config;
    // The interface deletion starts first and the IPAM release runs alongside it: a DEL costs
    // the longer of the two rather than their sum, and in a burst no deletion waits for its
    // release's turn on the IPAM file lock before it reaches weftd's delete workers. Either
    // order is safe: like the reference plugin's (release, then delete), the address may be free
    // while the interface still exists for as long as the delete takes, and an address is only
    // ever reused inside another container's namespace. Both steps run to the end even if the
    // other fails; a failed DEL is retried and both are idempotent.
    // No namespace (already gone) means no container interface either: nothing to remove there.
    // The host's deleter: in weftd a worker thread (src/agent/cni-worker.ts), so the event loop never waits on the kernel.
    const ifaceDeleted = (async () => ctx.host.deleteContainerInterface(ctx.env))();
    const [released, deleted] = await Promise.allSettled([ipamExecDel(ctx), ifaceDeleted]);
    if (released.status === 'rejected') throw released.reason;
    if (deleted.status === 'rejected') throw deleted.reason;
    if (cfg.ipMasq || cfg.macspoofchk) await removeAttachmentRules(ctx.conf.name, attachment(ctx));
  },

  async check(ctx) {
    const cfg = ctx.config;
    const prev = ctx.conf.prevResult;
    if (!prev) throw new WeftError(CniCode.InvalidNetworkConfig, 'CHECK needs prevResult');
    await ipamExec(ctx, 'CHECK');
    const idx = requireResultInterface(prev, ctx.env.ifname, ctx.env.netns);
    const containerNl = openContainerNetns(ctx.env.netns);
    let peerIndex: number | undefined;
    try {
      const link = containerNl.getLink(ctx.env.ifname);
      if (!link) throw new WeftError(CniCode.Internal, `interface ${ctx.env.ifname} is missing from ${ctx.env.netns}`);
      if (link.kind !== 'veth') throw new WeftError(CniCode.Internal, `${ctx.env.ifname} is a ${link.kind ?? 'plain'} device, not a veth`);
      verifyMac(link, prev.interfaces[idx]?.mac);
      verifyContainerInterface(containerNl, link, prev, idx);
      peerIndex = link.parentIndex;
    } finally {
      containerNl.close();
    }
    Netlink.with(undefined, (hostNl) => {
      const bridge = hostNl.getLink(cfg.bridge);
      if (!bridge || bridge.kind !== 'bridge') throw new WeftError(CniCode.Internal, `bridge ${cfg.bridge} is missing`);
      const host = peerIndex !== undefined ? hostNl.getLink(peerIndex) : undefined;
      if (!host || host.kind !== 'veth') throw new WeftError(CniCode.Internal, `the host end of ${ctx.env.ifname}'s veth is missing`);
      if (host.master !== bridge.index) throw new WeftError(CniCode.Internal, `${host.name} is not attached to ${cfg.bridge}`);
      if (cfg.isGateway) {
        const have = hostNl.listAddresses({ link: bridge });
        for (const gw of gatewayCidrs(prev)) {
          if (!have.some((a) => cidrEquals(a.cidr, gw))) {
            throw new WeftError(CniCode.Internal, `bridge ${cfg.bridge} lacks its gateway address ${formatCidr(gw)}`);
          }
        }
      }
    });
    if (cfg.ipMasq && await attachmentRuleCount(ctx.conf.name, attachment(ctx), {}, ['inet']) === 0) {
      throw new WeftError(CniCode.Internal, `the masquerade rules of ${ctx.env.containerId}/${ctx.env.ifname} are missing`);
    }
    if (cfg.macspoofchk && await attachmentRuleCount(ctx.conf.name, attachment(ctx), {}, ['bridge']) === 0) {
      throw new WeftError(CniCode.Internal, `the MAC spoof check rule of ${ctx.env.containerId}/${ctx.env.ifname} is missing`);
    }
  },

  async status(ctx) {
    if (ctx.conf.ipam) await ipamExec(ctx, 'STATUS');
  },

  async gc(ctx) {
    if (ctx.conf.ipam) await ipamExec(ctx, 'GC');
    const valid = ctx.conf.validAttachments;
    if (valid) {
      const removed = await removeStaleRules(ctx.conf.name, valid.map((a) => ({ containerId: a.containerID, ifname: a.ifname })));
      if (removed > 0) ctx.log.info('gc removed stale nftables rules', { count: removed });
    }
  },
};

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runPlugin(weftBridgePlugin, standalonePluginHost);
}

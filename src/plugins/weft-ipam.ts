// weft-ipam: host-local compatible address allocation as a CNI IPAM plugin.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { runPlugin, type CniPlugin, type PluginContext } from '../cni/skel.js';
import { delegateAdd, delegateCommand, type DelegateTarget } from '../cni/exec.js';
import type { CniResult } from '../cni/result.js';
import { parseIpamConfig, type IpamConfig } from '../ipam/config.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus, requestedIPs, type IpamTarget } from '../ipam/ipam.js';
import { formatIP } from '../net/ip.js';

export interface WeftIpamConf {
  ipam: IpamConfig;
}

// The ipam section is parsed (and canonicalised) here, so a bad subnet fails before any I/O.
const confSchema = z
  .object({ ipam: z.unknown() })
  .passthrough()
  .transform((c): WeftIpamConf => ({ ipam: parseIpamConfig(c.ipam) }));

function target(ctx: PluginContext<WeftIpamConf>): IpamTarget {
  return { config: ctx.config.ipam, network: ctx.conf.name };
}

export const weftIpamPlugin: CniPlugin<WeftIpamConf> = {
  name: 'weft-ipam',
  confSchema,
  async add(ctx) {
    const result = await ipamAdd(target(ctx), ctx.env.containerId, ctx.env.ifname, requestedIPs(ctx.conf, ctx.env));
    ctx.log.debug('allocated', { ips: result.ips.map((i) => formatIP(i.address.ip)) });
    return result;
  },
  async del(ctx) {
    const released = await ipamDel(target(ctx), ctx.env.containerId, ctx.env.ifname);
    ctx.log.debug('released', { ips: released.map(formatIP) });
  },
  async check(ctx) {
    await ipamCheck(target(ctx), ctx.env.containerId, ctx.env.ifname, ctx.conf.prevResult);
  },
  async status(ctx) {
    await ipamStatus(target(ctx));
  },
  async gc(ctx) {
    const valid = ctx.conf.validAttachments;
    if (!valid) {
      // Without the list every allocation would look orphaned; refuse rather than wipe the network.
      throw new WeftError(CniCode.InvalidNetworkConfig, 'GC needs cni.dev/valid-attachments in the config');
    }
    const released = await ipamGc(target(ctx), valid);
    if (released.length > 0) ctx.log.info('gc released addresses', { ips: released.map(formatIP) });
  },
};

/**
 * How a main plugin (bridge, routed, macvlan) runs its `ipam` section, like the reference
 * plugins' ipam.ExecAdd: the whole conf goes to the plugin named by ipam.type. weft-ipam runs
 * in-process (no second Node start); any other type (host-local, dhcp, static) is exec'd from
 * CNI_PATH.
 */
export function ipamDelegateTarget(type: string): DelegateTarget {
  return type === weftIpamPlugin.name ? { kind: 'in-process', plugin: weftIpamPlugin } : { kind: 'exec', type };
}

function ipamType(ctx: PluginContext<unknown>): string {
  const t = ctx.conf.ipam?.type;
  if (!t) throw new WeftError(CniCode.InvalidNetworkConfig, `${ctx.conf.type}: missing ipam section (ipam.type)`);
  return t;
}

/** ADD on the conf's IPAM plugin; the result is in the IPAM plugin's terms (ips, routes, dns). */
export async function ipamExecAdd(ctx: PluginContext<unknown>): Promise<CniResult> {
  const { result } = await delegateAdd({ target: ipamDelegateTarget(ipamType(ctx)), env: ctx.env, conf: ctx.conf.raw, log: ctx.log });
  return result;
}

/** DEL/CHECK/GC/STATUS on the conf's IPAM plugin. */
export async function ipamExec(ctx: PluginContext<unknown>, command: 'DEL' | 'CHECK' | 'GC' | 'STATUS'): Promise<void> {
  await delegateCommand({ target: ipamDelegateTarget(ipamType(ctx)), command, env: ctx.env, conf: ctx.conf.raw, log: ctx.log });
}

// Run as a binary only when executed directly (the weft meta plugin imports it in-process).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runPlugin(weftIpamPlugin);
}

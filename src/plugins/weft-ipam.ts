// weft-ipam: host-local compatible address allocation as a CNI IPAM plugin.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { runPlugin, type CniPlugin, type PluginContext } from '../cni/skel.js';
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

// Run as a binary only when executed directly (the weft meta plugin imports it in-process).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runPlugin(weftIpamPlugin);
}

// weft-ipam: host-local compatible address allocation as a CNI IPAM plugin.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import { runPlugin, type CniPlugin, type PluginContext, type PluginHost } from '../../cni/skel.js';
import { standalonePluginHost } from '../pkg/host.js';
import { delegateAdd, delegateCommand, findPluginBinary, type DelegateTarget } from '../../cni/exec.js';
import type { CniEnv } from '../../cni/env.js';
import type { CniResult } from '../../cni/result.js';
import { DEFAULT_DATA_DIR, parseIpamConfig, type IpamConfig } from './config.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus, requestedIPs, type IpamTarget } from './ipam.js';
import { formatIP } from '../../net/ip.js';

export interface WeftIpamConf {
  /** The ipam section as given; every command but DEL parses it first, before any I/O. */
  section: unknown;
}

const confSchema = z
  .object({ ipam: z.unknown() })
  .passthrough()
  .transform((c): WeftIpamConf => ({ section: c.ipam }));

function target(ctx: PluginContext<WeftIpamConf>): IpamTarget {
  return { config: parseIpamConfig(ctx.config.section), network: ctx.conf.name };
}

/**
 * Where DEL looks for allocations: the section's dataDir even when the rest of it is invalid. A
 * section ADD refuses allocated nothing, so its DEL has nothing to release and must succeed; it
 * must not fail on ranges it never needs (a runtime retries a failing DEL forever).
 */
function dataDirOf(section: unknown): string {
  if (typeof section === 'object' && section !== null && 'dataDir' in section && typeof section.dataDir === 'string' && section.dataDir !== '') {
    return section.dataDir;
  }
  return DEFAULT_DATA_DIR;
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
    const released = await ipamDel({ dataDir: dataDirOf(ctx.config.section), network: ctx.conf.name }, ctx.env.containerId, ctx.env.ifname);
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
export function ipamDelegateTarget(type: string, host: PluginHost): DelegateTarget {
  return type === weftIpamPlugin.name ? { kind: 'in-process', plugin: weftIpamPlugin, host } : { kind: 'exec', type };
}

function ipamType(ctx: PluginContext<unknown>): string {
  if (!ctx.conf.ipam) throw new WeftError(CniCode.InvalidNetworkConfig, `${ctx.conf.type}: missing ipam section`);
  const t = ctx.conf.ipam.type;
  if (!t) throw new WeftError(CniCode.InvalidNetworkConfig, `${ctx.conf.type}: ipam.type is missing (the IPAM plugin to run)`);
  return t;
}

/**
 * What can be known about an ipam section without running it, checked by a main plugin (and by
 * the weft plugin for its delegate) before it touches the kernel or writes a file: there is a
 * section, it names a plugin, that plugin exists, and weft-ipam (run in this process) accepts the
 * section. Each failure is code 7 naming what is wrong. Without this, weft-bridge made its bridge
 * and then learnt that the IPAM plugin did not exist.
 */
export async function checkIpamSection(pluginType: string, ipam: unknown, env: Pick<CniEnv, 'path'>): Promise<void> {
  if (ipam === undefined) throw new WeftError(CniCode.InvalidNetworkConfig, `${pluginType}: missing ipam section`);
  if (typeof ipam !== 'object' || ipam === null || Array.isArray(ipam)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${pluginType}: ipam must be an object`);
  }
  const type = (ipam as Record<string, unknown>).type;
  if (typeof type !== 'string' || type === '') {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${pluginType}: ipam.type is missing (the IPAM plugin to run)`);
  }
  if (type === weftIpamPlugin.name) parseIpamConfig(ipam);
  else await findPluginBinary(type, env.path);
}

/** checkIpamSection on a main plugin's own config. */
export function checkIpam(ctx: PluginContext<unknown>): Promise<void> {
  return checkIpamSection(ctx.conf.type, ctx.conf.raw.ipam, ctx.env);
}

/** Whether a plugin of this type can be run: in this process, or found in CNI_PATH. */
export async function pluginAvailable(target: DelegateTarget, path: readonly string[]): Promise<boolean> {
  if (target.kind === 'in-process') return true;
  try {
    await findPluginBinary(target.type, path);
    return true;
  } catch {
    return false;
  }
}

/** ADD on the conf's IPAM plugin; the result is in the IPAM plugin's terms (ips, routes, dns). */
export async function ipamExecAdd(ctx: PluginContext<unknown>): Promise<CniResult> {
  const { result } = await delegateAdd({ target: ipamDelegateTarget(ipamType(ctx), ctx.host), env: ctx.env, conf: ctx.conf.raw, log: ctx.log });
  return result;
}

/**
 * DEL on the conf's IPAM plugin, tolerant: no section, no type or no such plugin means nothing
 * was allocated through it (ADD checks all three before allocating), so there is nothing to
 * release and DEL goes on with the rest. A plugin removed after a successful ADD leaves its
 * allocation to that plugin's GC; failing here instead would fail the runtime's DEL forever.
 */
export async function ipamExecDel(ctx: PluginContext<unknown>): Promise<void> {
  const type = ctx.conf.ipam?.type;
  if (!type) {
    if (ctx.conf.ipam) ctx.log.warn('ipam section names no plugin: nothing to release');
    return;
  }
  const target = ipamDelegateTarget(type, ctx.host);
  if (!(await pluginAvailable(target, ctx.env.path))) {
    ctx.log.warn('IPAM plugin not found in CNI_PATH: nothing to release through it', { type, path: ctx.env.path.join(':') });
    return;
  }
  await delegateCommand({ target, command: 'DEL', env: ctx.env, conf: ctx.conf.raw, log: ctx.log });
}

/** DEL/CHECK/GC/STATUS on the conf's IPAM plugin. */
export async function ipamExec(ctx: PluginContext<unknown>, command: 'DEL' | 'CHECK' | 'GC' | 'STATUS'): Promise<void> {
  await delegateCommand({ target: ipamDelegateTarget(ipamType(ctx), ctx.host), command, env: ctx.env, conf: ctx.conf.raw, log: ctx.log });
}

// Run as a binary only when executed directly (the weft meta plugin imports it in-process).
if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runPlugin(weftIpamPlugin, standalonePluginHost);
}

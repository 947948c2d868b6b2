// The weft meta plugin's real work (flannel's CNI plugin, done on weft's pieces): read this
// node's subnet.env, build the delegate's config, run the delegate — weft-bridge in this process,
// anything else (weft-routed, reference plugins) exec'd from CNI_PATH — and keep the delegate's
// effective config per attachment so DEL and CHECK act on what ADD did even after subnet.env
// changed or vanished. weftd's CNI server runs this same plugin in-process.
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeJsonObject, parsePluginConfig } from '../../cni/conf.js';
import type { CniEnv } from '../../cni/env.js';
import { delegateAdd, delegateCommand, findPluginBinary, type DelegateTarget } from '../../cni/exec.js';
import type { CniResult } from '../../cni/result.js';
import { invokePlugin, isOwnNetns, renderOutcome, type CniPlugin, type PluginContext, type PluginHost } from '../../cni/skel.js';
import { loadSubnetEnv } from '../../cni/subnet-env.js';
import { CniCode, WeftError } from '../../errors.js';
import { mkdirp } from '../../fs/mkdir.js';
import { endpointRecordDir, recordFromAdd, removeEndpointRecord, writeEndpointRecord } from '../../policy/endpoint-record.js';
import { weftBridgePlugin } from '../bridge/main.js';
import { buildDelegateConf, buildDelegateIpam, weftConfSchema, type WeftConf } from './conf.js';
import { checkIpamSection } from '../ipam/main.js';

type Ctx = PluginContext<WeftConf>;

/** What is kept on disk per attachment: enough to undo it without subnet.env. */
export interface SavedAttachment {
  containerID: string;
  ifname: string;
  /** CNI_NETNS at ADD, so GC can remove the pod's interface if its namespace outlived the pod. */
  netns?: string;
  delegate: Record<string, unknown>;
}

/** weft-bridge runs in this process (one Node start per pod), on weft's own host; other types are exec'd. */
export function delegateTarget(type: unknown, host: PluginHost): DelegateTarget {
  if (typeof type !== 'string' || type === '') throw new WeftError(CniCode.InvalidNetworkConfig, 'delegate.type must be a plugin name');
  return type === weftBridgePlugin.name ? { kind: 'in-process', plugin: weftBridgePlugin, host } : { kind: 'exec', type };
}

/**
 * The delegate's config checked as far as it can be without running it: its plugin exists and,
 * when it runs in this process, accepts the config. Code 7 naming the problem, before ADD saves
 * anything or the delegate touches the kernel.
 */
async function checkDelegateRunnable(delegate: Record<string, unknown>, env: CniEnv, host: PluginHost): Promise<DelegateTarget> {
  const target = delegateTarget(delegate.type, host);
  if (target.kind === 'in-process') parsePluginConfig(target.plugin.confSchema, delegate);
  else await findPluginBinary(target.type, env.path);
  return target;
}

/**
 * All of the above plus the ipam section. Without it a refused delegate left the saved config
 * behind, and the runtime's DEL replayed the same refused config and failed, on every retry.
 */
async function checkDelegate(delegate: Record<string, unknown>, env: CniEnv, host: PluginHost): Promise<void> {
  const target = await checkDelegateRunnable(delegate, env, host);
  await checkIpamSection(target.kind === 'in-process' ? target.plugin.name : target.type, delegate.ipam, env);
}

/** Why a saved delegate config cannot be run at all (code 7 from checkDelegateRunnable), or undefined. */
async function whyUnrunnable(delegate: Record<string, unknown>, env: CniEnv, host: PluginHost): Promise<string | undefined> {
  try {
    await checkDelegateRunnable(delegate, env, host);
    return undefined;
  } catch (err) {
    if (err instanceof WeftError && err.code === CniCode.InvalidNetworkConfig) return err.message;
    throw err;
  }
}

export function attachmentFile(dataDir: string, containerId: string, ifname: string): string {
  return join(dataDir, `${containerId}-${ifname}`);
}

async function saveAttachment(dataDir: string, saved: SavedAttachment): Promise<void> {
  const file = attachmentFile(dataDir, saved.containerID, saved.ifname);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirp(dataDir, 0o700);
    await writeFile(tmp, JSON.stringify(saved), { mode: 0o600 });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new WeftError(CniCode.IoFailure, `cannot save the delegate config to ${file}: ${(err as Error).message}`);
  }
}

function parseSaved(file: string, text: string): SavedAttachment {
  const o = decodeJsonObject(text, `saved delegate config ${file}`);
  const { containerID, ifname, netns, delegate } = o;
  if (typeof containerID !== 'string' || typeof ifname !== 'string' || typeof delegate !== 'object' || delegate === null || Array.isArray(delegate)) {
    throw new WeftError(CniCode.DecodeFailure, `saved delegate config ${file} lacks containerID, ifname or delegate`);
  }
  return { containerID, ifname, ...(typeof netns === 'string' && { netns }), delegate: delegate as Record<string, unknown> };
}

async function loadAttachment(dataDir: string, containerId: string, ifname: string): Promise<SavedAttachment | undefined> {
  const file = attachmentFile(dataDir, containerId, ifname);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WeftError(CniCode.IoFailure, `cannot read saved delegate config ${file}: ${(err as Error).message}`);
  }
  return parseSaved(file, text);
}

/** Every saved attachment in dataDir (GC); unreadable files are reported, not fatal. */
async function listAttachments(ctx: Ctx): Promise<SavedAttachment[]> {
  let names: string[];
  try {
    names = await readdir(ctx.config.dataDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new WeftError(CniCode.IoFailure, `cannot list ${ctx.config.dataDir}: ${(err as Error).message}`);
  }
  const out: SavedAttachment[] = [];
  for (const name of names) {
    if (name.endsWith('.tmp')) continue;
    const file = join(ctx.config.dataDir, name);
    try {
      out.push(parseSaved(file, await readFile(file, 'utf8')));
    } catch (err) {
      ctx.log.warn('skipping unreadable saved delegate config', { file, error: (err as Error).message });
    }
  }
  return out;
}

async function delegateDel(ctx: Ctx, saved: SavedAttachment, netns = ctx.env.netns): Promise<void> {
  const env = { ...ctx.env, containerId: saved.containerID, ifname: saved.ifname, netns };
  // A config its delegate cannot run (left by a weft that saved before checking) never got past
  // that delegate's own checks at ADD, so it made nothing: forget it rather than fail on it
  // forever. A missing IPAM plugin alone is the delegate's to tolerate (it still removes the
  // interface and rules).
  const unrunnable = await whyUnrunnable(saved.delegate, env, ctx.host);
  if (unrunnable !== undefined) {
    ctx.log.warn('saved delegate config cannot be run, so it made nothing: forgetting it', { containerId: saved.containerID, ifname: saved.ifname, reason: unrunnable });
  } else {
    await delegateCommand({ target: delegateTarget(saved.delegate.type, ctx.host), command: 'DEL', env, conf: saved.delegate, log: ctx.log });
  }
  await rm(attachmentFile(ctx.config.dataDir, saved.containerID, saved.ifname), { force: true });
  await forgetEndpoint(ctx, saved.containerID, saved.ifname);
}

/** Network policy: the endpoint record weftd publishes (src/policy/endpoint-record.ts). */
async function recordEndpoint(ctx: Ctx, result: CniResult): Promise<void> {
  const dir = endpointRecordDir(ctx.config.subnetFile);
  const record = recordFromAdd(ctx.env, ctx.conf, result);
  await writeEndpointRecord(dir, record);
  await ctx.host.endpointChanged({ type: 'added', dir, record });
}

async function forgetEndpoint(ctx: Ctx, containerID: string, ifname: string): Promise<void> {
  const dir = endpointRecordDir(ctx.config.subnetFile);
  await removeEndpointRecord(dir, containerID, ifname);
  await ctx.host.endpointChanged({ type: 'removed', dir, containerID, ifname });
}

export const weftPlugin: CniPlugin<WeftConf> = {
  name: 'weft',
  confSchema: weftConfSchema,

  async add(ctx) {
    const subnetEnv = await loadSubnetEnv(ctx.config.subnetFile);
    const delegate = buildDelegateConf(ctx.conf, ctx.config, subnetEnv);
    await checkDelegate(delegate, ctx.env, ctx.host);
    // Saved before the delegate runs: if this process dies half way, the runtime's DEL still
    // knows what to undo. After a failed ADD the file stays for that DEL, which removes it.
    await saveAttachment(ctx.config.dataDir, { containerID: ctx.env.containerId, ifname: ctx.env.ifname, netns: ctx.env.netns, delegate });
    const { result } = await delegateAdd({ target: delegateTarget(delegate.type, ctx.host), env: ctx.env, conf: delegate, log: ctx.log });
    await recordEndpoint(ctx, result);
    return result;
  },

  async del(ctx) {
    const saved = await loadAttachment(ctx.config.dataDir, ctx.env.containerId, ctx.env.ifname);
    if (!saved) {
      ctx.log.debug('no saved delegate config: nothing of ours to remove');
      await forgetEndpoint(ctx, ctx.env.containerId, ctx.env.ifname);
      return;
    }
    await delegateDel(ctx, saved);
  },

  async check(ctx) {
    const saved = await loadAttachment(ctx.config.dataDir, ctx.env.containerId, ctx.env.ifname);
    if (!saved) {
      throw new WeftError(CniCode.UnknownContainer, `no saved delegate config for ${ctx.env.containerId}/${ctx.env.ifname} in ${ctx.config.dataDir} (was ADD run?)`);
    }
    // A pod addressed from a subnet this node no longer holds is broken even if its links are fine.
    const current = await loadSubnetEnv(ctx.config.subnetFile).catch((err: unknown) => {
      if (err instanceof WeftError && err.code === CniCode.TryAgainLater) return undefined;
      throw err;
    });
    const savedIpam = saved.delegate.ipam as Record<string, unknown> | undefined;
    if (current && savedIpam) {
      const want = JSON.stringify(buildDelegateIpam(ctx.config, current).ranges);
      if (JSON.stringify(savedIpam.ranges) !== want) {
        throw new WeftError(CniCode.Internal, `${ctx.env.containerId}/${ctx.env.ifname} was addressed from ${JSON.stringify(savedIpam.ranges)} but this node's subnet is now ${want}`);
      }
    }
    const conf = { ...saved.delegate, cniVersion: ctx.conf.cniVersion, prevResult: ctx.conf.raw.prevResult };
    await delegateCommand({ target: delegateTarget(saved.delegate.type, ctx.host), command: 'CHECK', env: ctx.env, conf, log: ctx.log });
  },

  async status(ctx) {
    let subnetEnv;
    try {
      subnetEnv = await loadSubnetEnv(ctx.config.subnetFile);
    } catch (err) {
      if (err instanceof WeftError && err.code === CniCode.TryAgainLater) {
        throw new WeftError(CniCode.PluginNotAvailable, err.message, err.details);
      }
      throw err;
    }
    const delegate = buildDelegateConf(ctx.conf, ctx.config, subnetEnv);
    await delegateCommand({ target: delegateTarget(delegate.type, ctx.host), command: 'STATUS', env: ctx.env, conf: delegate, log: ctx.log });
  },

  async gc(ctx) {
    const valid = ctx.conf.validAttachments;
    if (valid) {
      // Attachments of this network the runtime no longer knows: undo them like a DEL would.
      const keep = new Set(valid.map((a) => `${a.containerID}\n${a.ifname}`));
      for (const saved of await listAttachments(ctx)) {
        if (saved.delegate.name !== ctx.conf.name || keep.has(`${saved.containerID}\n${saved.ifname}`)) continue;
        // A saved /proc/<pid>/ns/net whose pid now belongs to a host process names the host's
        // namespace: the skel would refuse it, so undo the rest as if the namespace were gone.
        const netns = saved.netns !== undefined && !isOwnNetns(saved.netns) ? saved.netns : '';
        try {
          await delegateDel(ctx, saved, netns);
          ctx.log.info('gc removed a stale attachment', { containerId: saved.containerID, ifname: saved.ifname });
        } catch (err) {
          ctx.log.warn('gc could not remove a stale attachment', { containerId: saved.containerID, ifname: saved.ifname, error: (err as Error).message });
        }
      }
    }
    const subnetEnv = await loadSubnetEnv(ctx.config.subnetFile).catch((err: unknown) => {
      if (err instanceof WeftError && err.code === CniCode.TryAgainLater) return undefined;
      throw err;
    });
    if (!subnetEnv) {
      ctx.log.info('gc skipped the delegate: no subnet.env yet');
      return;
    }
    const delegate = buildDelegateConf(ctx.conf, ctx.config, subnetEnv);
    if (ctx.conf.raw['cni.dev/valid-attachments'] !== undefined) delegate['cni.dev/valid-attachments'] = ctx.conf.raw['cni.dev/valid-attachments'];
    await delegateCommand({ target: delegateTarget(delegate.type, ctx.host), command: 'GC', env: ctx.env, conf: delegate, log: ctx.log });
  },
};

/**
 * One invocation of the plugin on already-read stdin, on the caller's host: the fast path's
 * fallback (standalone) and weftd's CNI server (its own).
 */
export async function runWeftLocally(env: NodeJS.ProcessEnv, stdin: string | Buffer, host: PluginHost): Promise<{ stdout: string; exitCode: number }> {
  return renderOutcome(await invokePlugin(weftPlugin, env, stdin, { host }));
}

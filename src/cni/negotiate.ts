// Which cniVersion a network config list can use: every plugin in the chain must speak it, and a
// distribution's plugins often lag weft's (Debian 12's portmap stops at 1.0.0, so a 1.1.0 list
// fails with "incompatible CNI versions" before anything runs). Each plugin is asked, as the
// spec's VERSION command does, and the highest version all of them name is the one to write.
import { spawnSync } from 'node:child_process';
import { compareVersions } from './version.js';
import { parseDelegateOutput } from './exec.js';

/** What one plugin answered to VERSION, or why it could not be asked. */
export type PluginVersions =
  | { readonly type: string; readonly kind: 'versions'; readonly supported: readonly string[] }
  | { readonly type: string; readonly kind: 'unknown'; readonly reason: string };

/**
 * Asks one plugin binary for its supported versions (CNI_COMMAND=VERSION). Synchronous: the
 * callers are one-shot commands (install), never weftd's loop. The conf names 0.3.0, which every
 * plugin that answers VERSION at all accepts.
 */
export function askPluginVersions(type: string, binary: string, timeoutMs = 10_000): PluginVersions {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'VERSION', CNI_PATH: '' };
  const r = spawnSync(binary, [], { input: '{"cniVersion":"0.3.0"}', env, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) return { type, kind: 'unknown', reason: `cannot run ${binary}: ${r.error.message}` };
  try {
    const o = parseDelegateOutput(type, 'VERSION', r.status ?? 1, r.stdout, r.stderr);
    if (o.kind === 'versions') return { type, kind: 'versions', supported: o.supportedVersions };
  } catch (err) {
    return { type, kind: 'unknown', reason: err instanceof Error ? err.message : String(err) };
  }
  return { type, kind: 'unknown', reason: `${binary} VERSION printed no supportedVersions` };
}

export function highestVersion(versions: readonly string[]): string | undefined {
  return [...versions].sort(compareVersions).pop();
}

export interface Negotiated {
  /** The highest version every plugin that answered supports (among `candidates`), if any. */
  readonly version: string | undefined;
  /** Plugins whose highest version is below the highest candidate: who holds the list back. */
  readonly behind: ReadonlyArray<{ readonly type: string; readonly highest: string }>;
  readonly unknown: ReadonlyArray<{ readonly type: string; readonly reason: string }>;
}

/** The highest of `candidates` (versions the caller itself can write) that every plugin supports. */
export function negotiateVersion(candidates: readonly string[], plugins: readonly PluginVersions[]): Negotiated {
  let common = [...candidates];
  const behind: Array<{ type: string; highest: string }> = [];
  const unknown: Array<{ type: string; reason: string }> = [];
  const top = highestVersion(candidates);
  for (const p of plugins) {
    if (p.kind === 'unknown') {
      unknown.push({ type: p.type, reason: p.reason });
      continue;
    }
    common = common.filter((v) => p.supported.includes(v));
    const highest = highestVersion(p.supported);
    if (highest !== undefined && top !== undefined && compareVersions(highest, top) < 0) behind.push({ type: p.type, highest });
  }
  return { version: highestVersion(common), behind, unknown };
}

/** "portmap supports up to 1.0.0, …": the plugins that hold a list back. */
export function describeLaggards(behind: ReadonlyArray<{ readonly type: string; readonly highest: string }>): string {
  return behind.map((b) => `${b.type} supports up to ${b.highest}`).join(', ');
}

/** One line saying which plugins hold a list below `wanted`, for errors and warnings. */
export function describeBehind(wanted: string, n: Negotiated): string {
  const who = describeLaggards(n.behind);
  const pick = n.version ? `; the highest version every plugin supports is ${n.version}` : '; no version is supported by every plugin';
  return `cniVersion ${wanted}: ${who || 'a plugin does not support it'}${pick}`;
}

// `weftctl install` / `uninstall`: put a self-contained weft on a host (or under --root) so a
// container runtime can exec the plugins from its CNI directory, and take exactly that away
// again. Both are idempotent: a second install rewrites only what differs, a second uninstall
// finds no manifest and does nothing.
//
// Shape on the host (defaults):
//   /opt/weft/                 self-contained tree, owned wholly by weft (replaced as a unit)
//     dist/cni/*.cjs …         one-file plugin bundles + V8 code caches
//     dist/src/**              weftd / weftctl;  node_modules/ (runtime packages only)
//     build/Release/weft_native.node
//     bin/weftd bin/weftctl    launchers with an absolute node;  bin/cni → the CNI bin dir
//   /opt/cni/bin/weft …        one small launcher per plugin (absolute node + bundle path)
//   /opt/cni/bin/portmap       symlink to the distribution's reference plugin, if missing
//   /etc/cni/net.d/10-weft.conflist   weft, then portmap (portMappings capability)
//   /etc/weft/weftd.env        WEFTD_* flags;  /etc/weft/net-conf.json (optional seed)
//   /etc/systemd/system/weftd.service
//   /var/lib/weft/install-manifest.json
// Why launchers and not symlinks into /opt/weft: a symlink makes the checkout's shim resolve it
// (one readlink process per call) and would tie the runtime to PATH having node; a launcher
// names both absolutely and costs nothing.
import { randomBytes } from 'node:crypto';
import {
  chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync,
  renameSync, rmSync, rmdirSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';
import {
  REFERENCE_PLUGINS, REFERENCE_PLUGIN_DIRS, WEFT_PLUGINS, commandLauncher, conflist, pluginLauncher, systemdUnit, weftdEnvFile,
} from './files.js';
import { resolveLayout, type Layout, type LayoutOptions } from './layout.js';
import { readManifest, renderManifest, sha256, type Manifest, type ManifestEntry } from './manifest.js';
import { checkSource, copyPayload, defaultSourceRoot } from './payload.js';
import { askPluginVersions, describeBehind, describeLaggards, negotiateVersion, type PluginVersions } from '../cni/negotiate.js';
import { SUPPORTED_VERSIONS, compareVersions, isCniVersion } from '../cni/version.js';

export interface InstallOptions extends LayoutOptions {
  /** CNI network name (the conflist's `name`). */
  readonly network?: string;
  /** WEFTD_* variables for the env file, in order; the installer adds WEFTD_SUBNET_FILE etc. */
  readonly weftdEnv?: ReadonlyArray<readonly [string, string]>;
  /** Written to net-conf.json (flannel's net-conf): applied to a file store before weftd starts. */
  readonly netConf?: Readonly<Record<string, unknown>>;
  /** Keys for the weft plugin's delegate (e.g. {bridge: "cni0"}). */
  readonly delegate?: Readonly<Record<string, unknown>>;
  /** The node binary the launchers exec (default: the one running this). */
  readonly nodePath?: string;
  /** Copy node into the lib dir: for hosts without node (the DaemonSet's init step). */
  readonly copyNode?: boolean;
  /** Built weft to install from (default: the tree this module runs from). */
  readonly source?: string;
  /** Replace files at our paths that a previous weft install did not write. */
  readonly force?: boolean;
  /** Where to look for the reference portmap (default: the distributions' usual places). */
  readonly referencePluginDirs?: readonly string[];
  /**
   * The conflist's cniVersion. Absent: the highest version up to 1.0.0 that every plugin in the
   * chain answers to VERSION (see chooseConflistVersion); given: checked against them.
   */
  readonly cniVersion?: string;
}

export interface InstallReport {
  readonly layout: Layout;
  readonly written: string[];
  readonly unchanged: string[];
  readonly removed: string[];
  readonly warnings: string[];
  /** The cniVersion written into the conflist. */
  readonly cniVersion: string;
}

class Recorder {
  readonly entries: ManifestEntry[] = [];
  readonly written: string[] = [];
  readonly unchanged: string[] = [];
  readonly warnings: string[] = [];

  constructor(private readonly previous: Manifest | undefined, private readonly force: boolean) {}

  ownedBefore(path: string): ManifestEntry | undefined {
    return this.previous?.entries.find((e) => e.path === path);
  }

  /** Creates `dir` and missing parents, recording each directory this install (or the last) created. */
  ensureDir(dir: string): void {
    const missing: string[] = [];
    for (let d = dir; !existsSync(d); d = dirname(d)) missing.unshift(d);
    for (const d of missing) mkdirSync(d);
    for (const d of [...missing, ...this.ancestors(dir)]) {
      const before = this.ownedBefore(d);
      const createdNow = missing.includes(d);
      if ((createdNow || before?.kind === 'dir') && !this.entries.some((e) => e.path === d)) this.entries.push({ kind: 'dir', path: d });
    }
  }

  private ancestors(dir: string): string[] {
    const out: string[] = [];
    for (let d = dir; dirname(d) !== d; d = dirname(d)) out.unshift(d);
    return out;
  }

  /** A file we may write: absent, ours from the last install, identical, or --force. */
  claim(path: string, content: string | Buffer): void {
    if (!existsSync(path) && !isSymlink(path)) return;
    if (this.ownedBefore(path) || this.force) return;
    if (lstatSync(path).isFile() && sha256(readFileSync(path)) === sha256(content)) return;
    throw new WeftError(CniCode.InvalidEnvironment, `${path} exists and was not written by weftctl install; move it away or pass --force`);
  }

  writeFile(path: string, content: string, mode = 0o644): void {
    this.claim(path, content);
    this.ensureDir(dirname(path));
    const hash = sha256(content);
    const same = existsSync(path) && lstatSync(path).isFile() && sha256(readFileSync(path)) === hash && (lstatSync(path).mode & 0o777) === mode;
    if (same) {
      this.unchanged.push(path);
    } else {
      // Atomic: a runtime exec'ing the plugin or systemd reading the unit never sees half a file.
      const tmp = `${path}.weft-tmp-${randomBytes(4).toString('hex')}`;
      writeFileSync(tmp, content, { mode });
      chmodSync(tmp, mode);
      renameSync(tmp, path);
      this.written.push(path);
    }
    this.entries.push({ kind: 'file', path, sha256: hash });
  }

  symlink(path: string, target: string): void {
    if (isSymlink(path) && readlinkSync(path) === target) {
      this.unchanged.push(path);
    } else {
      this.claim(path, '');
      this.ensureDir(dirname(path));
      rmSync(path, { force: true });
      symlinkSync(target, path);
      this.written.push(path);
    }
    this.entries.push({ kind: 'symlink', path, target });
  }
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function isEmptyDir(path: string): boolean {
  return readdirSync(path).length === 0;
}

function weftVersion(source: string): string {
  const v = (JSON.parse(readFileSync(join(source, 'package.json'), 'utf8')) as { version?: unknown }).version;
  return typeof v === 'string' ? v : '0.0.0';
}

/** Builds the lib dir next to its final place, then swaps it in, so it is never half there. */
function claimLibDir(rec: Recorder, lib: string): void {
  const ours = rec.ownedBefore(lib)?.kind === 'tree';
  if (existsSync(lib) && !ours && !isEmptyDir(lib)) {
    throw new WeftError(CniCode.InvalidEnvironment, `${lib} exists and is not a weft install (no manifest entry); remove it or choose --lib-dir`);
  }
}

function installLibDir(rec: Recorder, layout: Layout, source: string, nodePath: string, copyNode: boolean): string {
  const lib = layout.libDir;
  rec.ensureDir(dirname(lib));
  const staging = `${lib}.weft-new-${randomBytes(4).toString('hex')}`;
  let node = nodePath;
  try {
    copyPayload(source, staging);
    const binDir = join(staging, 'bin');
    mkdirSync(binDir, { recursive: true });
    if (copyNode) {
      copyFileSync(nodePath, join(binDir, 'node'));
      chmodSync(join(binDir, 'node'), 0o755);
      node = join(lib, 'bin', 'node');
    }
    // weft's version for --version (src/version.ts finds it above the bundles).
    writeFileSync(join(staging, 'package.json'), JSON.stringify({ name: 'weft', version: weftVersion(source), private: true }, null, 2) + '\n');
    for (const cmd of ['weftd', 'weftctl'] as const) {
      writeFileSync(join(binDir, cmd), commandLauncher(cmd, layout, node), { mode: 0o755 });
    }
    // `weftctl cni` from the tree finds the plugins where the runtime does.
    symlinkSync(layout.cniBinDir, join(binDir, 'cni'));
    if (existsSync(lib)) {
      const old = `${lib}.weft-old-${randomBytes(4).toString('hex')}`;
      renameSync(lib, old);
      renameSync(staging, lib);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(staging, lib);
    }
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
  rec.written.push(lib);
  rec.entries.push({ kind: 'tree', path: lib });
  return node;
}

/**
 * Runtimes ask nothing of a conflist but its cniVersion, and the libcni in the runtimes of this
 * generation (podman 4, containerd 1.7, CRI-O 1.2x) refuses 1.1.0 without a way to ask it first,
 * so by default weft writes at most 1.0.0 — lower when a chained plugin lags further. An
 * explicit --cni-version is written as given, with a warning naming any plugin that lacks it.
 */
function chooseConflistVersion(wanted: string | undefined, chain: readonly PluginVersions[], warnings: string[]): string {
  for (const p of chain) if (p.kind === 'unknown') warnings.push(`could not ask ${p.type} for its CNI versions (${p.reason}); conflist version chosen without it`);
  if (wanted !== undefined) {
    if (!isCniVersion(wanted)) throw new WeftError(CniCode.InvalidEnvironment, `--cni-version: ${JSON.stringify(wanted)} is not a CNI version weft speaks (${SUPPORTED_VERSIONS.join(', ')})`);
    if (negotiateVersion([wanted], chain).version !== wanted) {
      warnings.push(`${describeBehind(wanted, negotiateVersion(SUPPORTED_VERSIONS, chain))}: the runtime will refuse this conflist`);
    }
    return wanted;
  }
  const candidates = SUPPORTED_VERSIONS.filter((v) => compareVersions(v, DEFAULT_CONFLIST_VERSION) <= 0);
  const n = negotiateVersion(candidates, chain);
  if (n.version === undefined) {
    warnings.push(`${describeBehind(DEFAULT_CONFLIST_VERSION, n)}: writing ${DEFAULT_CONFLIST_VERSION}`);
    return DEFAULT_CONFLIST_VERSION;
  }
  if (n.version !== DEFAULT_CONFLIST_VERSION) warnings.push(`conflist written as cniVersion ${n.version}: ${describeLaggards(n.behind)}`);
  return n.version;
}

/** What runtimes of this generation accept (see chooseConflistVersion). */
const DEFAULT_CONFLIST_VERSION = '1.0.0';

function findReferencePlugin(name: string, layout: Layout, dirs: readonly string[]): string | undefined {
  for (const d of dirs) {
    if (d === layout.cniBinDir) continue;
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function weftdEnv(layout: Layout, o: InstallOptions): Map<string, string> {
  const vars = new Map<string, string>(o.weftdEnv ?? []);
  if (!vars.has('WEFTD_STORE')) vars.set('WEFTD_STORE', 'file');
  if (vars.get('WEFTD_STORE') === 'file' && !vars.has('WEFTD_STORE_DIR')) vars.set('WEFTD_STORE_DIR', layout.storeDir);
  vars.set('WEFTD_SUBNET_FILE', layout.subnetFile);
  return vars;
}

export function install(o: InstallOptions): InstallReport {
  const layout = resolveLayout(o);
  const source = o.source ?? defaultSourceRoot();
  checkSource(source);
  const previous = readManifest(layout.manifest);
  const rec = new Recorder(previous, o.force ?? false);
  const nodePath = o.nodePath ?? process.execPath;
  if (!existsSync(nodePath)) throw new WeftError(CniCode.InvalidEnvironment, `--node: ${nodePath} does not exist`);

  const node = o.copyNode ? join(layout.libDir, 'bin', 'node') : nodePath;
  const env = weftdEnv(layout, o);
  const seed = o.netConf !== undefined;
  const refDirs = o.referencePluginDirs ?? REFERENCE_PLUGIN_DIRS;
  const chain = REFERENCE_PLUGINS.flatMap((ref) => {
    const at = join(layout.cniBinDir, ref);
    const hostOwn = existsSync(at) && rec.ownedBefore(at)?.kind !== 'symlink';
    const bin = hostOwn ? at : findReferencePlugin(ref, layout, refDirs);
    return bin ? [askPluginVersions(ref, bin)] : [];
  });
  const cniVersion = chooseConflistVersion(o.cniVersion, chain, rec.warnings);
  const files: Array<{ path: string; content: string; mode?: number }> = [
    ...WEFT_PLUGINS.map((plugin) => ({ path: join(layout.cniBinDir, plugin), content: pluginLauncher(plugin, layout, node, existsSync(join(source, 'dist', 'cni', `${plugin}.native`))), mode: 0o755 })),
    { path: layout.conflist, content: conflist(layout, { network: o.network ?? 'weft', cniVersion, ...(o.delegate && { delegate: o.delegate }) }) },
    { path: layout.envFile, content: weftdEnvFile(env), mode: 0o600 },
    ...(seed ? [{ path: layout.netConfFile, content: JSON.stringify(o.netConf, null, 2) + '\n' }] : []),
    ...(layout.unitFile ? [{ path: layout.unitFile, content: systemdUnit(layout, { seedConfig: seed && env.get('WEFTD_STORE') === 'file' }) }] : []),
  ];
  // Every refusal happens before the first write, so a refused install leaves nothing behind.
  claimLibDir(rec, layout.libDir);
  for (const f of files) rec.claim(f.path, f.content);

  installLibDir(rec, layout, source, nodePath, o.copyNode ?? false);
  for (const f of files) rec.writeFile(f.path, f.content, f.mode);

  for (const ref of REFERENCE_PLUGINS) {
    const at = join(layout.cniBinDir, ref);
    const ours = rec.ownedBefore(at)?.kind === 'symlink';
    if (existsSync(at) && !ours) continue; // the host's own portmap: not ours to replace
    const found = findReferencePlugin(ref, layout, refDirs);
    if (found) rec.symlink(at, found);
    else rec.warnings.push(`reference plugin ${ref} not found in ${refDirs.join(', ')}: install containernetworking-plugins; hostPort mappings need it`);
  }

  // What the last install wrote and this one did not (another --cni-bin-dir, no unit now …).
  const keep = new Set(rec.entries.map((e) => e.path));
  const stale = (previous?.entries ?? []).filter((e) => !keep.has(e.path) && e.path !== layout.manifest);
  const removed = removeEntries(stale, rec.warnings);

  rec.ensureDir(dirname(layout.manifest));
  const manifest: Manifest = {
    format: 1,
    weftVersion: weftVersion(source),
    root: layout.root,
    installedAt: new Date().toISOString(),
    entries: rec.entries,
  };
  const tmp = `${layout.manifest}.weft-tmp`;
  writeFileSync(tmp, renderManifest(manifest), { mode: 0o644 });
  renameSync(tmp, layout.manifest);
  return { layout, written: rec.written, unchanged: rec.unchanged, removed, warnings: rec.warnings, cniVersion };
}

/** Removes entries, files before the directories that held them; returns what went. */
function removeEntries(entries: readonly ManifestEntry[], warnings: string[]): string[] {
  const removed: string[] = [];
  const dirs = entries.filter((e) => e.kind === 'dir').map((e) => e.path).sort((a, b) => b.length - a.length);
  for (const e of entries) {
    switch (e.kind) {
      case 'file': {
        if (!existsSync(e.path)) break;
        if (!lstatSync(e.path).isFile() || sha256(readFileSync(e.path)) !== e.sha256) {
          warnings.push(`${e.path} changed since install; left in place`);
          break;
        }
        rmSync(e.path);
        removed.push(e.path);
        break;
      }
      case 'symlink':
        if (isSymlink(e.path) && readlinkSync(e.path) === e.target) {
          rmSync(e.path);
          removed.push(e.path);
        } else if (existsSync(e.path) || isSymlink(e.path)) {
          warnings.push(`${e.path} no longer points at ${e.target}; left in place`);
        }
        break;
      case 'tree':
        if (existsSync(e.path)) {
          rmSync(e.path, { recursive: true, force: true });
          removed.push(e.path);
        }
        break;
      case 'dir':
        break;
    }
  }
  for (const d of dirs) {
    try {
      rmdirSync(d);
      removed.push(d);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
  }
  return removed;
}

export interface UninstallReport {
  readonly manifest: string;
  /** false: there was no manifest, so nothing was installed (or it was already removed). */
  readonly found: boolean;
  readonly removed: string[];
  readonly warnings: string[];
}

export function uninstall(o: Pick<LayoutOptions, 'root' | 'manifest'>): UninstallReport {
  const layout = resolveLayout(o);
  const m = readManifest(layout.manifest);
  if (!m) return { manifest: layout.manifest, found: false, removed: [], warnings: [] };
  const warnings: string[] = [];
  // The manifest goes before the directories are tried, so the one holding it can go too.
  const removed = removeEntries(m.entries.filter((e) => e.kind !== 'dir'), warnings);
  rmSync(layout.manifest, { force: true });
  removed.push(layout.manifest);
  removed.push(...removeEntries(m.entries.filter((e) => e.kind === 'dir'), warnings));
  return { manifest: layout.manifest, found: true, removed, warnings };
}

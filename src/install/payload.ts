// What a self-contained weft tree holds, taken from a built weft (a checkout after `npm run
// build`, or an installed /opt/weft — both have the bundles in the same places): the launchers
// the checkout runs (bin/weftd, bin/weftctl, copied verbatim into libexec/), weftd's and weftctl's
// one-file bundles with weftd's code cache, the CNI server's worker bundle, the plugin bundles
// with their caches and native front, the native addon, and the few data files bundled packages
// read at run time (etcd3's .proto files; dist/package-data.json names the packages). No tsc
// output, no node_modules code, no source maps: the installed weftd is the measured one.
import { cpSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CniCode, WeftError } from '../errors.js';
import { WEFT_PLUGINS } from './files.js';

/** dist/src/install (tsc output, or the path bundles give this module) → the built tree's root. */
export function defaultSourceRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export const ADDON_REL = join('build', 'Release', 'weft_native.node');
export const PACKAGE_DATA_REL = join('dist', 'package-data.json');

/** The bundles every tree must have, and which a checkout's tsc must not have outdated. */
const BUNDLES = [
  join('dist', 'weftd', 'weftd.cjs'),
  join('dist', 'weftd', 'weftd.bundle.cjs'),
  join('dist', 'weftd', 'cni-worker.bundle.cjs'),
  join('dist', 'weftd', 'full-pass-worker.bundle.cjs'),
  join('dist', 'weftctl', 'weftctl.bundle.cjs'),
  join('dist', 'ui', 'app.js'),
  ...WEFT_PLUGINS.flatMap((p) => [join('dist', 'cni', `${p}.cjs`), join('dist', 'cni', `${p}.bundle.cjs`)]),
];

/** The checkout's launcher (bin/) or an installed tree's copy of it (libexec/). */
export function launcherSource(root: string, command: 'weftd' | 'weftctl'): string {
  const installed = join(root, 'libexec', command);
  return existsSync(installed) ? installed : join(root, 'bin', command);
}

/** Throws naming the first missing or stale piece, so "run the build" is the obvious next step. */
export function checkSource(root: string): void {
  const needed = ['package.json', ADDON_REL, PACKAGE_DATA_REL, ...BUNDLES];
  for (const rel of needed) {
    if (!existsSync(join(root, rel))) {
      throw new WeftError(CniCode.InvalidEnvironment, `install source ${root} has no ${rel}: build weft first (npm run build)`);
    }
  }
  for (const cmd of ['weftd', 'weftctl'] as const) {
    if (!existsSync(launcherSource(root, cmd))) throw new WeftError(CniCode.InvalidEnvironment, `install source ${root} has no bin/${cmd}`);
  }
  // A tsc run after the bundling (npm run build:ts alone) would install code older than the checkout's.
  const info = join(root, 'dist', '.tsbuildinfo');
  if (existsSync(info)) {
    const tsc = statSync(info).mtimeMs;
    const stale = BUNDLES.find((rel) => statSync(join(root, rel)).mtimeMs < tsc);
    if (stale) throw new WeftError(CniCode.InvalidEnvironment, `install source ${root}: ${stale} is older than tsc's last run: rebuild the bundles (npm run build)`);
  }
}

/** Package directories whose non-code files the bundles read (see scripts/bundle-plugins.mjs). */
export function packagesWithData(root: string): string[] {
  const list = JSON.parse(readFileSync(join(root, PACKAGE_DATA_REL), 'utf8')) as unknown;
  if (!Array.isArray(list) || !list.every((p) => typeof p === 'string' && p.startsWith('node_modules/') && !p.includes('..'))) {
    throw new WeftError(CniCode.InvalidEnvironment, `install source ${root}: ${PACKAGE_DATA_REL} is not a list of node_modules/ paths`);
  }
  return list as string[];
}

const CODE = /\.(c|m)?(js|ts)$|\.map$|\.d\.ts$|\.md$/;

/** A package's files minus its code (bundled already), docs and nested packages. */
function dataFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules') walk(p);
      } else if (!CODE.test(e.name)) {
        out.push(relative(dir, p));
      }
    }
  };
  walk(dir);
  return out;
}

/** Copies the payload from `source` into `dest` (which must not exist yet). */
export function copyPayload(source: string, dest: string): void {
  const noMaps = (p: string): boolean => !p.endsWith('.map') && !p.endsWith('.meta.json');
  // dist/ui: the web view's page, which an installed weftctl ui serves.
  for (const dir of ['weftd', 'weftctl', 'cni', 'ui']) cpSync(join(source, 'dist', dir), join(dest, 'dist', dir), { recursive: true, filter: noMaps });
  cpSync(join(source, PACKAGE_DATA_REL), join(dest, PACKAGE_DATA_REL));
  cpSync(join(source, ADDON_REL), join(dest, ADDON_REL));
  for (const cmd of ['weftd', 'weftctl'] as const) cpSync(launcherSource(source, cmd), join(dest, 'libexec', cmd));
  for (const pkg of packagesWithData(source)) {
    for (const rel of dataFiles(join(source, pkg))) cpSync(join(source, pkg, rel), join(dest, pkg, rel));
  }
  if (!existsSync(join(dest, 'dist', 'weftd', 'weftd.cjs'))) throw new WeftError(CniCode.Internal, `copying ${source}${sep}dist failed`);
}

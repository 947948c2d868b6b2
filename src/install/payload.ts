// What a self-contained weft tree holds, taken from a built weft (a checkout after `npm run
// build`, or an installed /opt/weft — both have the same shape): tsc's output for weftd and
// weftctl, the one-file CNI bundles with their code caches, the native addon, and the runtime
// npm packages weftd needs (etcd3, prom-client, zod … and their dependencies, not dev tools).
import { cpSync, existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CniCode, WeftError } from '../errors.js';
import { WEFT_PLUGINS } from './files.js';

/** dist/src/install → the built tree's root. */
export function defaultSourceRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

export const ADDON_REL = join('build', 'Release', 'weft_native.node');

/** Throws naming the first missing piece, so "run the build" is the obvious next step. */
export function checkSource(root: string): void {
  const needed = [
    'package.json',
    ADDON_REL,
    join('dist', 'src', 'cli', 'weftd.js'),
    join('dist', 'src', 'cli', 'weftctl.js'),
    ...WEFT_PLUGINS.flatMap((p) => [join('dist', 'cni', `${p}.cjs`), join('dist', 'cni', `${p}.bundle.cjs`)]),
  ];
  for (const rel of needed) {
    if (!existsSync(join(root, rel))) {
      throw new WeftError(CniCode.InvalidEnvironment, `install source ${root} has no ${rel}: build weft first (npm run build)`);
    }
  }
}

interface PackageJson {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

function readPackage(dir: string): PackageJson {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;
}

/** Node's lookup: node_modules/NAME in `from` and each parent, not above the tree's root. */
function locatePackage(root: string, from: string, name: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === root) return undefined;
    const up = dirname(dir);
    if (up === dir || !`${up}${sep}`.startsWith(`${root}${sep}`) && up !== root) return undefined;
    dir = up;
  }
}

/**
 * The package directories (relative to root) that the runtime dependencies need, transitively,
 * each found the way Node will find it from where it is used. An optional dependency that is
 * not installed is skipped; a missing required one is an error naming it.
 */
export function runtimePackages(root: string): string[] {
  const found = new Set<string>();
  const visit = (dir: string): void => {
    const pkg = readPackage(dir);
    const required = Object.keys(pkg.dependencies ?? {});
    const optional = Object.keys(pkg.optionalDependencies ?? {});
    for (const [name, isOptional] of [...required.map((n) => [n, false] as const), ...optional.map((n) => [n, true] as const)]) {
      const at = locatePackage(root, dir, name);
      if (!at) {
        if (isOptional) continue;
        throw new WeftError(CniCode.InvalidEnvironment, `install source: package ${name} (needed by ${relative(root, dir) || 'weft'}) is not installed; run npm ci`);
      }
      const rel = relative(root, at);
      if (found.has(rel)) continue;
      found.add(rel);
      visit(at);
    }
  };
  visit(root);
  return [...found].sort();
}

/** Copies the payload from `source` into `dest` (which must not exist yet). */
export function copyPayload(source: string, dest: string): void {
  cpSync(join(source, 'dist', 'src'), join(dest, 'dist', 'src'), { recursive: true, filter: (p) => !p.endsWith('.tsbuildinfo') });
  cpSync(join(source, 'dist', 'cni'), join(dest, 'dist', 'cni'), { recursive: true, filter: (p) => !p.endsWith('.meta.json') });
  cpSync(join(source, ADDON_REL), join(dest, ADDON_REL));
  for (const rel of runtimePackages(source)) {
    const from = join(source, rel);
    // A package's own nested node_modules are copied as packages of their own when needed.
    cpSync(from, join(dest, rel), {
      recursive: true,
      filter: (p) => {
        const inner = relative(from, p);
        return !(inner === 'node_modules' || inner.startsWith(`node_modules${sep}`) || inner.split(sep).includes('.bin'));
      },
    });
  }
}

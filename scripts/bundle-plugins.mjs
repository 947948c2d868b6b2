#!/usr/bin/env node
// Builds the fast-starting form of each CNI plugin in dist/cni, which the bin/cni shims run in
// preference to tsc's output:
//   <plugin>.bundle.cjs  the plugin and everything it imports (zod too) in one CommonJS file
//   <plugin>.bundle.cache  V8's code cache for it, made by running its top level once
//   <plugin>.cjs         scripts/cni-launcher.cjs: runs the bundle with that cache
//
// Why: a plugin process lives for one CNI call, so Node's start-up is its latency. From tsc's
// output a plugin resolves, reads and links 16–40 ESM modules plus zod through the async ESM
// loader; one CJS file needs one read and one compile, and the code cache skips most of the
// compile. `npm run bench -- cni` measures it (bench/results/cni.md). Tried and dropped: a V8
// start-up snapshot (node --build-snapshot) started no faster than the cached bundle here —
// deserialising its 4 MB heap costs what compiling saved — and would freeze module-level reads
// of process.env at build time; --v8-pool-size=0, --max-semi-space-size and --jitless gained
// nothing or were slower.
//
// The plugins are the shims in bin/cni (each names its plugin on a `plugin=` line); a shim whose
// source is not in src/plugins/<name>/main.ts yet is skipped with a warning. Generated from src/ on every
// build (scripts/build.sh, npm run build:ts); dist/ is never committed.
//
//   node scripts/bundle-plugins.mjs [--metafile] [--no-minify] [--out-dir=DIR (default dist/cni)]

import { build } from 'esbuild';
import { execFile } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { copyFile, mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const shimDir = join(root, 'bin', 'cni');
const outDirArg = process.argv.find((a) => a.startsWith('--out-dir='))?.slice('--out-dir='.length);
const outDir = outDirArg ? resolve(outDirArg) : join(root, 'dist', 'cni');

/** A plugin's entry point: its folder under src/plugins, named without the `weft-` prefix. */
function pluginEntry(name) {
  return join(root, 'src', 'plugins', name.replace(/^weft-/, ''), 'main.ts');
}

/** Plugin names from the shims' `plugin=NAME` lines, so a new shim is bundled without an edit here. */
async function pluginsFromShims() {
  const names = [];
  for (const file of (await readdir(shimDir)).sort()) {
    const m = /^plugin=([a-z0-9-]+)$/m.exec(await readFile(join(shimDir, file), 'utf8'));
    if (m) names.push(m[1]);
    else process.stderr.write(`bundle-plugins: warning: bin/cni/${file} has no plugin= line; not bundled\n`);
  }
  return names;
}

// Modules use import.meta.url for two things: finding the native addon relative to themselves,
// and the "am I the main module?" guard at the end of each plugin (argv[1] vs the module's
// file). CJS has no import.meta, and in one bundle every module would share one URL, so
// weft-bridge's bundle would also run weft-ipam's main. So each module gets the URL it would
// have as tsc output (dist/src/<path>.js), computed at run time from the bundle's location —
// the addon search behaves as from dist/ — except the plugin's own source, which gets the
// bundle's URL: its guard matches the bundle being run and starts exactly that plugin.
// The URL comes from a function on the bundle's first line, outside every module, because a
// module's own `require` may be shadowed there (native.ts has `const require = createRequire(…)`).
const URL_HELPER = '__weftModuleUrl';
// "use strict" first: a banner line in front of esbuild's own directive would turn it off.
const URL_HELPER_SOURCE =
  `'use strict';\nfunction ${URL_HELPER}(rel) { return require('node:url').pathToFileURL(rel === null ? __filename : require('node:path').join(__dirname, rel)).href; }`;
// The same for CommonJS packages bundled into weftd that find data files next to their sources
// (etcd3 loads its .proto files from `${__dirname}/../proto`): __dirname becomes the package
// directory it names in node_modules, found from the bundle's location at run time.
const DIR_HELPER = '__weftModuleDir';
const WEFTD_BANNER = `${URL_HELPER_SOURCE}\nfunction ${DIR_HELPER}(rel) { return require('node:path').join(__dirname, rel); }`;

/** node_modules/NAME or node_modules/@scope/NAME above a file, relative to the checkout. */
function packageRootOf(file) {
  // Relative to the directory holding the real node_modules (it may be a symlink).
  const parts = relative(dirname(realpathSync(join(root, 'node_modules'))), file).split('/');
  const i = parts.lastIndexOf('node_modules');
  return parts.slice(0, i + (parts[i + 1]?.startsWith('@') ? 3 : 2)).join('/');
}

/** Packages whose files read data next to themselves: an install copies their non-code files. */
const packagesWithData = new Set();

function dirnamePerPackageFile(bundleDir) {
  return {
    name: 'dirname-per-package-file',
    setup(b) {
      b.onLoad({ filter: /[\\/]node_modules[\\/].*\.js$/ }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('__dirname')) return undefined;
        packagesWithData.add(packageRootOf(args.path));
        const rel = JSON.stringify(relative(bundleDir, dirname(args.path)));
        return { contents: source.replace(/\b__dirname\b/g, `${DIR_HELPER}(${rel})`), loader: 'js' };
      });
    },
  };
}

function importMetaUrlPerModule(entryPath, bundleDir = outDir) {
  return {
    name: 'import-meta-url-per-module',
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, async (args) => {
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('import.meta.url')) return undefined;
        const asDist = relative(bundleDir, join(root, 'dist', relative(root, args.path))).replace(/\.ts$/, '.js');
        const rel = args.path === entryPath ? 'null' : JSON.stringify(asDist);
        return { contents: source.replaceAll('import.meta.url', `${URL_HELPER}(${rel})`), loader: 'ts' };
      });
    },
  };
}

async function bundle(name, { metafile, minify }) {
  const entry = pluginEntry(name);
  const outfile = join(outDir, `${name}.bundle.cjs`);
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // Minified is a third of the size and starts no slower; its stacks name renamed identifiers,
    // so the source map is written next to it (read only under `node --enable-source-maps`,
    // which costs ~15 ms per start); --no-minify for debugging.
    minify,
    sourcemap: 'linked',
    legalComments: 'none',
    banner: { js: URL_HELPER_SOURCE },
    outfile,
    metafile,
    logLevel: 'warning',
    plugins: [importMetaUrlPerModule(entry)],
  });
  if (metafile) await writeFile(`${outfile}.meta.json`, JSON.stringify(result.metafile));
  const launcher = join(outDir, `${name}.cjs`);
  await copyFile(join(root, 'scripts', 'cni-launcher.cjs'), launcher);
  // V8 accepts a cache only under the flags it was made with: the same node, a plain environment
  // (no NODE_OPTIONS), as the shims run it.
  await promisify(execFile)(process.execPath, [launcher, '--make-code-cache'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  // The shims take dist/cni/<plugin>.cjs being newer than tsc's last run to mean "bundle and
  // cache are current", so its time is set once both are written.
  const now = new Date();
  await utimes(launcher, now, now);
  return launcher;
}

/**
 * weftd as one bundle (dist/weftd/weftd.bundle.cjs) plus code cache and launcher (weftd.cjs),
 * which bin/weftd runs: a restarted weftd is programming its peers ~100 ms sooner (bench
 * converge, restart). etcd3 and its gRPC stack are in it too (loading them from node_modules cost
 * ~150 ms of an etcd restart); the CNI server's worker threads load tsc's output
 * (dist/src/agent/cni-worker.js), which the rewritten import.meta.url finds.
 */
const WEFTD_WORKERS = [
  ['cni-worker', join(root, 'src', 'agent', 'cni-worker.ts')],
  ['full-pass-worker', join(root, 'src', 'dataplane', 'full-pass-worker.ts')],
];

async function bundleWeftd({ metafile, minify }) {
  const dir = join(root, 'dist', 'weftd');
  await mkdir(dir, { recursive: true });
  const entry = join(root, 'src', 'cli', 'weftd.ts');
  const outfile = join(dir, 'weftd.bundle.cjs');
  const result = await build({
    // weftd itself (which runs its main on load), plus a handle the launcher uses at build time
    // to load the etcd store — etcd3, gRPC, protobufjs — so their start-up code is in the cache
    // too (it is loaded lazily, only for --store etcd, so `weftd --help` alone never compiles it).
    stdin: {
      contents: `import './src/cli/weftd.ts';\nexport function loadEtcdStoreForCodeCache() { return import('./src/store/etcd/etcd-store.ts'); }\n`,
      resolveDir: root,
      sourcefile: 'weftd-entry.ts',
      loader: 'ts',
    },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    minify,
    sourcemap: 'linked',
    legalComments: 'none',
    banner: { js: WEFTD_BANNER },
    outfile,
    metafile,
    logLevel: 'warning',
    plugins: [importMetaUrlPerModule(entry, dir), dirnamePerPackageFile(dir)],
  });
  if (metafile) await writeFile(`${outfile}.meta.json`, JSON.stringify(result.metafile));
  // weftd's worker threads (the CNI server's interface deleters, the dataplane's full passes): a
  // bundle each beside weftd's (src/worker-script.ts finds them), so a running weftd needs
  // neither tsc's module tree nor node_modules.
  for (const [name, entry] of WEFTD_WORKERS) {
    await build({
      entryPoints: [entry], bundle: true, platform: 'node', format: 'cjs', target: 'node20', minify, sourcemap: 'linked',
      legalComments: 'none', banner: { js: WEFTD_BANNER }, outfile: join(dir, `${name}.bundle.cjs`), logLevel: 'warning',
      plugins: [importMetaUrlPerModule(entry, dir), dirnamePerPackageFile(dir)],
    });
  }
  const launcher = join(dir, 'weftd.cjs');
  await copyFile(join(root, 'scripts', 'weftd-launcher.cjs'), launcher);
  // The flags bin/weftd runs it with: V8 rejects a cache made under other flags.
  await promisify(execFile)(process.execPath, ['--max-semi-space-size=2', '--heap-growing-percent=20', launcher, '--make-code-cache'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  const now = new Date();
  await utimes(launcher, now, now);
  return launcher;
}

/**
 * weftctl as one bundle (dist/weftctl/weftctl.bundle.cjs), which bin/weftctl runs while it is
 * newer than tsc's last run: an installed weftctl needs no node_modules. Its subcommands' lazy
 * imports are inlined; nothing runs at load but the command asked for.
 */
async function bundleWeftctl({ metafile, minify }) {
  const dir = join(root, 'dist', 'weftctl');
  await mkdir(dir, { recursive: true });
  const entry = join(root, 'src', 'cli', 'weftctl.ts');
  const outfile = join(dir, 'weftctl.bundle.cjs');
  const result = await build({
    entryPoints: [entry], bundle: true, platform: 'node', format: 'cjs', target: 'node20', minify, sourcemap: 'linked',
    legalComments: 'none', banner: { js: WEFTD_BANNER }, outfile, metafile, logLevel: 'warning',
    plugins: [importMetaUrlPerModule(entry, dir), dirnamePerPackageFile(dir)],
  });
  if (metafile) await writeFile(`${outfile}.meta.json`, JSON.stringify(result.metafile));
  return outfile;
}

async function main() {
  const metafile = process.argv.includes('--metafile');
  const minify = !process.argv.includes('--no-minify');
  await mkdir(outDir, { recursive: true });
  const names = [];
  for (const name of await pluginsFromShims()) {
    if (existsSync(pluginEntry(name))) names.push(name);
    else process.stderr.write(`bundle-plugins: warning: bin/cni/${name} has no ${relative(root, pluginEntry(name))}; not bundled\n`);
  }
  const settled = await Promise.allSettled([...names.map((n) => bundle(n, { metafile, minify })), bundleWeftd({ metafile, minify }), bundleWeftctl({ metafile, minify })]);
  names.push('weftd', 'weftctl');
  // Read by weftctl install (src/install/payload.ts): the package data the bundles load at run time.
  await writeFile(join(root, 'dist', 'package-data.json'), JSON.stringify([...packagesWithData].sort(), null, 2) + '\n');
  let failed = 0;
  settled.forEach((s, i) => {
    if (s.status === 'fulfilled') return;
    failed++;
    process.stderr.write(`bundle-plugins: ${names[i]}: ${s.reason instanceof Error ? s.reason.message : String(s.reason)}\n`);
  });
  if (failed > 0) process.exitCode = 1;
}

main().catch((err) => {
  process.stderr.write(`bundle-plugins: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});

#!/usr/bin/env node
// Builds the web view's page (weftctl ui) into dist/ui: app.js (src/ui/web/main.ts and what it
// imports, one minified IIFE), style.css (minified) and index.html, which the ui server serves as
// they are. Nothing is fetched from elsewhere at run time. Type-checking is tsc's
// (tsconfig.web.json, in scripts/build.sh); esbuild only strips and bundles.
//
//   node scripts/bundle-ui.mjs [--no-minify] [--out-dir=DIR (default dist/ui)]

import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const web = join(root, 'src', 'ui', 'web');
const outDirArg = process.argv.find((a) => a.startsWith('--out-dir='))?.slice('--out-dir='.length);
const outDir = outDirArg ? resolve(outDirArg) : join(root, 'dist', 'ui');
const minify = !process.argv.includes('--no-minify');

await mkdir(outDir, { recursive: true });
await build({
  entryPoints: [join(web, 'main.ts')],
  outfile: join(outDir, 'app.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'es2022',
  minify,
  legalComments: 'none',
  logLevel: 'warning',
});
await build({
  entryPoints: [join(web, 'style.css')],
  outfile: join(outDir, 'style.css'),
  bundle: false,
  minify,
  logLevel: 'warning',
});
await copyFile(join(web, 'index.html'), join(outDir, 'index.html'));

'use strict';
// Start-up of one CNI plugin, copied by scripts/bundle-plugins.mjs to dist/cni/<plugin>.cjs (the
// file the bin/cni shims run). It runs the plugin's bundle, dist/cni/<plugin>.bundle.cjs, with
// the V8 code cache made at build time (<plugin>.bundle.cache), so this process neither parses
// the bundle nor compiles its start-up functions: a plugin lives for one call and Node 20 keeps
// no compile cache of its own. V8 rejects a cache made by another V8 version, with other flags
// or for other source, and then compiles as usual: a stale cache costs time, never correctness.
//
// The bundle is a complete program too: `node --enable-source-maps dist/cni/<plugin>.bundle.cjs`
// runs the same plugin with readable stacks.
const { readFileSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname } = require('node:path');
const { Script } = require('node:vm');

const bundle = __filename.replace(/\.cjs$/, '.bundle.cjs');
const cacheFile = bundle.replace(/\.cjs$/, '.cache');

/** The same wrapper for making the cache and for using it: V8 matches the cache to this text. */
function compileBundle(cachedData) {
  const source = readFileSync(bundle, 'utf8');
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  return new Script(wrapped, { filename: bundle, ...(cachedData && { cachedData }) });
}

function runBundle(script) {
  const mod = { exports: {}, filename: bundle };
  script.runInThisContext().call(mod.exports, mod.exports, createRequire(bundle), mod, bundle, dirname(bundle));
}

if (process.argv[2] === '--make-code-cache') {
  // Build time: run the bundle's top level (module set-up, schemas) without its main — argv[1]
  // is not the bundle, so the plugin's guard stays false — then keep everything compiled so far.
  const script = compileBundle(undefined);
  runBundle(script);
  writeFileSync(cacheFile, script.createCachedData());
} else {
  let cachedData;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // No cache (a partial build): compile from source.
  }
  const script = compileBundle(cachedData);
  if (script.cachedDataRejected && process.env.WEFT_LOG_LEVEL === 'debug') {
    // Same line format as src/log.ts; stdout stays the plugin's.
    process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level: 'debug', msg: 'code cache rejected, compiled from source', cache: cacheFile }) + '\n');
  }
  // The bundle is the main module: the plugin's "run as a binary" guard compares argv[1] with it.
  process.argv[1] = bundle;
  runBundle(script);
}

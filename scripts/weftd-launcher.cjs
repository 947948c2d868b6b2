'use strict';
// Start-up of weftd, copied by scripts/bundle-plugins.mjs to dist/weftd/weftd.cjs (the file
// bin/weftd runs when it is newer than tsc's last run). Same idea as cni-launcher.cjs: run the
// one-file bundle (dist/weftd/weftd.bundle.cjs) with the V8 code cache made at build time, so a
// (re)started weftd neither resolves ~80 ESM modules nor compiles its start-up code — a restart
// programs its peers that much sooner (bench converge, restart mode).
//
// weftd's module runs its main on load (there is no "am I the main module" guard to keep false),
// so the cache is made by running `weftd --help` in this process, then loading the etcd store
// through the bundle's loadEtcdStoreForCodeCache (etcd3 and gRPC are only loaded for --store
// etcd), then keeping everything compiled so far.
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
  return mod.exports;
}

if (process.argv[2] === '--make-code-cache') {
  const script = compileBundle(undefined);
  // `weftd --help` ends with process.exit; hold that until the warm-up is done.
  const exit = process.exit.bind(process);
  process.exit = (code) => { process.exitCode = code; };
  process.argv.splice(1, 2, bundle, '--help');
  const bundleExports = runBundle(script);
  Promise.resolve(bundleExports.loadEtcdStoreForCodeCache?.()).then(() => {
    writeFileSync(cacheFile, script.createCachedData());
    exit(0);
  }, (err) => {
    process.stderr.write(`weftd code cache: loading the etcd store failed: ${err && err.stack ? err.stack : String(err)}\n`);
    exit(1);
  });
} else {
  let cachedData;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // No cache (a partial build): compile from source.
  }
  const script = compileBundle(cachedData);
  if (script.cachedDataRejected && process.env.WEFT_LOG_LEVEL === 'debug') {
    process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), level: 'debug', msg: 'code cache rejected, compiled from source', cache: cacheFile }) + '\n');
  }
  process.argv[1] = bundle;
  runBundle(script);
}

#!/usr/bin/env node
// Runs the compiled node:test suites: unit/ two files at a time, then the suites touching the
// kernel (netns/, cluster/) one file at a time: they share two cores and we want their failures
// to be about weft, not about load. The exit code is the worse of the two runs.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const groups = process.argv.slice(2);
const wanted = groups.length > 0 ? groups : ['unit', 'netns', 'cluster'];

function collect(dir) {
  let out = [];
  let entries;
  try { entries = readdirSync(dir); } catch { return out; }
  for (const name of entries.sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(collect(path));
    else if (name.endsWith('.test.js')) out.push(path);
  }
  return out;
}

// Unit suites are pure logic and may share the two cores; kernel suites (netns/, cluster/) run one
// file at a time. Every test has a time limit, so one hang costs five minutes, not the whole run.
const TEST_TIMEOUT_MS = 300_000;
const runs = [
  { label: 'unit', concurrency: 2, files: wanted.filter((g) => g === 'unit').flatMap((g) => collect(join(root, g))) },
  { label: wanted.filter((g) => g !== 'unit').join(' + '), concurrency: 1, files: wanted.filter((g) => g !== 'unit').flatMap((g) => collect(join(root, g))) },
].filter((r) => r.files.length > 0);
if (runs.length === 0) {
  console.error(`no test files under ${root} for ${wanted.join(', ')} (did tsc run?)`);
  process.exit(1);
}
const env = { ...process.env };
// Every Node start pays ~45 ms for this on these machines; the plugins under test start often.
delete env.NODE_EXTRA_CA_CERTS;
/**
 * Names weft, its tests, benches and labs give to what they make; on a shared host anything else
 * in the runner's namespace may be another user's, coming and going while the tests run, and is
 * none of this check's business.
 * - namespaces: labs `weftlab-NAME-…`, the demo's `weftdemo-…`, the install tests' `cni-win-…`, and
 *   every test or bench prefix (NetnsPool/makeTestNetns: w + 2–6 letters, then '-' or an id)
 * - links: weft's devices (`weft.<VNI>`, `weft-udp0`, …), weft-routed's `wr<13 hex>` host ends,
 *   and anything named like a test's namespace; not the bridge plugin's default `cni0` and
 *   `veth<8 hex>`, which the reference plugins (podman, containerd) use on a shared host too
 * - nftables: weft's tables (`weft`, `weft-cni`, `weft-policy`, `weft-notrack`) and tests' own
 *   (`w…` observers)
 */
const OURS = {
  netns: /^(weft|cni-win-|w[a-z][a-z0-9]{1,5}[-0-9a-f])/,
  link: /^(weft|wr[0-9a-f]{13}$|w[a-z][a-z0-9]{1,5}-)/,
  table: /^w/,
};

/**
 * weft's part of the runner's own network namespace: links, nftables tables, named namespaces.
 * Tests must never change it (everything lives in namespaces they make), so anything new
 * afterwards is a leak and fails the run, naming what was left.
 */
function rootState() {
  const out = (cmd, args) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    return r.status === 0 ? r.stdout : '';
  };
  const links = (JSON.parse(out('ip', ['-j', 'link', 'show']) || '[]'))
    .filter((l) => OURS.link.test(l.ifname)).map((l) => `link ${l.ifname}`);
  const tables = ((JSON.parse(out('nft', ['-j', 'list', 'tables']) || '{}').nftables) ?? [])
    .filter((x) => x.table && OURS.table.test(x.table.name)).map((x) => `nftables table ${x.table.family} ${x.table.name}`);
  let netns = [];
  try { netns = readdirSync('/run/netns').filter((n) => OURS.netns.test(n)).map((n) => `netns ${n}`); } catch { /* none yet */ }
  return new Set([...links, ...tables, ...netns]);
}

let worst = 0;
const summaries = [];
const before = rootState();
const totals = { pass: 0, fail: 0, skipped: 0 };

/** Runs one node --test, passing its output through and reading its closing counts. */
function runGroup(run) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [
      '--test', `--test-concurrency=${run.concurrency}`, `--test-timeout=${TEST_TIMEOUT_MS}`, '--test-reporter=spec', ...run.files,
    ], { stdio: ['ignore', 'pipe', 'inherit'], env });
    // The whole output: on failure the spec reporter lists the failures after its totals.
    let tail = '';
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      tail += chunk.toString('utf8');
    });
    child.on('close', (code, signal) => {
      const count = (name) => Number([...tail.matchAll(new RegExp(`^\\S* ?${name} (\\d+)$`, 'gm'))].pop()?.[1] ?? 0);
      resolve({ status: code ?? (signal ? 1 : 0), pass: count('pass'), fail: count('fail'), skipped: count('skipped') });
    });
  });
}

for (const run of runs) {
  const r = await runGroup(run);
  totals.pass += r.pass;
  totals.fail += r.fail;
  totals.skipped += r.skipped;
  summaries.push(`${run.label}: ${run.files.length} file(s), ${r.status === 0 ? 'passed' : `FAILED (exit ${r.status})`}`);
  worst = Math.max(worst, r.status);
}
const leaked = [...rootState()].filter((x) => !before.has(x));
if (leaked.length > 0) {
  console.log(`\nrun-tests: the tests left this behind in the runner's namespace: ${leaked.join(', ')}`);
  summaries.push(`leak check: FAILED (${leaked.length})`);
  totals.fail += 1;
  worst = Math.max(worst, 1);
} else {
  summaries.push('leak check: nothing left behind');
}
// Each node --test run prints its own totals above; the last line adds them up for all groups.
console.log(`\nrun-tests: ${summaries.join('; ')}`);
console.log(`${totals.pass} passed, ${totals.fail} failed, ${totals.skipped} skipped`);
process.exit(worst);

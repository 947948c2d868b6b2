#!/usr/bin/env node
// Runs the compiled node:test suites. Suites touching the kernel (netns/, cluster/) run one file
// at a time: they share two cores and we want their failures to be about weft, not about load.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

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

const files = wanted.flatMap((g) => collect(join(root, g)));
if (files.length === 0) {
  console.error(`no test files under ${root} for ${wanted.join(', ')} (did tsc run?)`);
  process.exit(1);
}
const env = { ...process.env };
// Every Node start pays ~45 ms for this on these machines; the plugins under test start often.
delete env.NODE_EXTRA_CA_CERTS;
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  env,
});
process.exit(result.status ?? 1);

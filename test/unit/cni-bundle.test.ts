// The fast-starting plugin artifacts (scripts/bundle-plugins.mjs → dist/cni) and the bin/cni
// shims that choose them. Builds its own copy in a temporary tree laid out like the repo
// (bin/cni + dist/cni + dist/.tsbuildinfo), so what it checks does not depend on whether the
// last build of the real tree bundled or only ran tsc.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(fileURLToPath(import.meta.url), '../../../..');
const SHIMS = join(REPO, 'bin/cni');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(argv: readonly string[], env: Record<string, string>, stdin = '', cwd?: string): Run {
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input: stdin,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    ...(cwd !== undefined && { cwd }),
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const VERSION_ENV = { CNI_COMMAND: 'VERSION' };
const VERSION_REPLY = { cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] };

function assertVersionReply(r: Run, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code}, stderr ${r.stderr}`);
  // Exactly one reply: a bundle must not also run the mains of the plugins it imports.
  assert.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l) as unknown), [VERSION_REPLY], what);
}

describe('CNI plugin bundles and shims', () => {
  let tmp: string;
  let tree: string;
  let dist: string;
  let bin: string;

  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'wcb-bundle-'));
    tree = join(tmp, 'repo');
    dist = join(tree, 'dist');
    bin = join(tree, 'bin/cni');
    mkdirSync(bin, { recursive: true });
    mkdirSync(dist, { recursive: true });
    // "tsc ran a minute ago", then the bundles: the shims' condition for using them.
    writeFileSync(join(dist, '.tsbuildinfo'), '');
    const aMinuteAgo = new Date(Date.now() - 60_000);
    utimesSync(join(dist, '.tsbuildinfo'), aMinuteAgo, aMinuteAgo);
    const b = run([process.execPath, join(REPO, 'scripts/bundle-plugins.mjs'), '--metafile', `--out-dir=${join(dist, 'cni')}`], {});
    assert.equal(b.code, 0, `bundle-plugins: ${b.stderr}`);
    for (const name of ['weft-ipam', 'weft-bridge']) copyFileSync(join(SHIMS, name), join(bin, name));
  });

  after(() => {
    rmSync(tmp, { recursive: true, force: true });
  });

  it('every shim has one shape: only its plugin= line differs, and it names the shim itself', () => {
    const shims = readdirSync(SHIMS).sort();
    assert.ok(shims.includes('weft-bridge') && shims.includes('weft-ipam'));
    const shapes = new Set<string>();
    for (const name of shims) {
      const text = readFileSync(join(SHIMS, name), 'utf8');
      assert.match(text, new RegExp(`^plugin=${name}$`, 'm'), `bin/cni/${name} names its plugin`);
      shapes.add(text.replace(/^plugin=.*$/m, 'plugin=X'));
    }
    assert.equal(shapes.size, 1, 'shims differ beyond their plugin= line');
  });

  it('builds a bundle, its code cache and the launcher for each plugin', () => {
    const files = readdirSync(join(dist, 'cni'));
    for (const name of ['weft-ipam', 'weft-bridge']) {
      for (const f of [`${name}.cjs`, `${name}.bundle.cjs`, `${name}.bundle.cache`]) assert.ok(files.includes(f), `${f} in ${files.join(' ')}`);
    }
  });

  it('no bundle carries test support (src/netns/testing.ts) or anything from test/', () => {
    const metas = readdirSync(join(dist, 'cni')).filter((f) => f.endsWith('.meta.json'));
    assert.ok(metas.length >= 2, metas.join(' '));
    for (const m of metas) {
      const inputs = Object.keys((JSON.parse(readFileSync(join(dist, 'cni', m), 'utf8')) as { inputs: Record<string, unknown> }).inputs);
      assert.ok(inputs.some((i) => i.includes('src/plugins/')), `${m} lists its inputs`);
      assert.deepEqual(inputs.filter((i) => /(^|\/)(src\/netns\/testing|test\/)/.test(i)), [], m);
    }
  });

  it('the shim runs the bundle when it is newer than tsc\'s last run (no tsc output needed)', () => {
    // dist/src does not exist in this tree: a reply can only come from dist/cni.
    assertVersionReply(run([join(bin, 'weft-bridge')], VERSION_ENV), 'weft-bridge');
    assertVersionReply(run([join(bin, 'weft-ipam')], VERSION_ENV), 'weft-ipam');
  });

  it('the shim finds dist/ through symlinks at the file, at bin/cni and at bin, by relative path and from PATH', () => {
    const links = join(tmp, 'links');
    mkdirSync(links);
    symlinkSync(join(bin, 'weft-ipam'), join(links, 'weft-ipam'));
    symlinkSync(bin, join(links, 'cni-dir'));
    symlinkSync(join(tree, 'bin'), join(links, 'bin-dir'));
    mkdirSync(join(links, 'rel'));
    symlinkSync('../weft-ipam', join(links, 'rel', 'weft-ipam'));
    const calls: Array<[string, readonly string[], string | undefined]> = [
      ['symlinked file', [join(links, 'weft-ipam')], undefined],
      ['symlink to a symlink, relative', [join(links, 'rel', 'weft-ipam')], undefined],
      ['symlinked bin/cni', [join(links, 'cni-dir', 'weft-ipam')], undefined],
      ['symlinked bin', [join(links, 'bin-dir', 'cni', 'weft-ipam')], undefined],
      ['relative path from inside a symlinked bin/cni', ['./weft-ipam'], join(links, 'cni-dir')],
      ['sh with a bare name', ['sh', 'weft-ipam'], bin],
    ];
    for (const [what, argv, cwd] of calls) assertVersionReply(run(argv, VERSION_ENV, '', cwd), what);
    const viaPath = run(['weft-ipam'], { ...VERSION_ENV, PATH: `${join(links, 'cni-dir')}:${process.env.PATH ?? '/usr/bin:/bin'}` });
    assertVersionReply(viaPath, 'from PATH');
  });

  it('after a later tsc run the shim runs tsc\'s output instead of the stale bundle', () => {
    const info = join(dist, '.tsbuildinfo');
    const inAMinute = new Date(Date.now() + 60_000);
    utimesSync(info, inAMinute, inAMinute);
    try {
      // No dist/src here yet: the shim must be looking for it.
      const missing = run([join(bin, 'weft-ipam')], VERSION_ENV);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /dist\/src\/plugins\/ipam\/main\.js/);
      symlinkSync(join(REPO, 'dist/src'), join(dist, 'src'));
      assertVersionReply(run([join(bin, 'weft-ipam')], VERSION_ENV), 'tsc output');
    } finally {
      rmSync(join(dist, 'src'), { force: true });
      const aMinuteAgo = new Date(Date.now() - 60_000);
      utimesSync(info, aMinuteAgo, aMinuteAgo);
    }
  });

  it('weft-ipam from the bundle answers ADD, DEL, errors and --help exactly like tsc\'s output', () => {
    const variants = { bundle: [join(bin, 'weft-ipam')], tsc: [process.execPath, join(REPO, 'dist/src/plugins/ipam/main.js')] };
    const seen: Record<string, string[]> = {};
    for (const [key, argv] of Object.entries(variants)) {
      const dataDir = join(tmp, `ipam-${key}`);
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'wcbnet', type: 'weft-ipam', ipam: { type: 'weft-ipam', subnet: '10.77.0.0/24', dataDir } });
      const env = (command: string) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'wcb-ctr', CNI_NETNS: '/run/netns/wcb-none', CNI_IFNAME: 'eth0', CNI_PATH: bin });
      const add = run(argv, env('ADD'), conf);
      assert.equal(add.code, 0, `${key} ADD: ${add.stdout} ${add.stderr}`);
      const files = readdirSync(join(dataDir, 'wcbnet')).sort();
      assert.ok(files.includes('10.77.0.2'), `${key}: allocation file in ${files.join(' ')}`);
      const del = run(argv, env('DEL'), conf);
      assert.equal(del.code, 0, `${key} DEL: ${del.stderr}`);
      assert.ok(!readdirSync(join(dataDir, 'wcbnet')).includes('10.77.0.2'), `${key}: DEL released the address`);
      const bad = run(argv, env('ADD'), conf.replace('10.77.0.0/24', '10.77.0.0/33'));
      assert.equal(bad.code, 1);
      const help = run([...argv, '--help'], {});
      seen[key] = [add.stdout, files.join(' '), del.stdout, bad.stdout, help.stderr];
    }
    assert.deepEqual(seen.bundle, seen.tsc);
  });

  it('a code cache V8 rejects costs time, not correctness: the launcher compiles from source', () => {
    const cache = join(dist, 'cni', 'weft-bridge.bundle.cache');
    const good = readFileSync(cache);
    const env = { ...VERSION_ENV, WEFT_LOG_LEVEL: 'debug' };
    try {
      const accepted = run([join(bin, 'weft-bridge')], env);
      assertVersionReply(accepted, 'with the built cache');
      assert.doesNotMatch(accepted.stderr, /code cache rejected/, 'the cache made at build time is accepted');
      const corrupt = Buffer.from(good);
      corrupt.fill(0x5a, 16);
      writeFileSync(cache, corrupt);
      const rejected = run([join(bin, 'weft-bridge')], env);
      assertVersionReply(rejected, 'with a corrupt cache');
      assert.match(rejected.stderr, /code cache rejected/);
      rmSync(cache);
      assertVersionReply(run([join(bin, 'weft-bridge')], VERSION_ENV), 'without a cache');
    } finally {
      writeFileSync(cache, good);
    }
  });
});

// CNI plugin latency, side by side: weft-bridge + weft-ipam against the reference bridge +
// host-local with the same config (a bridge per side, isGateway, one subnet each, own dataDir),
// run the way a runtime runs them: exec the binary with CNI_* env and the config on stdin, from
// a process whose network namespace is the host's. The "host" is a throwaway namespace and so
// is every container; the driver (bench/cni-driver.ts) is started inside the host namespace
// once, so entering it is in neither side's numbers. Weft and reference calls alternate, so
// both see the same machine load.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Benchmark, BenchResult } from './main.js';
import type { PlannedExec, PlannedStep, StepOutcome, ExecOutcome } from './cni-driver.js';
import { makeTestNetns, ipJson, type TestNetns } from '../src/netns/testing.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const REF_CNI = '/usr/lib/cni';
const DRIVER = join(REPO, 'dist/bench/cni-driver.js');
const PREFIX = 'wcb';
const WEFT_BRIDGE = `${PREFIX}w0`;
const REF_BRIDGE = `${PREFIX}r0`;

interface Side {
  readonly key: 'weft' | 'ref' | 'esm';
  /** What is exec'd for one CNI call. */
  readonly argv: readonly string[];
  readonly conf: string;
  readonly cniPath: string;
}

function netConf(name: string, type: string, bridge: string, ipamType: string, subnet: string, dataDir: string): string {
  return JSON.stringify({ cniVersion: '1.0.0', name, type, bridge, isGateway: true, ipam: { type: ipamType, subnet, dataDir } });
}

function pluginEnv(cniPath: string, command: string, containerId: string, netns: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: cniPath,
  };
}

function call(side: Side, command: 'ADD' | 'DEL', container: TestNetns): PlannedExec {
  return { label: `${side.key} ${command}`, argv: [...side.argv], env: pluginEnv(side.cniPath, command, container.name, container.path), stdin: side.conf };
}

function startupExec(label: string, argv: readonly string[]): PlannedExec {
  return { label, argv: [...argv], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', CNI_COMMAND: 'VERSION' }, stdin: '{"cniVersion":"1.0.0"}' };
}

/** Runs the plan inside the host namespace; every exec must exit 0 (a failing plugin is no benchmark). */
function drive(host: TestNetns, plan: PlannedStep[]): Promise<StepOutcome[]> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const child = spawn('nsenter', [`--net=${host.path}`, '--', process.execPath, DRIVER], { env, stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`cni-driver exited with ${code}`));
      const steps = JSON.parse(out) as StepOutcome[];
      const failed = steps.flatMap((s) => s.execs).find((e) => e.code !== 0);
      if (failed) return reject(new Error(`${failed.label} exited ${failed.code}: ${failed.stdout.trim()} ${failed.stderr.trim()}`));
      resolve(steps);
    });
    child.stdin.end(JSON.stringify(plan));
  });
}

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

function msOf(outcomes: readonly ExecOutcome[], label: string): number[] {
  return outcomes.filter((o) => o.label === label).map((o) => o.ms);
}

/** Alternates which side goes first, so neither always runs right after the other's exit. */
function interleave<T>(a: readonly T[], b: readonly T[]): T[] {
  const out: T[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const pair = [a[i], b[i]];
    if (i % 2 === 1) pair.reverse();
    for (const x of pair) if (x !== undefined) out.push(x);
  }
  return out;
}

/**
 * The shims as committed, over a build of today's source in a private tree (bin/cni + dist/cni +
 * dist/.tsbuildinfo older than the bundles, dist/src → the repo's): a developer's tsc run during
 * the benchmark would switch the repo's own shims to tsc's output half way.
 */
function privateBuild(tmp: string): string {
  const tree = join(tmp, 'tree');
  mkdirSync(join(tree, 'bin/cni'), { recursive: true });
  mkdirSync(join(tree, 'dist'), { recursive: true });
  for (const p of ['weft-bridge', 'weft-ipam']) copyFileSync(join(REPO, 'bin/cni', p), join(tree, 'bin/cni', p));
  const info = join(tree, 'dist/.tsbuildinfo');
  writeFileSync(info, '');
  const before = new Date(Date.now() - 60_000);
  utimesSync(info, before, before);
  symlinkSync(join(REPO, 'dist/src'), join(tree, 'dist/src'));
  const r = spawnSync(process.execPath, [join(REPO, 'scripts/bundle-plugins.mjs'), `--out-dir=${join(tree, 'dist/cni')}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bundle-plugins failed: ${r.stderr}`);
  // The shims' own rule: the bundle only when newer than tsc's last run.
  if (!(statSync(join(tree, 'dist/cni/weft-bridge.cjs')).mtimeMs > statSync(info).mtimeMs)) throw new Error('private build: bundle not newer than .tsbuildinfo');
  return tree;
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '–');
const ratio = (w: number, r: number): string => `${(w / r).toFixed(2)}×`;

function argValue(args: string[], name: string, dflt: number): number {
  const v = args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const n = v === undefined ? dflt : Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`);
  return n;
}

export const benchmark: Benchmark = {
  name: 'cni',
  summary: 'weft-bridge + weft-ipam vs reference bridge + host-local: ADD/DEL latency, 20 parallel ADDs, start-up',
  async run(args: string[]): Promise<BenchResult> {
    const n = argValue(args, 'n', 50);
    const par = argValue(args, 'parallel', 20);
    const rounds = argValue(args, 'rounds', 3);
    const tmp = mkdtempSync(join(tmpdir(), `${PREFIX}-`));
    const dataDir = join(tmp, 'ipam');
    const made: TestNetns[] = [];
    const ns = (): TestNetns => { const x = makeTestNetns(PREFIX); made.push(x); return x; };
    try {
      const weftCni = join(privateBuild(tmp), 'bin/cni');
      const host = ns();
      const weftConf = netConf(`${PREFIX}-weft`, 'weft-bridge', WEFT_BRIDGE, 'weft-ipam', '10.71.0.0/16', join(dataDir, 'weft'));
      const refConf = netConf(`${PREFIX}-ref`, 'bridge', REF_BRIDGE, 'host-local', '10.72.0.0/16', join(dataDir, 'ref'));
      const weft: Side = { key: 'weft', argv: [join(weftCni, 'weft-bridge')], conf: weftConf, cniPath: `${weftCni}:${REF_CNI}` };
      const ref: Side = { key: 'ref', argv: [join(REF_CNI, 'bridge')], conf: refConf, cniPath: `${weftCni}:${REF_CNI}` };
      // Context for the bundle's gain: the same plugin from tsc's module tree (the shim's fallback).
      const esm: Side = { key: 'esm', argv: [process.execPath, join(REPO, 'dist/src/plugins/weft-bridge.js')], conf: weftConf, cniPath: weft.cniPath };
      const sides = [weft, ref, esm];
      const containers = new Map(sides.map((s) => [s.key, Array.from({ length: n }, ns)]));
      const parallel = new Map([weft, ref].map((s) => [s.key, Array.from({ length: rounds }, () => Array.from({ length: par }, ns))]));
      const list = (s: Side): TestNetns[] => containers.get(s.key)!;

      // Warm-up (not counted): each side's first ADD creates its bridge; page cache for both.
      const warm = ns();
      const plan: PlannedStep[] = [
        { mode: 'sequential', execs: sides.flatMap((s) => [call(s, 'ADD', warm), call(s, 'DEL', warm)]) },
        { mode: 'sequential', execs: [...interleave(list(weft).map((c) => call(weft, 'ADD', c)), list(ref).map((c) => call(ref, 'ADD', c))), ...list(esm).map((c) => call(esm, 'ADD', c))] },
      ];
      const [, adds] = await drive(host, plan);

      // Both did the real work: every container has its veth on the side's bridge, in the kernel's view.
      for (const [side, bridge] of [[weft, WEFT_BRIDGE], [ref, REF_BRIDGE]] as const) {
        const ports = ipJson<unknown[]>(host.name, ['link', 'show', 'master', bridge]);
        const expected = n * (side === weft ? 2 : 1);
        if (ports.length !== expected) throw new Error(`${bridge} has ${ports.length} ports after ${expected} ADDs`);
      }

      const dels: PlannedStep = {
        mode: 'sequential',
        execs: [...interleave(list(weft).map((c) => call(weft, 'DEL', c)), list(ref).map((c) => call(ref, 'DEL', c))), ...list(esm).map((c) => call(esm, 'DEL', c))],
      };
      const parallelSteps: PlannedStep[] = [];
      for (let r = 0; r < rounds; r++) {
        for (const s of r % 2 === 0 ? [weft, ref] : [ref, weft]) {
          const cs = parallel.get(s.key)![r]!;
          parallelSteps.push({ mode: 'parallel', execs: cs.map((c) => call(s, 'ADD', c)) });
          parallelSteps.push({ mode: 'parallel', execs: cs.map((c) => call(s, 'DEL', c)) });
        }
      }
      const startup: PlannedStep = {
        mode: 'sequential',
        execs: Array.from({ length: n }, () => [
          startupExec('node -e 0', [process.execPath, '-e', '0']),
          startupExec('weft shim', [join(weftCni, 'weft-bridge')]),
          startupExec('weft bundle', [process.execPath, join(weftCni, '../../dist/cni/weft-bridge.bundle.cjs')]),
          startupExec('weft launcher', [process.execPath, join(weftCni, '../../dist/cni/weft-bridge.cjs')]),
          startupExec('weft esm', esm.argv),
          startupExec('ref', ref.argv),
        ]).flat(),
      };
      const [delOut, ...rest] = await drive(host, [dels, ...parallelSteps, startup]);
      const startOut = rest.pop()!;
      const parOut = rest;

      // DEL leaves nothing behind on either side (the bridges stay, as with the reference).
      const left = ipJson<Array<{ ifname: string }>>(host.name, ['link', 'show', 'type', 'veth']);
      if (left.length !== 0) throw new Error(`veths left after DEL: ${left.map((l) => l.ifname).join(', ')}`);

      const addMs = (k: string): number[] => msOf(adds!.execs, `${k} ADD`);
      const delMs = (k: string): number[] => msOf(delOut!.execs, `${k} DEL`);
      const parTotals = (k: string, cmd: 'ADD' | 'DEL'): number[] => parOut.filter((s) => s.execs[0]?.label === `${k} ${cmd}`).map((s) => s.totalMs);
      const startMs = (label: string): number[] => msOf(startOut.execs, label);

      const row = (what: string, w: number[], r: number[]): string =>
        `| ${what} | ${f1(quantile(w, 0.5))} | ${f1(quantile(w, 0.95))} | ${f1(quantile(r, 0.5))} | ${f1(quantile(r, 0.95))} | ${ratio(quantile(w, 0.5), quantile(r, 0.5))} |`;
      const one = (what: string, xs: number[]): string => `| ${what} | ${f1(quantile(xs, 0.5))} | ${f1(quantile(xs, 0.95))} |`;

      const markdown = [
        '# CNI plugin latency: weft vs the reference plugins',
        '',
        `weft-bridge + weft-ipam (in-process) against /usr/lib/cni/bridge + host-local, same config`,
        `(own bridge, \`isGateway\`, a /16 each, own dataDir), cniVersion 1.0.0, exec'd with env + stdin`,
        `from inside a throwaway host namespace; weft through the committed bin/cni shims over a private`,
        `build of today's source. Times in ms; ratio = weft median / reference median.`,
        '',
        '| measurement | weft median | weft p95 | reference median | reference p95 | ratio |',
        '|---|---|---|---|---|---|',
        row(`ADD (n=${n})`, addMs('weft'), addMs('ref')),
        row(`DEL (n=${n})`, delMs('weft'), delMs('ref')),
        row(`${par} parallel ADDs, total (${rounds} rounds)`, parTotals('weft', 'ADD'), parTotals('ref', 'ADD')),
        row(`${par} parallel DELs, total (${rounds} rounds)`, parTotals('weft', 'DEL'), parTotals('ref', 'DEL')),
        row(`VERSION (start-up only, n=${n})`, startMs('weft shim'), startMs('ref')),
        '',
        'Where weft\'s time goes (same run):',
        '',
        '| what | median | p95 |',
        '|---|---|---|',
        one('`node -e 0`', startMs('node -e 0')),
        one('weft-bridge VERSION: `node dist/cni/weft-bridge.bundle.cjs` (bundle, compiled at start)', startMs('weft bundle')),
        one('weft-bridge VERSION: `node dist/cni/weft-bridge.cjs` (bundle + V8 code cache)', startMs('weft launcher')),
        one('weft-bridge VERSION: `bin/cni/weft-bridge` (shim → bundle + code cache)', startMs('weft shim')),
        one('weft-bridge VERSION: `node dist/src/plugins/weft-bridge.js` (tsc output)', startMs('weft esm')),
        one(`weft-bridge ADD from tsc output (n=${n})`, addMs('esm')),
        one(`weft-bridge DEL from tsc output (n=${n})`, delMs('esm')),
        '',
        'scripts/bundle-plugins.mjs builds, per plugin, one minified CJS file (esbuild) and a V8 code',
        'cache for it; the shims run that unless a later tsc run made it stale. A fresh Node start per',
        'call stays the floor (`node -e 0`): only the resident fast path through weftd can go below it.',
      ].join('\n');
      return { markdown };
    } finally {
      const errors: unknown[] = [];
      for (const x of made) {
        try { x.remove(); } catch (err) { errors.push(err); }
      }
      rmSync(tmp, { recursive: true, force: true });
      if (errors.length > 0) throw new AggregateError(errors, 'could not remove every benchmark namespace');
    }
  },
};

// CNI plugin latency, side by side: weft-bridge + weft-ipam against the reference bridge +
// host-local with the same config (a bridge per side, isGateway, one subnet each, own dataDir),
// run the way a runtime runs them: exec the binary with CNI_* env and the config on stdin, from
// a process whose network namespace is the host's. The "host" is a throwaway namespace and so
// is every container; the driver (bench/cni-driver.ts) is started inside the host namespace
// once, so entering it is in neither side's numbers. Weft and reference calls alternate, so
// both see the same machine load.
//
// A third side is the `weft` meta plugin as a node runs it with weftd: a real weftd (file store,
// host-gw, --ip-masq as flannel deployments run it, so the bridge adds no per-pod nftables rules)
// in the host namespace, and bin/cni/weft, whose native front hands the call to weftd's socket.
// Every one of those calls must have been answered by weftd (its log says so), not by the Node
// fallback, or the benchmark fails.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
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
const FAST_BRIDGE = `${PREFIX}f0`;
/** weftd's public interface in the host namespace (one end of a veth pair, with an underlay address). */
const UPLINK = `${PREFIX}up0`;

interface Side {
  readonly key: 'weft' | 'ref' | 'esm' | 'fast';
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

/** Round-robin over the lists, rotating who goes first, so none always runs right after another's exit. */
function interleave<T>(...lists: ReadonlyArray<readonly T[]>): T[] {
  const out: T[] = [];
  for (let i = 0; i < Math.max(...lists.map((l) => l.length)); i++) {
    for (let j = 0; j < lists.length; j++) {
      const x = lists[(i + j) % lists.length]![i];
      if (x !== undefined) out.push(x);
    }
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
  for (const p of ['weft', 'weft-bridge', 'weft-ipam']) copyFileSync(join(REPO, 'bin/cni', p), join(tree, 'bin/cni', p));
  const info = join(tree, 'dist/.tsbuildinfo');
  writeFileSync(info, '');
  const before = new Date(Date.now() - 60_000);
  utimesSync(info, before, before);
  symlinkSync(join(REPO, 'dist/src'), join(tree, 'dist/src'));
  const r = spawnSync(process.execPath, [join(REPO, 'scripts/bundle-plugins.mjs'), `--out-dir=${join(tree, 'dist/cni')}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bundle-plugins failed: ${r.stderr}`);
  // The shims' own rule: the bundle only when newer than tsc's last run.
  if (!(statSync(join(tree, 'dist/cni/weft-bridge.cjs')).mtimeMs > statSync(info).mtimeMs)) throw new Error('private build: bundle not newer than .tsbuildinfo');
  // bin/cni/weft's native front, as scripts/build.sh builds it.
  const cc = spawnSync('cc', ['-O2', '-o', join(tree, 'dist/cni/weft.native'), join(REPO, 'native/cni_client.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc native/cni_client.c failed: ${cc.stderr}`);
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

interface RunningWeftd {
  readonly proc: ChildProcess;
  readonly stderr: string[];
  /** The per-request lines weftd's CNI server logs at debug level. */
  served(): Array<{ cmd: string; exitCode: number; ms: number }>;
  stop(): Promise<void>;
}

function inHost(host: TestNetns, argv: readonly string[], input?: string): void {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync('nsenter', [`--net=${host.path}`, '--', ...argv], { encoding: 'utf8', env, ...(input !== undefined && { input }) });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
}

/**
 * weftd in the host namespace, the way a node runs it: file store, host-gw over a veth uplink,
 * --ip-masq; ready once it announced its CNI socket in subnet.env and the socket is there.
 */
async function startWeftd(host: TestNetns, dir: string): Promise<{ weftd: RunningWeftd; subnetFile: string }> {
  // No dummy driver on every kernel: a veth pair, both ends in the host namespace.
  inHost(host, ['ip', 'link', 'add', UPLINK, 'type', 'veth', 'peer', 'name', `${UPLINK}p`]);
  inHost(host, ['ip', 'link', 'set', `${UPLINK}p`, 'up']);
  inHost(host, ['ip', 'addr', 'add', '198.18.71.1/24', 'dev', UPLINK]);
  inHost(host, ['ip', 'link', 'set', UPLINK, 'up']);
  const store = ['--store', 'file', '--store-dir', join(dir, 'store')];
  // A /16 lease, like the other sides' subnets.
  inHost(host, [join(REPO, 'bin/weftctl'), 'config', 'set', '-', ...store], JSON.stringify({ Network: '10.80.0.0/12', SubnetLen: 16, Backend: { Type: 'host-gw' } }));
  const subnetFile = join(dir, 'subnet.env');
  const env: NodeJS.ProcessEnv = { ...process.env, WEFT_LOG_LEVEL: 'debug' };
  delete env.NODE_EXTRA_CA_CERTS;
  const proc = spawn('nsenter', [`--net=${host.path}`, '--', join(REPO, 'bin/weftd'), ...store, '--iface', UPLINK, '--ip-masq', '--subnet-file', subnetFile, '--node-name', PREFIX], {
    env, stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (c: string) => stderr.push(c));
  const exited = new Promise<void>((resolve) => proc.on('exit', () => resolve()));
  const weftd: RunningWeftd = {
    proc,
    stderr,
    served: () => stderr.join('').split('\n').filter((l) => l.includes('"msg":"cni request"'))
      .map((l) => JSON.parse(l) as { cmd: string; exitCode: number; ms: number }),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`weftd exited ${proc.exitCode}: ${stderr.join('').slice(-2000)}`);
    const announced = existsSync(subnetFile) ? /^WEFT_CNI_SOCKET=(.+)$/m.exec(readFileSync(subnetFile, 'utf8'))?.[1] : undefined;
    if (announced !== undefined && existsSync(announced) && statSync(announced).isSocket()) break;
    if (Date.now() > deadline) {
      await weftd.stop();
      throw new Error(`weftd did not announce its CNI socket within 30 s: ${stderr.join('').slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { weftd, subnetFile };
}

export const benchmark: Benchmark = {
  name: 'cni',
  summary: 'weft (via weftd\'s fast path) and weft-bridge + weft-ipam vs reference bridge + host-local: ADD/DEL latency, 20 parallel, start-up',
  async run(args: string[]): Promise<BenchResult> {
    const n = argValue(args, 'n', 50);
    const par = argValue(args, 'parallel', 20);
    const rounds = argValue(args, 'rounds', 3);
    const tmp = mkdtempSync(join(tmpdir(), `${PREFIX}-`));
    const dataDir = join(tmp, 'ipam');
    const made: TestNetns[] = [];
    let weftd: RunningWeftd | undefined;
    const ns = (): TestNetns => { const x = makeTestNetns(PREFIX); made.push(x); return x; };
    try {
      const weftCni = join(privateBuild(tmp), 'bin/cni');
      const host = ns();
      const weftConf = netConf(`${PREFIX}-weft`, 'weft-bridge', WEFT_BRIDGE, 'weft-ipam', '10.71.0.0/16', join(dataDir, 'weft'));
      const refConf = netConf(`${PREFIX}-ref`, 'bridge', REF_BRIDGE, 'host-local', '10.72.0.0/16', join(dataDir, 'ref'));
      const weft: Side = { key: 'weft', argv: [join(weftCni, 'weft-bridge')], conf: weftConf, cniPath: `${weftCni}:${REF_CNI}` };
      const ref: Side = { key: 'ref', argv: [join(REF_CNI, 'bridge')], conf: refConf, cniPath: `${weftCni}:${REF_CNI}` };
      // Context for the bundle's gain: the same plugin from tsc's module tree (the shim's fallback).
      const esm: Side = { key: 'esm', argv: [process.execPath, join(REPO, 'dist/src/plugins/bridge/main.js')], conf: weftConf, cniPath: weft.cniPath };
      const started = await startWeftd(host, tmp);
      weftd = started.weftd;
      const fastConf = JSON.stringify({
        cniVersion: '1.0.0', name: `${PREFIX}-fast`, type: 'weft', subnetFile: started.subnetFile, dataDir: join(tmp, 'state'),
        ipam: { type: 'weft-ipam', dataDir: join(dataDir, 'fast') },
        // The reference side's bridge config: gateway on the bridge, no default route.
        delegate: { bridge: FAST_BRIDGE, isDefaultGateway: false },
      });
      const fast: Side = { key: 'fast', argv: [join(weftCni, 'weft')], conf: fastConf, cniPath: weft.cniPath };
      const sides = [weft, ref, esm, fast];
      const containers = new Map(sides.map((s) => [s.key, Array.from({ length: n }, ns)]));
      const parallel = new Map([weft, ref, fast].map((s) => [s.key, Array.from({ length: rounds }, () => Array.from({ length: par }, ns))]));
      const list = (s: Side): TestNetns[] => containers.get(s.key)!;

      // Warm-up (not counted): each side's first ADD creates its bridge; page cache for both.
      const warm = ns();
      const plan: PlannedStep[] = [
        { mode: 'sequential', execs: sides.flatMap((s) => [call(s, 'ADD', warm), call(s, 'DEL', warm)]) },
        { mode: 'sequential', execs: [...interleave(...[weft, ref, fast].map((s) => list(s).map((c) => call(s, 'ADD', c)))), ...list(esm).map((c) => call(esm, 'ADD', c))] },
      ];
      const [, adds] = await drive(host, plan);

      // Both did the real work: every container has its veth on the side's bridge, in the kernel's view.
      for (const [side, bridge] of [[weft, WEFT_BRIDGE], [ref, REF_BRIDGE], [fast, FAST_BRIDGE]] as const) {
        const ports = ipJson<unknown[]>(host.name, ['link', 'show', 'master', bridge]);
        const expected = n * (side === weft ? 2 : 1);
        if (ports.length !== expected) throw new Error(`${bridge} has ${ports.length} ports after ${expected} ADDs`);
      }

      const dels: PlannedStep = {
        mode: 'sequential',
        execs: [...interleave(...[weft, ref, fast].map((s) => list(s).map((c) => call(s, 'DEL', c)))), ...list(esm).map((c) => call(esm, 'DEL', c))],
      };
      const parallelSteps: PlannedStep[] = [];
      for (let r = 0; r < rounds; r++) {
        for (const s of [[weft, ref, fast], [ref, fast, weft], [fast, weft, ref]][r % 3]!) {
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
      const left = ipJson<Array<{ ifname: string }>>(host.name, ['link', 'show', 'type', 'veth']).filter((l) => !l.ifname.startsWith(UPLINK));
      if (left.length !== 0) throw new Error(`veths left after DEL: ${left.map((l) => l.ifname).join(', ')}`);

      // Every fast-path call was answered by weftd itself, none by the Node fallback.
      const served = weftd.served();
      const calls = 1 + n + par * rounds;
      for (const cmd of ['ADD', 'DEL']) {
        const got = served.filter((r) => r.cmd === cmd);
        if (got.length !== calls || got.some((r) => r.exitCode !== 0)) {
          throw new Error(`weftd answered ${got.length} ${cmd}s (${got.filter((r) => r.exitCode !== 0).length} failed), expected ${calls}`);
        }
      }
      // weftd's own time per request (from accepting the connection to writing the answer), for the sequential calls.
      const serverMs = (cmd: string): number[] => served.filter((r) => r.cmd === cmd).slice(1, 1 + n).map((r) => r.ms);

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
        `Against /usr/lib/cni/bridge + host-local (own bridge, \`isGateway\`, a /16, own dataDir),`,
        `cniVersion 1.0.0, every plugin exec'd with env + stdin from inside a throwaway host namespace,`,
        `weft through the committed bin/cni shims over a private build of today's source:`,
        `- **weft via weftd**: the \`weft\` meta plugin with a real weftd (file store, host-gw,`,
        `  \`--ip-masq\`) in the host namespace; bin/cni/weft's native front (native/cni_client.c) hands`,
        `  the call to weftd's socket, weftd runs weft-bridge + weft-ipam in-process (delegate config:`,
        `  the reference's — gateway on the bridge, no default route, no per-pod masquerade). Every`,
        `  call was answered by weftd, none by the Node fallback (checked from weftd's log).`,
        `- **weft-bridge standalone**: weft-bridge + weft-ipam in one Node process per call.`,
        '',
        'Times in ms; ratio = weft median / reference median.',
        '',
        '| measurement | weft median | weft p95 | reference median | reference p95 | ratio |',
        '|---|---|---|---|---|---|',
        row(`ADD (n=${n}), weft via weftd`, addMs('fast'), addMs('ref')),
        row(`DEL (n=${n}), weft via weftd`, delMs('fast'), delMs('ref')),
        row(`${par} parallel ADDs, total (${rounds} rounds), weft via weftd`, parTotals('fast', 'ADD'), parTotals('ref', 'ADD')),
        row(`${par} parallel DELs, total (${rounds} rounds), weft via weftd`, parTotals('fast', 'DEL'), parTotals('ref', 'DEL')),
        row(`ADD (n=${n}), weft-bridge standalone`, addMs('weft'), addMs('ref')),
        row(`DEL (n=${n}), weft-bridge standalone`, delMs('weft'), delMs('ref')),
        row(`${par} parallel ADDs, total (${rounds} rounds), weft-bridge standalone`, parTotals('weft', 'ADD'), parTotals('ref', 'ADD')),
        row(`${par} parallel DELs, total (${rounds} rounds), weft-bridge standalone`, parTotals('weft', 'DEL'), parTotals('ref', 'DEL')),
        row(`VERSION (start-up only, n=${n}), weft-bridge`, startMs('weft shim'), startMs('ref')),
        '',
        'Inside weftd (its log: from the request read to the answer written, sequential calls):',
        '',
        '| what | median | p95 |',
        '|---|---|---|',
        one(`weftd ADD (n=${n})`, serverMs('ADD')),
        one(`weftd DEL (n=${n})`, serverMs('DEL')),
        '',
        'Where weft\'s time goes (same run):',
        '',
        '| what | median | p95 |',
        '|---|---|---|',
        one('`node -e 0`', startMs('node -e 0')),
        one('weft-bridge VERSION: `node dist/cni/weft-bridge.bundle.cjs` (bundle, compiled at start)', startMs('weft bundle')),
        one('weft-bridge VERSION: `node dist/cni/weft-bridge.cjs` (bundle + V8 code cache)', startMs('weft launcher')),
        one('weft-bridge VERSION: `bin/cni/weft-bridge` (shim → bundle + code cache)', startMs('weft shim')),
        one('weft-bridge VERSION: `node dist/src/plugins/bridge/main.js` (tsc output)', startMs('weft esm')),
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
      await weftd?.stop();
      for (const x of made) {
        try { x.remove(); } catch (err) { errors.push(err); }
      }
      rmSync(tmp, { recursive: true, force: true });
      if (errors.length > 0) throw new AggregateError(errors, 'could not remove every benchmark namespace');
    }
  },
};

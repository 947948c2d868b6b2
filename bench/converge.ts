// `npm run bench -- converge`: N fake peer leases written to the store → time until weftd (vxlan)
// has programmed all of them (watched in the kernel: weft-protocol routes in the host
// namespace), and weftd's RSS afterwards. One namespace host, file store, N = 100, 1000, 5000
// (or --peers=a,b,c).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { WEFT_ROUTE_PROTOCOL } from '../src/agent/dataplane.js';
import { Topology } from '../src/lab/topology.js';
import { Netlink } from '../src/netlink/index.js';
import { ipFromValue, parseIPv4 } from '../src/net/ip.js';
import { FileStore } from '../src/store/file/file-store.js';
import type { Benchmark, BenchResult } from './main.js';

const WEFTD = fileURLToPath(new URL('../../bin/weftd', import.meta.url));

function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Row { n: number; writeMs: number; fromFirstMs: number; fromLastMs: number; rss: number }

async function measure(n: number): Promise<Row> {
  const topo = Topology.create({ prefix: 'wgd', hosts: 1 });
  const dir = mkdtempSync(join(tmpdir(), 'wgd-conv-'));
  const store = new FileStore({ dir: join(dir, 'store'), prefix: '/weft/network' });
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  let proc: ReturnType<typeof spawn> | undefined;
  const nl = Netlink.open(topo.host(0).nsPath);
  try {
    await store.putConfig(JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    proc = spawn('ip', ['netns', 'exec', topo.host(0).ns, WEFTD, '--iface', 'eth0', '--store', 'file', '--store-dir', join(dir, 'store'),
      '--subnet-file', join(dir, 'subnet.env')], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...env, WEFT_LOG_LEVEL: 'warn' } });
    let log = '';
    proc.stderr?.setEncoding('utf8').on('data', (c: string) => { log += c; });
    const deadline = Date.now() + 20_000;
    while (!nl.getLink('weft.1') || readFileSafe(join(dir, 'subnet.env')) === undefined) {
      if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`weftd did not start: ${log}`);
      await sleep(20);
    }
    const own = /FLANNEL_SUBNET=10\.(\d+)\.(\d+)\./.exec(readFileSafe(join(dir, 'subnet.env')) ?? '');
    const ownIndex = own ? Number(own[1]) * 256 + Number(own[2]) : -1;
    const base = parseIPv4('10.0.0.0').value;
    const pubBase = parseIPv4('198.19.0.0').value;
    const t0 = performance.now();
    let written = 0;
    for (let i = 0; written < n; i++) {
      if (i === ownIndex) continue;
      const subnet = { ip: ipFromValue(4, base + (BigInt(i) << 8n)), prefix: 24 };
      const mac = `0a:58:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01`;
      const value = JSON.stringify({ PublicIP: ipToText(pubBase + BigInt(i + 1)), BackendType: 'vxlan', BackendData: { VtepMAC: mac } });
      await store.writeSubnet(subnet, value, 3600, { type: 'absent' });
      written++;
    }
    const t1 = performance.now();
    for (;;) {
      const have = nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL }).length;
      if (have >= n) break;
      if (performance.now() - t1 > 60_000) throw new Error(`only ${have} of ${n} routes after 60 s: ${log}`);
      await sleep(2);
    }
    const t2 = performance.now();
    await sleep(200);
    const rss = rssMB(proc.pid!);
    return { n, writeMs: t1 - t0, fromFirstMs: t2 - t0, fromLastMs: t2 - t1, rss };
  } finally {
    if (proc?.pid !== undefined && proc.exitCode === null) {
      const done = new Promise((r) => proc!.once('exit', r));
      process.kill(proc.pid, 'SIGKILL');
      await done;
    }
    nl.close();
    await store.close();
    topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

function readFileSafe(p: string): string | undefined {
  try { return readFileSync(p, 'utf8'); } catch { return undefined; }
}

function ipToText(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
}

export const benchmark: Benchmark = {
  name: 'converge',
  summary: 'N peer leases written to the store → time until weftd (vxlan) programmed them all, and its RSS',
  async run(args: string[]): Promise<BenchResult> {
    const arg = args.find((a) => a.startsWith('--peers='));
    const sizes = arg ? arg.slice('--peers='.length).split(',').map(Number) : [100, 1000, 5000];
    const rows: Row[] = [];
    for (const n of sizes) {
      process.stderr.write(`  converge: ${n} peers…\n`);
      rows.push(await measure(n));
    }
    const f = (x: number) => x.toFixed(0);
    const lines = [
      '# converge: weftd (vxlan) programming N peers',
      '',
      'One namespace host running weftd (file store). The bench writes N peer leases one by one into the store,',
      'then polls the host\'s kernel for weft-protocol routes (each peer also gets a neighbour and an FDB entry).',
      '"after last write" is store propagation + reconcile; "from first write" includes the store writes themselves.',
      '',
      '| peers | store writes (ms) | programmed, after last write (ms) | programmed, from first write (ms) | weftd RSS (MB) |',
      '|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.n} | ${f(r.writeMs)} | ${f(r.fromLastMs)} | ${f(r.fromFirstMs)} | ${r.rss.toFixed(1)} |`),
      '',
      'Targets: 1000 peers ≤ 200 ms, 5000 ≤ 1 s, RSS ≤ 100 MB at 5000.',
    ];
    return { markdown: lines.join('\n') };
  },
};

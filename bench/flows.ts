// `npm run bench -- flows`: what recording flows costs. Two labs side by side (vxlan, 2 hosts ×
// 1 pod, file store), identical but for weftd's flow records: on (the default, 10000 records,
// conntrack accounting and timestamps on) in one, off (WEFTD_FLOW_RECORDS=0) in the other.
//   throughput   iperf3 pod → pod across hosts, rounds alternating between the labs (ABBA), the
//                ratio of the medians (target ≥ 0.95);
//   10k flows/min  a client in h0's pod opens 167 short TCP connections a second to h1's pod for
//                --minutes (1) in each lab in turn; weftd's CPU seconds and RSS on both hosts,
//                on vs off, and how many records lab "on" kept.
// Options: --seconds=S (iperf3 run, 3), --rounds=R (8), --minutes=M (1).
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Benchmark } from './main.js';
import { cleanEnv, cpuSeconds, rssMB } from './common/process.js';
import { iperf } from '../src/lab/bench.js';
import { execIn } from '../src/lab/exec.js';
import { ECHO_PORT } from '../src/lab/lab.js';
import { labStateDir, parseLabName } from '../src/lab/naming.js';
import { weftdGet } from '../src/cli/weftd-http.js';
import { LabDirs, labRecordSchema, type LabRecord } from '../src/lab/state.js';
import { readFileSync } from 'node:fs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEFTCTL = join(ROOT, 'bin/weftctl');
const RATE = 167;

const opt = (args: string[], name: string, dflt: number) => { const a = args.find((x) => x.startsWith(`--${name}=`)); return a ? Number(a.split('=')[1]) : dflt; };
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };

interface Lab { readonly name: string; readonly flows: boolean; rec: LabRecord }

function labUp(name: string, flows: boolean): LabRecord {
  const r = spawnSync(WEFTCTL, ['lab', 'up', '--name', name, '--hosts', '2', '--pods', '1', '--backend', 'vxlan'], {
    encoding: 'utf8', env: cleanEnv(flows ? {} : { WEFTD_FLOW_RECORDS: '0' }), timeout: 180_000,
  });
  if (r.status !== 0) throw new Error(`lab up ${name}: ${r.stderr}`);
  return labRecordSchema.parse(JSON.parse(readFileSync(join(labStateDir(name as never), 'lab.json'), 'utf8')));
}

function pods(rec: LabRecord): { client: { ns: string }; server: { ns: string; ip: string } } {
  const c = rec.containers.find((x) => x.host === 0);
  const s = rec.containers.find((x) => x.host === 1);
  if (!c || !s?.ip) throw new Error(`lab ${rec.name}: no pods`);
  return { client: { ns: c.ns }, server: { ns: s.ns, ip: s.ip } };
}

function weftdPids(rec: LabRecord): number[] {
  return [0, 1].map((h) => {
    const p = rec.processes.find((x) => x.role === `weftd h${h}`);
    if (!p) throw new Error(`lab ${rec.name}: no weftd h${h}`);
    return p.pid;
  });
}

/** RATE connections a second for `seconds` from the client pod to the server pod's echo port. */
const GENERATOR = `
const net = require('net');
const [ip, port, rate, secs] = process.argv.slice(1);
let made = 0, answered = 0;
const t0 = Date.now();
const tick = setInterval(() => {
  if (Date.now() - t0 >= Number(secs) * 1000) { clearInterval(tick); return; }
  for (let i = 0; i < Number(rate) / 10; i++) {
    made++;
    const s = net.connect(Number(port), ip, () => s.end('weft-bench-flow\\n'));
    s.on('data', () => {}); s.on('close', () => { answered++; }); s.on('error', () => {});
  }
}, 100);
process.on('exit', () => console.log(JSON.stringify({ made, answered })));
`;

async function load(lab: Lab, seconds: number): Promise<{ made: number; answered: number; cpu: number[]; rss: number[] }> {
  const { client, server } = pods(lab.rec);
  const pids = weftdPids(lab.rec);
  const cpu0 = pids.map(cpuSeconds);
  const r = await execIn(client.ns, ['node', '-e', GENERATOR, server.ip, String(ECHO_PORT), String(RATE), String(seconds)], { timeoutMs: (seconds + 60) * 1000 });
  // Destroy events and the records' completion come within a sweep; let them land.
  await new Promise((res) => setTimeout(res, 3000));
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { made?: number; answered?: number };
  return { made: out.made ?? 0, answered: out.answered ?? 0, cpu: pids.map((p, i) => cpuSeconds(p) - (cpu0[i] ?? 0)), rss: pids.map(rssMB) };
}

function recordCount(lab: Lab): number {
  const r = spawnSync(WEFTCTL, ['flows', '--lab', lab.name, '--json'], { encoding: 'utf8', env: cleanEnv(), maxBuffer: 256 * 1024 * 1024 });
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

/** Kernel events each weftd lost before reading them (its /flows says). */
async function lostEvents(lab: Lab): Promise<number[]> {
  const dirs = LabDirs.of(parseLabName(lab.name));
  return Promise.all(lab.rec.hostList.map(async (h) => {
    const r = await weftdGet(`unix:${dirs.apiSocket(h.index)}`, '/flows?after=999999999');
    return (JSON.parse(r.body) as { lostEvents?: number }).lostEvents ?? NaN;
  }));
}

export const benchmark: Benchmark = {
  name: 'flows',
  summary: 'flow records on vs off: iperf3 throughput (target ≥ 0.95×), weftd CPU and RSS at 10k flows/min',
  async run(args) {
    const seconds = opt(args, 'seconds', 3);
    const rounds = opt(args, 'rounds', 8);
    const minutes = opt(args, 'minutes', 1);
    const tag = String(process.pid % 10000);
    const on: Lab = { name: `bfon${tag}`, flows: true, rec: undefined as unknown as LabRecord };
    const off: Lab = { name: `bfoff${tag}`, flows: false, rec: undefined as unknown as LabRecord };
    const load0 = loadavg()[0]?.toFixed(2) ?? '?';
    try {
      on.rec = labUp(on.name, true);
      off.rec = labUp(off.name, false);
      const gbps: Record<'on' | 'off', number[]> = { on: [], off: [] };
      for (let r = 0; r < rounds; r++) {
        for (const lab of r % 2 === 0 ? [on, off] : [off, on]) {
          const { client, server } = pods(lab.rec);
          const res = await iperf(server.ns, client.ns, server.ip, seconds, { omitSeconds: 1, affinity: { client: 0, server: 1 } });
          gbps[lab.flows ? 'on' : 'off'].push(res.gbps);
          process.stderr.write(`flows bench: round ${r + 1} ${lab.flows ? 'on ' : 'off'} ${res.gbps.toFixed(2)} Gbit/s\n`);
        }
      }
      const idleOn = weftdPids(on.rec).map(rssMB);
      const idleOff = weftdPids(off.rec).map(rssMB);
      const loadOn = await load(on, minutes * 60);
      const loadOff = await load(off, minutes * 60);
      const kept = recordCount(on);
      const lost = await lostEvents(on);
      const ratio = median(gbps.on) / median(gbps.off);
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      const f1 = (x: number) => x.toFixed(1);
      const lines = [
        '# Flow records: what recording costs',
        '',
        `Two labs side by side (vxlan, 2 hosts × 1 pod, file store), identical but for weftd's flow records: on (default: 10000 records, conntrack accounting and timestamps, conntrack new/update/destroy events and the policy's NFLOG group) and off (\`WEFTD_FLOW_RECORDS=0\`). 1-minute load average at the start: ${load0}.`,
        '',
        '| | flows on | flows off | on ÷ off |',
        '|---|---:|---:|---:|',
        `| iperf3 pod → pod across hosts, median of ${rounds} × ${seconds} s (Gbit/s) | ${median(gbps.on).toFixed(2)} | ${median(gbps.off).toFixed(2)} | **${ratio.toFixed(3)}** |`,
        `| connections opened / answered in ${minutes} min | ${loadOn.made} / ${loadOn.answered} | ${loadOff.made} / ${loadOff.answered} | |`,
        `| weftd CPU seconds over those ${minutes} min, h0 + h1 (h0 / h1) | ${f1(sum(loadOn.cpu))} (${loadOn.cpu.map(f1).join(' / ')}) | ${f1(sum(loadOff.cpu))} (${loadOff.cpu.map(f1).join(' / ')}) | ${(sum(loadOn.cpu) / Math.max(0.01, sum(loadOff.cpu))).toFixed(2)} |`,
        `| weftd RSS idle → after, h0 / h1 (MB) | ${idleOn.map(f1).join(' / ')} → ${loadOn.rss.map(f1).join(' / ')} | ${idleOff.map(f1).join(' / ')} → ${loadOff.rss.map(f1).join(' / ')} | |`,
        `| flow records kept (weftctl flows --lab), events lost h0 / h1 | ${kept}, ${lost.join(' / ')} | – | |`,
        '',
        `Throughput rounds alternate the labs (ABBA), pinned (client CPU 0, server CPU 1), the first second of each run left out; each value: ${gbps.on.map((x) => x.toFixed(2)).join(', ')} (on) and ${gbps.off.map((x) => x.toFixed(2)).join(', ')} (off). The connection load is ${RATE} connections a second (10k a minute), each a line echoed back and closed; CPU is weftd's own (user + system) on both hosts, the ring holds at most 10000 records, so at 10k flows a minute it keeps about the last minute.`,
      ];
      return { markdown: lines.join('\n') };
    } finally {
      for (const lab of [on, off]) spawnSync(WEFTCTL, ['lab', 'down', '--name', lab.name], { env: cleanEnv(), stdio: 'ignore' });
    }
  },
};

// `npm run bench -- udp`: TCP throughput container → container across two namespace hosts for the
// udp backend (offloading pump and classic per-packet pump) next to the kernel's vxlan, measured
// in the same run and interleaved round by round, so machine load hits all three alike. Each
// round is one iperf3 run per path; the table gives the median and range over rounds and the
// median of the per-round ratios to vxlan. Options: --rounds=N (default 3), --seconds=S (3).
import { createUdpBackend, type PumpStats, type UdpBackend } from '../src/backends/udp/udp.js';
import { UdpTopology, type TestHost } from '../src/lab/udp-topology.js';
import type { Benchmark, BenchResult } from './main.js';

type Path = 'udp (offload)' | 'udp (classic)' | 'vxlan (kernel)';
const PATHS: readonly Path[] = ['udp (offload)', 'udp (classic)', 'vxlan (kernel)'];

function option(args: string[], name: string, fallback: number): number {
  const raw = args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${raw}`);
  return n;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

async function viaUdp(topo: UdpTopology, h1: TestHost, h2: TestHost, offload: boolean, seconds: number): Promise<{ bps: number; sender: PumpStats; receiver: PumpStats }> {
  const backends: UdpBackend[] = [];
  try {
    for (const h of [h1, h2]) {
      const b = createUdpBackend({ Port: 8285 }, { offload });
      backends.push(b);
      const prep = await b.prepare(h.context());
      h.setPodMtu(prep.mtu);
      await b.activate(h.subnet);
      await b.reconcile(topo.peersOf(h.index));
    }
    const { bitsPerSecond } = await topo.iperf(h1, h2, seconds);
    const [sender, receiver] = backends.map((b) => b.stats());
    if (!sender || !receiver) throw new Error('udp backend lost its pump');
    return { bps: bitsPerSecond, sender, receiver };
  } finally {
    for (const b of backends) await b.close({ keepDataplane: false });
  }
}

async function viaVxlan(topo: UdpTopology, h1: TestHost, h2: TestHost, seconds: number): Promise<number> {
  topo.buildKernelVxlan(h1, h2);
  topo.buildKernelVxlan(h2, h1);
  try {
    return (await topo.iperf(h1, h2, seconds)).bitsPerSecond;
  } finally {
    topo.removeKernelVxlan(h1);
    topo.removeKernelVxlan(h2);
  }
}

async function run(args: string[]): Promise<BenchResult> {
  const rounds = option(args, 'rounds', 3);
  const seconds = option(args, 'seconds', 3);
  const topo = new UdpTopology(2);
  const bps = new Map<Path, number[]>(PATHS.map((p) => [p, []]));
  const counters: string[] = [];
  try {
    const [h1, h2] = [topo.host(1), topo.host(2)];
    for (let r = 1; r <= rounds; r++) {
      const fast = await viaUdp(topo, h1, h2, true, seconds);
      const classic = await viaUdp(topo, h1, h2, false, seconds);
      const vx = await viaVxlan(topo, h1, h2, seconds);
      bps.get('udp (offload)')!.push(fast.bps);
      bps.get('udp (classic)')!.push(classic.bps);
      bps.get('vxlan (kernel)')!.push(vx);
      const s = fast.sender;
      const v = fast.receiver;
      counters.push(`| ${r} | ${(s.txGsoSegments / s.txGsoPackets).toFixed(1)} | ${(v.rxGroSegments / v.rxGroBatches).toFixed(1)} | ${(v.rxPackets / v.rxTunWrites).toFixed(1)} |`);
      process.stderr.write(`# round ${r}: offload ${(fast.bps / 1e9).toFixed(2)}, classic ${(classic.bps / 1e9).toFixed(2)}, vxlan ${(vx / 1e9).toFixed(2)} Gbit/s\n`);
    }
  } finally {
    topo.destroy();
  }
  const vxlan = bps.get('vxlan (kernel)')!;
  const rows = PATHS.map((p) => {
    const xs = bps.get(p)!;
    const ratio = median(xs.map((x, i) => x / vxlan[i]!));
    const g = (x: number): string => (x / 1e9).toFixed(2);
    return `| ${p} | **${g(median(xs))}** | ${g(Math.min(...xs))}–${g(Math.max(...xs))} | ${ratio.toFixed(2)} |`;
  });
  const markdown = [
    '# udp: the udp backend vs kernel vxlan (iperf3 TCP, container → container)',
    '',
    `Two namespace hosts on an underlay bridge, one container each; ${rounds} rounds of ${seconds} s per path, the`,
    'paths interleaved within each round. *udp (offload)* is the default pump: TSO super-packets from the TUN',
    'device cut into MTU-sized datagrams sent with UDP GSO, UDP GRO on receive, and in-order TCP segments',
    'merged into one GSO write to the TUN. *udp (classic)* is one system call per packet (flannel\'s way).',
    'On the wire both carry one IP packet per datagram to port 8285.',
    '',
    '| path | median Gbit/s | range | median ratio to vxlan |',
    '|---|---:|---:|---:|',
    ...rows,
    '',
    'Offload counters per round (sender: segments per super-packet read from the TUN; receiver: datagrams',
    'per GRO receive, packets per TUN write):',
    '',
    '| round | segments / super-packet | datagrams / GRO receive | packets / TUN write |',
    '|---:|---:|---:|---:|',
    ...counters,
    '',
    'Target (issue 4): udp ≥ 0.5× vxlan in the same run. The machine is shared (2 cores), so single',
    'rounds swing; compare paths within a round.',
  ].join('\n');
  return { markdown };
}

export const benchmark: Benchmark = {
  name: 'udp',
  summary: 'udp backend (offload and classic pump) vs kernel vxlan, iperf3 TCP between namespace containers',
  run,
};

// Wiring one pod's network (the work of a routed CNI ADD): veth with its peer in the pod's
// namespace, addresses on both ends, links up, a default route in the pod and a host route.
// Side by side: weft's Netlink API, the same steps with iproute2 commands, and the variant that
// creates the veth first and moves the peer afterwards.

import { spawnSync } from 'node:child_process';
import type { Benchmark, BenchResult } from './main.js';
import { Netlink } from '../src/netlink/index.js';
import { makeTestNetns, type TestNetns } from '../src/netns/testing.js';
import { parseCidr, parseIP } from '../src/net/ip.js';

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
}

function stats(samples: number[]): { median: number; p90: number } {
  const s = [...samples].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)] ?? NaN, p90: s[Math.floor(s.length * 0.9)] ?? NaN };
}

function time(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1000;
}

export const benchmark: Benchmark = {
  name: 'netlink',
  summary: 'pod wiring: Netlink API vs iproute2 commands vs create-then-move',
  async run(args: string[]): Promise<BenchResult> {
    const n = Number(args.find((a) => a.startsWith('--n='))?.slice(4) ?? 30);
    const host = makeTestNetns('wdp-bench');
    const pods: TestNetns[] = [];
    const results = { netlink: [] as number[], iproute2: [] as number[], move: [] as number[] };
    const nl = Netlink.open(host.path);
    try {
      for (let i = 0; i < 3 * n; i++) pods.push(makeTestNetns('wdp-bench'));
      for (let i = 0; i < n; i++) {
        const pod = pods[i]!;
        results.netlink.push(
          time(() => {
            const v = nl.createVeth({ name: `wa${i}`, peerName: 'eth0', peerNsPath: pod.path, mtu: 1450 });
            Netlink.with(pod.path, (p) => {
              p.addAddress('eth0', parseCidr(`10.244.${i}.2/24`));
              p.setLink('eth0', { up: true });
              p.setLink('lo', { up: true });
              p.addRoute({ dst: 'default', gateway: parseIP(`10.244.${i}.1`), oif: 'eth0' });
            });
            nl.setLink(v, { up: true });
            nl.addAddress(v, parseCidr(`10.244.${i}.1/32`), { noPrefixRoute: true });
            nl.addRoute({ dst: parseCidr(`10.244.${i}.2/32`), oif: v.index, scope: 'link' });
          }),
        );
      }
      for (let i = 0; i < n; i++) {
        const pod = pods[n + i]!.name;
        const h = host.name;
        results.iproute2.push(
          time(() => {
            ip(['-n', h, 'link', 'add', `wb${i}`, 'mtu', '1450', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
            ip(['-n', pod, 'addr', 'add', `10.245.${i}.2/24`, 'dev', 'eth0']);
            ip(['-n', pod, 'link', 'set', 'eth0', 'up']);
            ip(['-n', pod, 'link', 'set', 'lo', 'up']);
            ip(['-n', pod, 'route', 'add', 'default', 'via', `10.245.${i}.1`, 'dev', 'eth0']);
            ip(['-n', h, 'link', 'set', `wb${i}`, 'up']);
            ip(['-n', h, 'addr', 'add', `10.245.${i}.1/32`, 'dev', `wb${i}`, 'noprefixroute']);
            ip(['-n', h, 'route', 'add', `10.245.${i}.2/32`, 'dev', `wb${i}`, 'scope', 'link']);
          }),
        );
      }
      for (let i = 0; i < n; i++) {
        const pod = pods[2 * n + i]!;
        results.move.push(
          time(() => {
            nl.createVeth({ name: `wc${i}`, peerName: `wcp${i}`, mtu: 1450 });
            nl.setLink(`wcp${i}`, { nsPath: pod.path, name: 'eth0' });
          }),
        );
      }
    } finally {
      nl.close();
      host.remove();
      for (const p of pods) p.remove();
    }
    const row = (what: string, s: number[]): string => {
      const { median, p90 } = stats(s);
      return `| ${what} | ${(median / 1000).toFixed(2)} | ${(p90 / 1000).toFixed(2)} |`;
    };
    return {
      markdown: [
        '# Pod network wiring',
        '',
        `${n} pods each; times in milliseconds per pod.`,
        '',
        '| method | median ms | p90 ms |',
        '|---|---|---|',
        row('weft Netlink: veth (peer born in pod ns) + 2 addrs + 3 ups + 2 routes', results.netlink),
        row('iproute2: the same 8 steps as `ip` commands', results.iproute2),
        row('veth only, peer created here then moved into the pod ns', results.move),
        '',
        'Creating the peer directly in the target namespace (IFLA_NET_NS_FD inside VETH_INFO_PEER) avoids',
        "the kernel's namespace-move path, which waits for an RCU grace period per device.",
      ].join('\n'),
    };
  },
};

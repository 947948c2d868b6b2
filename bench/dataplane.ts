// `npm run bench -- dataplane`: iperf3 container → container across two hosts for each backend,
// as a ratio to a hand-built kernel path of the same shape measured in the same run
// (dataplane-reference.ts): containers behind cni0 on each of two hosts joined by a hand-built
// VXLAN (for vxlan, and for udp: weft's userspace tunnel against the kernel's), by hand-built
// host routes (host-gw), or a hand-built macvlan pair (macvlan); plus the raw underlay (host eth0
// → switch → host eth0) for context. The weft side is built by the lab exactly as `weftctl lab
// up` does. Weft and reference runs alternate over several rounds (the order flips each round,
// so a drift in machine load hits both alike); the table reports medians and the ratio of medians.
// A second table puts IPv6 next to IPv4: per backend one dual-stack lab, the same two containers
// measured over each family in alternating rounds, and the raw underlay over each family.
import { existsSync } from 'node:fs';
import type { Benchmark } from './main.js';
import { parseBackend, parseLabSpec } from '../src/lab/spec.js';
import { labDown, labUp } from '../src/lab/lab.js';
import { availableParallelism, loadavg } from 'node:os';
import { type IperfOptions, type IperfResult, iperf } from '../src/lab/bench.js';
import { LabDirs, type LabRecord } from '../src/lab/state.js';
import { labNsPrefix, parseLabName } from '../src/lab/naming.js';
import { listNamedNetns } from '../src/netns/index.js';
import { agentRulesScript, AGENT_TABLE } from '../src/agent/traffic-rules.js';
import { parseCidr } from '../src/net/ip.js';
import { LAB_NETWORK } from '../src/lab/backends.js';
import { ReferencePath, type ReferenceShape, firstLinkOfKind, kernelLink, removeLeftovers, vxlanDifferences } from './dataplane-reference.js';

const LAB = parseLabName('benchdp');
const REF_PREFIX = 'wdb';

const SHAPES: Record<string, { shape: ReferenceShape; label: string }> = {
  vxlan: { shape: 'vxlan', label: 'hand-built vxlan, containers on cni0' },
  'host-gw': { shape: 'routes', label: 'hand-built host routes, containers on cni0' },
  udp: { shape: 'vxlan', label: 'hand-built vxlan, containers on cni0' },
  macvlan: { shape: 'macvlan', label: 'hand-built macvlan pair' },
};

/** Targets from the issues (4: vxlan, host-gw, udp; 7: macvlan), as weft / reference. */
const TARGETS: Record<string, number> = { vxlan: 0.95, 'host-gw': 0.95, udp: 0.5, macvlan: 0.95 };

interface Row {
  readonly backend: string;
  readonly refLabel: string;
  /** weftd without --ip-masq against the rule-free reference: neither side has NAT (so no conntrack). */
  readonly weft: IperfResult[];
  readonly ref: IperfResult[];
  /** weftd with --ip-masq (as deployed) against the reference carrying the same rules (weftd's table). */
  readonly weftMasq: IperfResult[];
  readonly refRules: IperfResult[];
  readonly raw: IperfResult;
  /** Where weft's path and the reference differ in settings the kernel reports. */
  readonly differences: string[];
}

/** weft / reference per round (each round's runs are back to back), then their median. */
export function pairedRatio(weft: readonly IperfResult[], ref: readonly IperfResult[]): number {
  return median(weft.map((w, i) => { const r = ref[i]?.gbps ?? 0; return r > 0 ? w.gbps / r : 0; }));
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function pair(rec: LabRecord): { client: { ns: string; ip: string }; server: { ns: string; ip: string }; h0: string; h1: { ns: string; ip: string } } {
  const a = rec.containers.find((c) => c.host === 0);
  const b = rec.containers.find((c) => c.host === 1);
  const [h0, h1] = rec.hostList;
  if (!a || !b || b.ip === undefined || a.ip === undefined || !h0 || !h1) throw new Error('the benchmark lab needs a container on each of two hosts');
  return { client: { ns: a.ns, ip: a.ip }, server: { ns: b.ns, ip: b.ip }, h0: h0.ns, h1 };
}

/** What the kernel says differs between weft's path and the reference (MTUs; vxlan device settings). */
function compareSettings(backend: string, rec: LabRecord, ref: ReferencePath): string[] {
  const out: string[] = [];
  const { client } = pair(rec);
  const weftPod = kernelLink(client.ns, 'eth0');
  const refPod = kernelLink(ref.client.ns, 'eth0');
  if (weftPod && refPod && weftPod.mtu !== refPod.mtu) out.push(`container eth0 mtu weft ${weftPod.mtu} vs reference ${refPod.mtu}`);
  if (backend === 'vxlan') {
    const weftHost = rec.hostList[0]?.ns ?? '';
    const dev = firstLinkOfKind(weftHost, 'vxlan');
    const w = dev === undefined ? undefined : kernelLink(weftHost, dev);
    const r = kernelLink(ref.host(0), 'vx.1');
    if (!w || !r) out.push('vxlan device missing on one side');
    else out.push(...vxlanDifferences(w, r));
  }
  return out;
}

/**
 * Every run pins iperf3's client and server to their own CPU and leaves TCP's slow start (the
 * first second) out, the same for weft and the reference: on 2 shared cores where the scheduler
 * puts the processes moves single runs by ±20 %.
 */
/**
 * Backends measured unpinned under --pin=auto (the default): udp's tunnel is weftd's own threads on
 * both hosts, and with iperf3 holding both CPUs they contend with it (pinned 0.47×, unpinned 0.57×
 * of the kernel's vxlan in one session) — the kernel paths run in the sender's softirq instead.
 */
const UNPINNED = new Set(['udp']);

function iperfOptions(pin: boolean): IperfOptions {
  return pin && availableParallelism() >= 2 ? { affinity: { client: 0, server: 1 }, omitSeconds: 1 } : { omitSeconds: 1 };
}

/**
 * One backend: the reference is built once; weft's lab comes up twice, without and with --ip-masq,
 * and each lab's rounds alternate weft with the reference of the same kind (without rules; with
 * weftd's own table on both hosts, which brings conntrack in as --ip-masq does on weft's side).
 */
async function measure(backend: string, rounds: number, seconds: number, pin: boolean): Promise<Row> {
  const IPERF = iperfOptions(pin);
  const { shape, label } = SHAPES[backend] ?? { shape: 'vxlan' as const, label: '' };
  if (label === '') throw new Error(`no hand-built reference for ${backend}`);
  const ref = ReferencePath.build(REF_PREFIX, shape);
  try {
    const r = ref;
    // Everything weftd puts on a policy-free host with --ip-masq: its own table (the conntrack
    // bypass is off by default).
    const rules = agentRulesScript({ network: parseCidr(LAB_NETWORK), ipMasq: true });
    const runRef = (withRules: boolean) => { r.setRules(AGENT_TABLE, withRules ? rules : undefined); return iperf(r.server.ns, r.client.ns, r.server.ip, seconds, IPERF); };
    /** One lab's rounds; `inspect` reads what else is wanted from the lab before it goes down. */
    const phase = async <T>(ipMasq: boolean, inspect: (rec: LabRecord) => Promise<T>): Promise<{ weft: IperfResult[]; refs: IperfResult[]; seen: T }> => {
      const spec = { ...parseLabSpec({ name: LAB, backend, hosts: '2', pods: '1', store: 'file' }), ipMasq };
      const rec = await labUp(spec);
      try {
        const { client, server } = pair(rec);
        const runWeft = () => iperf(server.ns, client.ns, server.ip, seconds, IPERF);
        const weft: IperfResult[] = [];
        const refs: IperfResult[] = [];
        for (let i = 0; i < rounds; i++) {
          if (i % 2 === 0) { weft.push(await runWeft()); refs.push(await runRef(ipMasq)); }
          else { refs.push(await runRef(ipMasq)); weft.push(await runWeft()); }
          process.stderr.write(`#   ${ipMasq ? '--ip-masq' : 'no NAT'} round ${i + 1}: weft ${weft.at(-1)!.gbps.toFixed(2)}, reference${ipMasq ? ' + weftd\'s rules' : ''} ${refs.at(-1)!.gbps.toFixed(2)} Gbit/s\n`);
        }
        return { weft, refs, seen: await inspect(rec) };
      } finally {
        await labDown(LAB);
      }
    };
    // The settings comparison and the raw underlay run once, in the first lab.
    const plain = await phase(false, async (rec) => {
      const { h0, h1 } = pair(rec);
      return { differences: compareSettings(backend, rec, r), raw: await iperf(h1.ns, h0, h1.ip, seconds, IPERF) };
    });
    const masq = await phase(true, async () => undefined);
    r.setRules(AGENT_TABLE, undefined);
    return { backend, refLabel: label, weft: plain.weft, ref: plain.refs, weftMasq: masq.weft, refRules: masq.refs, raw: plain.seen.raw, differences: plain.seen.differences };
  } finally {
    ref.destroy();
  }
}

interface FamilyRow {
  readonly backend: string;
  readonly v4: IperfResult[];
  readonly v6: IperfResult[];
  readonly raw4: IperfResult;
  readonly raw6: IperfResult;
  /** Container MTU, for reading the ratio: IPv6's headers are 20 bytes longer. */
  readonly mtu: number | undefined;
}

/**
 * One dual-stack lab (no NAT on either side, as the no-NAT column above): container → container
 * over IPv4 and over IPv6, alternating which goes first, then the bare underlay over each.
 */
async function measureFamilies(backend: string, rounds: number, seconds: number, pin: boolean): Promise<FamilyRow> {
  const IPERF = iperfOptions(pin);
  const spec = { ...parseLabSpec({ name: LAB, backend, hosts: '2', pods: '1', store: 'file', ipv6: 'dual' }), ipMasq: false };
  const rec = await labUp(spec);
  try {
    const a = rec.containers.find((c) => c.host === 0);
    const b = rec.containers.find((c) => c.host === 1);
    const [h0, h1] = rec.hostList;
    if (!a || !b?.ip || !b.ip6 || !h0 || !h1?.ip6) throw new Error('the dual-stack benchmark lab needs a container with both families on each of two hosts');
    const v4: IperfResult[] = [];
    const v6: IperfResult[] = [];
    const run = (ip: string) => iperf(b.ns, a.ns, ip, seconds, IPERF);
    for (let i = 0; i < rounds; i++) {
      if (i % 2 === 0) { v4.push(await run(b.ip)); v6.push(await run(b.ip6)); }
      else { v6.push(await run(b.ip6)); v4.push(await run(b.ip)); }
      process.stderr.write(`#   ${backend} round ${i + 1}: IPv4 ${v4.at(-1)!.gbps.toFixed(2)}, IPv6 ${v6.at(-1)!.gbps.toFixed(2)} Gbit/s\n`);
    }
    const raw4 = await iperf(h1.ns, h0.ns, h1.ip, seconds, IPERF);
    const raw6 = await iperf(h1.ns, h0.ns, h1.ip6, seconds, IPERF);
    return { backend, v4, v6, raw4, raw6, mtu: kernelLink(a.ns, 'eth0')?.mtu };
  } finally {
    await labDown(LAB);
  }
}

function numberFlag(args: string[], name: string, fallback: number): number {
  const v = args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 60) throw new Error(`--${name}: a whole number 1..60, got ${JSON.stringify(v)}`);
  return n;
}

const f = (n: number) => n.toFixed(2);
const spread = (rs: readonly IperfResult[]) => `${f(Math.min(...rs.map((r) => r.gbps)))}–${f(Math.max(...rs.map((r) => r.gbps)))}`;

export const benchmark: Benchmark = {
  name: 'dataplane',
  summary: 'iperf3 container → container across hosts per backend vs a hand-built kernel path of the same shape',
  async run(args) {
    const only = args.find((a) => a.startsWith('--backends='))?.slice('--backends='.length).split(',').filter((b) => b !== '');
    const backends = only ?? ['vxlan', 'host-gw', 'udp', 'macvlan'];
    // --ipv6-backends=: the dual-stack table's backends (empty: no such table).
    const ipv6Only = args.find((a) => a.startsWith('--ipv6-backends='))?.slice('--ipv6-backends='.length).split(',').filter((b) => b !== '');
    const ipv6Backends = ipv6Only ?? ['vxlan', 'host-gw', 'bgp', 'udp'];
    for (const b of ipv6Backends) if (parseBackend(b).ipv6 !== true) throw new Error(`--ipv6-backends: ${b} carries IPv4 only in the lab`);
    for (const b of backends) { parseBackend(b); if (!SHAPES[b]) throw new Error(`no hand-built reference for backend ${b}`); }
    const rounds = numberFlag(args, 'rounds', 7);
    const seconds = numberFlag(args, 'seconds', 3);
    const pinFlag = args.find((a) => a.startsWith('--pin='))?.slice('--pin='.length) ?? 'auto';
    if (pinFlag !== 'on' && pinFlag !== 'off' && pinFlag !== 'auto') throw new Error(`--pin: on, off or auto, got ${JSON.stringify(pinFlag)}`);
    const pinned = (b: string) => pinFlag === 'on' || (pinFlag === 'auto' && !UNPINNED.has(b));
    // A benchmark lab or reference path left by a killed run is ours to remove.
    if (existsSync(LabDirs.of(LAB).root) || listNamedNetns().some((n) => n.startsWith(labNsPrefix(LAB)))) await labDown(LAB);
    removeLeftovers(REF_PREFIX);
    // Ctrl-C / kill: the lab and any reference namespaces go too (the lab's by name, ours by prefix).
    const onSignal = (sig: NodeJS.Signals) => {
      removeLeftovers(REF_PREFIX);
      void labDown(LAB).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const started = Date.now();
    const loadBefore = loadavg()[0] ?? 0;
    const rows: Row[] = [];
    const familyRows: FamilyRow[] = [];
    try {
      for (const b of backends) {
        process.stderr.write(`# dataplane: ${b}\n`);
        rows.push(await measure(b, rounds, seconds, pinned(b)));
      }
      for (const b of ipv6Backends) {
        process.stderr.write(`# dataplane: ${b}, IPv6 and IPv4 in one dual-stack lab\n`);
        familyRows.push(await measureFamilies(b, rounds, seconds, pinned(b)));
      }
    } finally {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    }
    const took = (Date.now() - started) / 1000;
    const pinnedRows = backends.filter(pinned);
    const pinText = pinnedRows.length === 0 ? 'iperf3 not pinned'
      : `iperf3's client and server pinned to CPUs 0 and 1 in every run${pinnedRows.length < backends.length ? ` of ${pinnedRows.join(', ')}` : ''}`;
    const verdict = (backend: string, ratio: number) => {
      const target = TARGETS[backend];
      return target === undefined ? '' : ratio >= target ? ` (≥ ${target} ✓)` : ` (< ${target} ✗)`;
    };
    const lines = rows.map((r) => {
      const ratio = pairedRatio(r.weft, r.ref);
      const masqRatio = pairedRatio(r.weftMasq, r.refRules);
      const ofMedians = (a: readonly IperfResult[], b: readonly IperfResult[]) => { const d = median(b.map((x) => x.gbps)); return d > 0 ? median(a.map((x) => x.gbps)) / d : 0; };
      const g = (rs: readonly IperfResult[]) => `${f(median(rs.map((x) => x.gbps)))} (${spread(rs)})`;
      const retr = (rs: readonly IperfResult[]) => median(rs.map((x) => x.retransmits));
      const masqCost = median(r.refRules.map((x) => x.gbps)) / median(r.ref.map((x) => x.gbps));
      return `| ${r.backend} | ${r.refLabel} | **${g(r.weft)}** | ${g(r.ref)} | **${ratio.toFixed(2)}×**${verdict(r.backend, ratio)} (${ofMedians(r.weft, r.ref).toFixed(2)}×) | **${g(r.weftMasq)}** | ${g(r.refRules)} | **${masqRatio.toFixed(2)}×**${verdict(r.backend, masqRatio)} (${ofMedians(r.weftMasq, r.refRules).toFixed(2)}×) | ${masqCost.toFixed(2)}× | ${f(r.raw.gbps)} | ${retr(r.weft)} / ${retr(r.ref)} |`;
    });
    const diffs = rows.flatMap((r) => r.differences.map((d) => `- ${r.backend}: ${d}`));
    const familyLines = familyRows.map((r) => {
      const g = (rs: readonly IperfResult[]) => `${f(median(rs.map((x) => x.gbps)))} (${spread(rs)})`;
      return `| ${r.backend} | **${g(r.v4)}** | **${g(r.v6)}** | **${pairedRatio(r.v6, r.v4).toFixed(2)}×** | ${f(r.raw4.gbps)} | ${f(r.raw6.gbps)} | ${r.raw4.gbps > 0 ? (r.raw6.gbps / r.raw4.gbps).toFixed(2) : '–'}× | ${r.mtu ?? '?'} |`;
    });
    const familyTable = familyRows.length === 0 ? '' : `

## IPv6 next to IPv4

Per backend one dual-stack lab (\`weftctl lab up --ipv6 dual\`: IPv4 10.244.0.0/16 and IPv6 fd10:244::/56 pods, the
underlay 198.18.0.0/24 and 2001:2::/64; no NAT), the same two containers on h0 and h1 measured over IPv4
and over IPv6 in alternating rounds (${rounds} × ${seconds} s each, the order reversed every round; the same pinning as
above); **IPv6 / IPv4 is paired per round**, median over the rounds. vxlan's IPv6 runs over its own
device (weft-v6.1) on the IPv6 underlay; host-gw's and bgp's are plain IPv6 routes. Raw underlay: one run
per family, host eth0 → switch → host eth0. IPv6's header is 20 bytes longer than IPv4's, on the inner
packet and (vxlan) the outer one, so at one MTU a segment carries 20–40 bytes less.

| backend | IPv4 Gbit/s | IPv6 Gbit/s | IPv6 / IPv4 | raw underlay IPv4 | raw underlay IPv6 | raw IPv6 / IPv4 | container MTU |
|---|---:|---:|---:|---:|---:|---:|---:|
${familyLines.join('\n')}`;
    return {
      markdown: `# dataplane: container → container across hosts, per backend, vs a hand-built path of the same shape

A lab of two hosts (namespaces on one underlay bridge, \`weftctl lab\`'s topology), one container per host
made through bin/cni as a runtime would; iperf3, one TCP stream, container on h0 → container on h1.
The reference is built by hand with iproute2 in namespaces of its own on an identical underlay (a switch
bridge, two host namespaces on veths, MTU 1500), with the same shape as weft's path:

- **vxlan / udp**: a container per host behind a cni0 bridge (veth, MTU 1450), a VXLAN device per host with
  weft's settings (VNI 1, port 8472, nolearning, udpcsum, ttl auto, MTU 1450, the subnet's network address
  as a /32) and, per peer, an onlink route, a permanent neighbour and a permanent FDB entry. For udp this
  is the kernel's tunnel against weft's userspace one (target ≥ 0.5×).
- **host-gw**: the same containers at MTU 1500 and a plain route to the peer's pod subnet via its underlay address.
- **macvlan**: a bridge-mode macvlan on each host's eth0, moved into a container namespace.

Each backend is measured twice, each time against the reference of the same kind:
- **no NAT**: weftd without \`--ip-masq\` (its \`inet weft\` table holds the forward accepts only, and the
  weft plugin's bridge masquerade, which flannel-style plugins turn on without it, is off: conntrack
  never runs) against the reference without any rules;
- **--ip-masq** (as the lab and Flannel's usual manifest run it): weftd's table adds a NAT postrouting
  chain with a masquerade rule, which brings conntrack into every packet's path; the reference then
  carries the same table on both of its hosts (\`agentRulesScript\` with --ip-masq, network ${LAB_NETWORK}).
  The masquerade's own cost on the reference, (ref + rules) / ref, is in its own column (a ratio of
  medians: the two ran in different phases).
No NetworkPolicy exists, and the conntrack bypass is off (its default; see the README).

${rounds} rounds × ${seconds} s per side for each (after 1 s of slow start left out; ${pinText}), weft
and its reference back to back (order reversed every round); medians with the min–max over the rounds
in brackets. **Ratios are paired**: each round's weft run over that round's reference run, median over
the rounds (a drift in machine load hits both runs of a pair alike); the ratio of the medians is in
brackets. Raw underlay: one run, host eth0 → switch → host eth0, for context. Whole benchmark: ${took.toFixed(0)} s;
machine load (1-minute average, ${availableParallelism()} CPUs) ${loadBefore.toFixed(2)} at the start, ${(loadavg()[0] ?? 0).toFixed(2)} at the end.

| backend | hand-built reference | weft, no NAT, Gbit/s | reference Gbit/s | weft / reference | weft --ip-masq Gbit/s | reference + weftd's rules Gbit/s | weft --ip-masq / (ref + rules) | masquerade's cost: (ref + rules) / ref | raw underlay Gbit/s | retransmits weft / ref (median, no NAT) |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${lines.join('\n')}

Settings compared in the kernel's view (\`ip -d -json link\`: container eth0 MTU; for vxlan every VXLAN
attribute but the per-host local address and lower device): ${diffs.length === 0 ? 'no differences.' : `\n${diffs.join('\n')}`}

All paths are veths inside one kernel: the numbers measure per-packet CPU cost on this machine
(2 cores shared with other work), not a NIC.${familyTable}`,
    };
  },
};

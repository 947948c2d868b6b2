// `npm run bench -- dataplane`: iperf3 container → container across two lab hosts for each
// backend, next to a path of the same kind built by hand with iproute2 in the same lab, in the
// same run: a kernel VXLAN between the hosts (for vxlan, and for udp — the kernel's UDP tunnel
// vs weft's userspace one), plain host routes to a bridged namespace (host-gw), a pair of
// macvlans on the underlay (macvlan); plus the raw underlay (host eth0 → switch → host eth0).
// One TCP stream, 3 s each. The weft side is built by the lab exactly as `weftctl lab up` does.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Benchmark } from './main.js';
import { parseBackend, parseLabSpec } from '../src/lab/spec.js';
import { addLabNamespace, labDown, labUp } from '../src/lab/lab.js';
import { type IperfResult, iperf } from '../src/lab/bench.js';
import { LabDirs } from '../src/lab/state.js';
import type { LabRecord } from '../src/lab/state.js';
import { type LabName, labNsPrefix, parseLabName } from '../src/lab/naming.js';
import { listNamedNetns } from '../src/netns/index.js';

const SECONDS = 3;
const LAB = parseLabName('benchdp');

function ip(ns: string, args: string[]): void {
  const r = spawnSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip -n ${ns} ${args.join(' ')}: ${r.stderr.trim()}`);
}

interface Reference { readonly label: string; readonly serverNs: string; readonly clientNs: string; readonly target: string }

function hosts(rec: LabRecord): [{ ns: string; ip: string }, { ns: string; ip: string }] {
  const [a, b] = rec.hostList;
  if (!a || !b) throw new Error('the benchmark lab needs two hosts');
  return [a, b];
}

/** Point-to-point kernel VXLAN between the two host namespaces (VNI 42, port 4789, MTU 1450). */
function handVxlan(rec: LabRecord): Reference {
  const [a, b] = hosts(rec);
  [[a, b], [b, a]].forEach(([me, peer], i) => {
    if (!me || !peer) return;
    ip(me.ns, ['link', 'add', 'hvx42', 'type', 'vxlan', 'id', '42', 'local', me.ip, 'remote', peer.ip, 'dstport', '4789', 'dev', 'eth0']);
    ip(me.ns, ['link', 'set', 'hvx42', 'mtu', '1450', 'up']);
    ip(me.ns, ['addr', 'add', `10.99.0.${i + 1}/24`, 'dev', 'hvx42']);
  });
  return { label: 'hand-built kernel vxlan host → host', serverNs: b.ns, clientNs: a.ns, target: '10.99.0.2' };
}

/** A namespace per host behind a bridge on 10.98.I.0/24, and a plain route to the other's via its underlay address. */
function handRoutes(rec: LabRecord, name: LabName): Reference {
  const hs = hosts(rec);
  const ends = hs.map((h, i) => {
    const c = addLabNamespace(name, `hr${i}`);
    ip(h.ns, ['link', 'add', 'hbr0', 'type', 'bridge']);
    ip(h.ns, ['addr', 'add', `10.98.${i}.1/24`, 'dev', 'hbr0']);
    ip(h.ns, ['link', 'set', 'hbr0', 'up']);
    ip(h.ns, ['link', 'add', 'hv0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.ns]);
    ip(h.ns, ['link', 'set', 'hv0', 'master', 'hbr0', 'up']);
    ip(c.ns, ['addr', 'add', `10.98.${i}.2/24`, 'dev', 'eth0']);
    ip(c.ns, ['link', 'set', 'eth0', 'up']);
    ip(c.ns, ['route', 'add', 'default', 'via', `10.98.${i}.1`]);
    return c.ns;
  });
  ip(hs[0].ns, ['route', 'add', '10.98.1.0/24', 'via', hs[1].ip]);
  ip(hs[1].ns, ['route', 'add', '10.98.0.0/24', 'via', hs[0].ip]);
  return { label: 'hand-built bridge + host routes', serverNs: ends[1] ?? '', clientNs: ends[0] ?? '', target: '10.98.1.2' };
}

/** A bridge-mode macvlan on each host's eth0, moved into its own namespace. */
function handMacvlan(rec: LabRecord, name: LabName): Reference {
  const ends = hosts(rec).map((h, i) => {
    const c = addLabNamespace(name, `hm${i}`);
    ip(h.ns, ['link', 'add', 'hmv0', 'link', 'eth0', 'type', 'macvlan', 'mode', 'bridge']);
    ip(h.ns, ['link', 'set', 'hmv0', 'netns', c.ns]);
    ip(c.ns, ['addr', 'add', `198.18.0.${90 + i}/24`, 'dev', 'hmv0']);
    ip(c.ns, ['link', 'set', 'hmv0', 'up']);
    return c.ns;
  });
  return { label: 'hand-built macvlan pair', serverNs: ends[1] ?? '', clientNs: ends[0] ?? '', target: '198.18.0.91' };
}

const REFERENCES: Record<string, (rec: LabRecord, name: LabName) => Reference> = {
  vxlan: handVxlan,
  'host-gw': handRoutes,
  udp: handVxlan,
  macvlan: handMacvlan,
};

interface Row { backend: string; weft: IperfResult; refLabel: string; ref: IperfResult; raw: IperfResult }

async function measure(backend: string): Promise<Row> {
  const spec = parseLabSpec({ name: LAB, backend, hosts: '2', pods: '1', store: 'file' });
  const rec = await labUp(spec);
  try {
    const a = rec.containers.find((c) => c.host === 0);
    const b = rec.containers.find((c) => c.host === 1);
    if (!a || !b || b.ip === undefined) throw new Error('lab has no container pair across hosts');
    const [h0, h1] = hosts(rec);
    const makeRef = REFERENCES[backend];
    if (!makeRef) throw new Error(`no hand-built reference for ${backend}`);
    const ref = makeRef(rec, LAB);
    const weft = await iperf(b.ns, a.ns, b.ip, SECONDS);
    const refResult = await iperf(ref.serverNs, ref.clientNs, ref.target, SECONDS);
    const raw = await iperf(h1.ns, h0.ns, h1.ip, SECONDS);
    return { backend, weft, refLabel: ref.label, ref: refResult, raw };
  } finally {
    await labDown(LAB);
  }
}

const f = (n: number) => n.toFixed(2);
const pct = (a: number, b: number) => (b > 0 ? `${((a / b) * 100).toFixed(0)} %` : '–');

export const benchmark: Benchmark = {
  name: 'dataplane',
  summary: 'iperf3 container → container across hosts per backend vs a hand-built kernel path of the same kind',
  async run(args) {
    const only = args.find((a) => a.startsWith('--backends='))?.slice('--backends='.length).split(',');
    const backends = only ?? ['vxlan', 'host-gw', 'udp', 'macvlan'];
    for (const b of backends) parseBackend(b);
    // A benchmark lab left by a crashed run is ours to remove.
    if (existsSync(LabDirs.of(LAB).root) || listNamedNetns().some((n) => n.startsWith(labNsPrefix(LAB)))) await labDown(LAB);
    const rows: Row[] = [];
    for (const b of backends) {
      process.stderr.write(`# dataplane: ${b}\n`);
      rows.push(await measure(b));
    }
    const lines = rows.map((r) => `| ${r.backend} | **${f(r.weft.gbps)}** | ${r.refLabel} | ${f(r.ref.gbps)} | **${pct(r.weft.gbps, r.ref.gbps)}** | ${f(r.raw.gbps)} | ${pct(r.weft.gbps, r.raw.gbps)} | ${r.weft.retransmits} / ${r.ref.retransmits} |`);
    return {
      markdown: `# dataplane: container → container across hosts, per backend

A lab of two hosts (namespaces on one underlay bridge, \`weftctl lab\`'s topology), one container per host
made through bin/cni as a runtime would. iperf3, one TCP stream, ${SECONDS} s, container on h0 → container on h1.
Next to it, in the same lab and the same run, a path of the same kind built by hand with iproute2:
a point-to-point kernel VXLAN between the two host namespaces (for vxlan, and for udp: the kernel's UDP
tunnel vs weft's userspace one), a bridged namespace per host reached through plain host routes
(host-gw), a pair of bridge-mode macvlans on the hosts' eth0 (macvlan); and the raw underlay (host eth0 →
switch → host eth0, no tunnel, no bridge on the hosts).

| backend | weft Gbit/s | hand-built reference | reference Gbit/s | weft / reference | raw underlay Gbit/s | weft / raw | retransmits weft / ref |
|---|---:|---|---:|---:|---:|---:|---:|
${lines.join('\n')}

All paths are veths inside one kernel: the numbers measure per-packet CPU cost on this machine
(2 cores shared with other work), not a NIC. Single runs; expect ±10 % between runs.`,
    };
  },
};

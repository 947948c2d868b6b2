// `lab check`: every container probes every other container (ICMP and TCP through its echo
// server) and the outside namespace (egress), from inside its own namespace, as a pod would —
// over each address family the lab has (a dual-stack lab probes every pair twice).
// In macvlan labs each host also probes its own containers: that fails by design without a shim
// (a macvlan master never sees its own macvlans' frames) and must pass with --macvlan-shim.
import { CniCode, WeftError } from '../errors.js';
import { ECHO_PORT } from './lab.js';
import { LAB_SCRIPT_DIR, execIn } from './exec.js';
import { mapLimit } from '../map-limit.js';
import type { ProbeLine, ProbeOutcome } from './probe.js';
import type { LabRecord } from './state.js';

export const OUTSIDE_TARGET = 'outside';

export interface CheckPair {
  readonly from: string;
  readonly to: string;
  readonly toIP: string;
  /** The address family probed. */
  readonly family: 4 | 6;
  readonly icmp: ProbeOutcome;
  readonly tcp: ProbeOutcome;
  /** Both ends on the same host (bridge only) or across the underlay. */
  readonly crossHost: boolean;
}

export interface HostProbe extends CheckPair {
  /** 'pass' with a macvlan shim, 'fail' without one (the known macvlan limitation). */
  readonly expected: 'pass' | 'fail';
  /** The outcome (ICMP and TCP alike) is the expected one. */
  readonly asExpected: boolean;
}

export interface CheckReport {
  readonly lab: string;
  readonly backend: string;
  readonly containers: ReadonlyArray<{ name: string; ip: string; ip6?: string; host: number }>;
  /** Container → container, every ordered pair. */
  readonly pairs: readonly CheckPair[];
  /** Container → outside namespace. */
  readonly egress: readonly CheckPair[];
  /** macvlan labs: host → each of its own containers, with the outcome the lab's shape implies. */
  readonly hostToOwn: readonly HostProbe[];
  readonly ok: boolean;
  readonly failures: number;
  readonly durationMs: number;
}

export async function labCheck(rec: LabRecord, opts: { count?: number } = {}): Promise<CheckReport> {
  const t0 = Date.now();
  const count = opts.count ?? 3;
  const containers = rec.containers.map((c) => {
    if (c.ip === undefined) throw new WeftError(CniCode.InvalidEnvironment, `container ${c.name} has no address (lab not fully up)`);
    return { name: c.name, ip: c.ip, ...(c.ip6 !== undefined && { ip6: c.ip6 }), host: c.host, ns: c.ns };
  });
  const addressesOf = (t: { ip: string; ip6?: string }): string[] => [t.ip, ...(t.ip6 !== undefined ? [t.ip6] : [])];
  const outside = rec.ipv6 === 'only' ? [rec.outsideIP6 ?? ''] : [rec.outsideIP ?? '', ...(rec.ipv6 === 'dual' ? [rec.outsideIP6 ?? ''] : [])];
  // Two probes at a time: each forks pings; more would only measure CPU contention on small machines.
  const lines = await mapLimit(containers, 2, async (c) => {
    const targets = [
      ...containers.filter((t) => t.name !== c.name).flatMap((t) => addressesOf(t).map((ip) => ({ name: t.name, ip }))),
      ...outside.map((ip) => ({ name: OUTSIDE_TARGET, ip })),
    ];
    const r = await execIn(c.ns, [process.execPath, `${LAB_SCRIPT_DIR}probe.js`, JSON.stringify({ targets, port: ECHO_PORT, count })], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new WeftError(CniCode.Internal, `probe from ${c.name} failed: ${r.stderr.trim()}`);
    return { from: c, results: JSON.parse(r.stdout) as ProbeLine[] };
  });
  const hostOf = new Map(containers.map((c) => [c.name, c.host]));
  const pairs: CheckPair[] = [];
  const egress: CheckPair[] = [];
  for (const { from, results } of lines) {
    for (const l of results) {
      const p: CheckPair = { from: from.name, to: l.target, toIP: l.ip, family: l.ip.includes(':') ? 6 : 4, icmp: l.icmp, tcp: l.tcp, crossHost: hostOf.get(l.target) !== from.host };
      (l.target === OUTSIDE_TARGET ? egress : pairs).push(p);
    }
  }
  const hostToOwn = rec.backend === 'macvlan' ? await probeOwnContainers(rec, containers, count) : [];
  const failures = [...pairs, ...egress].reduce((n, p) => n + (p.icmp.ok ? 0 : 1) + (p.tcp.ok ? 0 : 1), 0)
    + hostToOwn.reduce((n, p) => n + (p.asExpected ? 0 : 1), 0);
  return {
    lab: rec.name, backend: rec.backend,
    containers: containers.map(({ name, ip, ip6, host }) => ({ name, ip, ...(ip6 !== undefined && { ip6 }), host })),
    pairs, egress, hostToOwn, ok: failures === 0, failures, durationMs: Date.now() - t0,
  };
}

/** Each host → its own containers, from the host namespace (where a node's kubelet probes run). */
async function probeOwnContainers(rec: LabRecord, containers: ReadonlyArray<{ name: string; ip: string; host: number }>, count: number): Promise<HostProbe[]> {
  const expected = rec.macvlanShim === true ? 'pass' : 'fail';
  // Expected failures wait out their timeouts: one round trip is enough to show them.
  const n = expected === 'fail' ? 1 : count;
  const perHost = await mapLimit(rec.hostList, 2, async (h) => {
    const targets = containers.filter((c) => c.host === h.index).map((c) => ({ name: c.name, ip: c.ip }));
    const r = await execIn(h.ns, [process.execPath, `${LAB_SCRIPT_DIR}probe.js`, JSON.stringify({ targets, port: ECHO_PORT, count: n })], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new WeftError(CniCode.Internal, `probe from h${h.index} failed: ${r.stderr.trim()}`);
    return (JSON.parse(r.stdout) as ProbeLine[]).map((l): HostProbe => {
      const passed = l.icmp.ok && l.tcp.ok;
      const failed = !l.icmp.ok && !l.tcp.ok;
      return {
        from: `h${h.index}`, to: l.target, toIP: l.ip, family: 4, icmp: l.icmp, tcp: l.tcp, crossHost: false,
        expected, asExpected: expected === 'pass' ? passed : failed,
      };
    });
  });
  return perHost.flat();
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median RTTs (ms) over successful probes: same host, across hosts, egress. */
export function rttSummary(r: CheckReport): { sameHost?: number; crossHost?: number; egress?: number; tcpCrossHost?: number } {
  const icmp = (ps: readonly CheckPair[]) => ps.flatMap((p) => (p.icmp.ok && p.icmp.rttMs !== undefined ? [p.icmp.rttMs] : []));
  const tcp = (ps: readonly CheckPair[]) => ps.flatMap((p) => (p.tcp.ok && p.tcp.rttMs !== undefined ? [p.tcp.rttMs] : []));
  const out: { sameHost?: number; crossHost?: number; egress?: number; tcpCrossHost?: number } = {};
  const same = median(icmp(r.pairs.filter((p) => !p.crossHost)));
  const cross = median(icmp(r.pairs.filter((p) => p.crossHost)));
  const eg = median(icmp(r.egress));
  const tc = median(tcp(r.pairs.filter((p) => p.crossHost)));
  if (same !== undefined) out.sameHost = same;
  if (cross !== undefined) out.crossHost = cross;
  if (eg !== undefined) out.egress = eg;
  if (tc !== undefined) out.tcpCrossHost = tc;
  return out;
}

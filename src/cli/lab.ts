// weftctl lab: a whole multi-host weft cluster on one machine, out of network namespaces.
// up/status/check/bench/down act on one named lab; demo runs up → check → bench → down for each
// backend in turn and prints one summary table.
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { Progress } from './ui/progress.js';
import { DEFAULT_UI_ADDR } from '../ui/server.js';
import { labBackendNames, labBackend } from '../lab/backends.js';
import { labBench, type BenchReport } from '../lab/bench.js';
import { LAB_POD_NAMESPACE as LAB_NS } from '../lab/kube.js';
import { labCheck, rttSummary, type CheckReport } from '../lab/check.js';
import { LabInterruptedError, labDown, labStatus, labUp, requireUpLab } from '../lab/lab.js';
import { DEMO_POLICY_NAME, labPolicyCheck, type PolicyCheckReport } from '../lab/policy-check.js';
import { LabDirs } from '../lab/state.js';
import { LAB_NS_PREFIX, labNsPrefix, DEFAULT_LAB_NAME } from '../lab/naming.js';
import { listNamedNetns } from '../netns/index.js';
import { type Cell, gbps, ms, renderBench, renderCheck, renderStatus, table, useColour } from '../lab/render.js';
import { LabInputError, MAX_HOSTS, MAX_PODS, type LabSpec, parseBackend, parseLabSpec, parseName } from '../lab/spec.js';

const SUBCOMMANDS = ['up', 'status', 'check', 'bench', 'down', 'demo'] as const;
type Sub = (typeof SUBCOMMANDS)[number];
const DEMO_NAME = 'demo';

const help = () => `weftctl lab — a whole weft cluster on this machine, built from network namespaces

Usage:
  weftctl lab up     [--name NAME] [--hosts N] [--pods M] [--backend TYPE] [--store file|etcd|kube]
                     [--racks R] [--macvlan-shim] [--ipv6 dual|only]
  weftctl lab status [--name NAME] [--json]
  weftctl lab check  [--name NAME] [--json]
  weftctl lab bench  [--name NAME] [--seconds S] [--json]
  weftctl lab down   [--name NAME]
  weftctl lab demo   [--name NAME] [--hosts N] [--pods M] [--backend TYPE]… [--store file|etcd|kube]
                     [--seconds S]

up      an underlay namespace holding a bridge (the switch), N host namespaces on it
        (198.18.0.1…/24), an "outside" namespace (198.18.0.254) for egress, weftd on every host
        (its log under the state dir), M containers per host added through bin/cni exactly as a
        runtime would (a conflist in the lab's own net.d, CNI_PATH=bin/cni), and a TCP echo
        server in each container. With --store etcd the lab runs its own etcd (in "outside");
        with --store kube a real etcd + kube-apiserver there, one Node per host (podCIDRs handed
        out as kube-controller-manager does) and every container a Pod bound to its host.
status  what the lab is made of and whether its processes still run (multi-rack: BIRD's sessions)
check   every container → every other container (ICMP and TCP) and → outside (egress), with
        round-trip times; exit 1 if any probe failed
bench   iperf3 container → container across hosts, next to the raw underlay path
        Ctrl-C (SIGINT) or SIGTERM during up removes what it has built so far, the same way a
        failed up does, and exits 130 (SIGINT) or 143 (SIGTERM)
down    removes everything the lab made — processes, namespaces (and every link in them), state
        — also after a crash or kill -9 of the lab or of any weftd
demo    for each backend in turn: up, check, a short bench, down; one summary table. --backend
        picks the backends (repeat it or give a comma list; --backends is the same; default: all,
        then dual and kube), --store the store every up uses (default file). The row "dual" is
        vxlan with --ipv6 dual (every probe over both families, the bench over IPv6). The row "kube" is vxlan on
        the kube store (a real kube-apiserver): after the check it applies a NetworkPolicy with
        kubectl (pods on h1 take connections only from pods on h0) and probes every container
        pair against the policy evaluator's verdict, instead of the bench

--name NAME       lab name: 1–16 of a-z 0-9 _ (default ${DEFAULT_LAB_NAME}; demo: ${DEMO_NAME}); its namespaces
                  are ${LAB_NS_PREFIX}-NAME-*, its state /run/weft-lab/NAME (WEFT_LAB_ROOT moves it)
--hosts N         hosts, 1..${MAX_HOSTS} (default 3)
--pods M          containers per host, 1..${MAX_PODS} (default 2)
--backend TYPE    ${labBackendNames().join(' | ')} (default vxlan)
${labBackendNames().map((n) => `                    ${n.padEnd(8)} ${labBackend(n)?.summary ?? ''}`).join('\n')}
--store S         file (embedded file store in the state dir, default) | etcd | kube (the
                  Kubernetes API; weftd on the weft ServiceAccount of deploy/kubernetes/weft.yaml)
--racks R         spread the hosts over R L2 segments (198.18.<rack>.0/24, a switch each), joined
                  by a router namespace running BIRD 2 as route reflector for every host, with
                  "outside" (198.19.0.254) behind it; 1..${MAX_HOSTS}, at most --hosts (default 1: one
                  segment). Only bgp can span racks; host-gw needs one segment and is refused
--macvlan-shim    macvlan only: a macvlan shim (weft-shim) on every host, with an address kept out
                  of IPAM and a route to its containers, so a host reaches its own containers
                  (a macvlan master never can); check then expects host → own container to pass
--ipv6 dual|only  IPv6 pods: dual gives every container an IPv4 and an IPv6 address (network
                  fd10:244::/56, a /64 per host) over a dual-stack underlay (2001:2::/64 beside
                  198.18.0.0/24); only leaves IPv4 out of the pods and the hosts' underlay; check
                  then probes every family. Every backend; not with --racks or --macvlan-shim,
                  and only dual with --store kube (its API server is on the IPv4 underlay)
--seconds S       iperf3 duration for bench (default 2) and demo (default 1)
--json            machine-readable output (status, check, bench)

Never touches the machine's own network namespace. Exit: 0 ok, 1 failure, 2 bad usage.
`;

const options = {
  name: { type: 'string' },
  hosts: { type: 'string' },
  pods: { type: 'string' },
  backend: { type: 'string', multiple: true },
  /** demo: an alias of --backend (a comma list), kept for existing scripts. */
  backends: { type: 'string', multiple: true },
  store: { type: 'string' },
  seconds: { type: 'string' },
  json: { type: 'boolean', default: false },
  racks: { type: 'string' },
  'macvlan-shim': { type: 'boolean', default: false },
  ipv6: { type: 'string' },
} as const;

/** Flags each subcommand accepts (others are a usage error, not silently ignored). */
const ALLOWED: Record<Sub, ReadonlyArray<keyof typeof options>> = {
  up: ['name', 'hosts', 'pods', 'backend', 'store', 'racks', 'macvlan-shim', 'ipv6'],
  status: ['name', 'json'],
  check: ['name', 'json'],
  bench: ['name', 'seconds', 'json'],
  down: ['name'],
  demo: ['name', 'hosts', 'pods', 'backend', 'backends', 'store', 'seconds'],
};

function seconds(raw: string | undefined, dflt: number): number {
  if (raw === undefined) return dflt;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 60) throw new LabInputError(`--seconds: expected 1..60, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/** Steps `up` reports for this spec (the demo's step counter counts them). */
function upSteps(spec: LabSpec): number {
  const agent = spec.backend.networkConfig() !== undefined;
  // In kube mode the network config is a file written with the Nodes, not a step of its own.
  return 1 + (spec.racks > 1 ? 1 : 0) + (spec.macvlanShim ? 1 : 0) + (agent && spec.store !== 'file' ? 1 : 0) + (agent ? (spec.store === 'kube' ? 2 : 3) : 0) + 2;
}

function out(s: string): void {
  process.stdout.write(s);
}

/** The shell's convention for "killed by signal N": what an interrupted `up` exits with. */
const SIGNAL_EXIT = { SIGINT: 130, SIGTERM: 143 } as const;
type UpSignal = keyof typeof SIGNAL_EXIT;

async function up(spec: LabSpec): Promise<number> {
  const progress = new Progress(upSteps(spec));
  // Ctrl-C or SIGTERM mid-build: stop at the next step boundary and take the failed-up path, so
  // no half-built lab is left for `down`. A second signal does not cut that removal short.
  const interrupt = new AbortController();
  const onSignal = (sig: UpSignal): void => {
    if (interrupt.signal.aborted) {
      process.stderr.write(`\nweftctl lab up: still removing lab ${spec.name}; kill -9 leaves it for: weftctl lab down --name ${spec.name}\n`);
      return;
    }
    process.stderr.write(`\nweftctl lab up: ${sig}: removing what lab ${spec.name} has built so far…\n`);
    interrupt.abort(sig);
  };
  const handlers = (Object.keys(SIGNAL_EXIT) as UpSignal[]).map((sig) => [sig, () => onSignal(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  try {
    await labUp(spec, (what) => progress.next(what), interrupt.signal);
    progress.done();
  } catch (err) {
    progress.fail();
    if (err instanceof LabInterruptedError) {
      process.stderr.write(`weftctl lab up: ${err.message}\n`);
      return SIGNAL_EXIT[err.reason as UpSignal] ?? ExitCode.Failure;
    }
    throw err;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
  out('\n' + renderStatus(labStatus(spec.name), useColour()));
  out(`\nnext: weftctl lab check --name ${spec.name}   ·   weftctl lab bench --name ${spec.name}   ·   weftctl lab down --name ${spec.name}\n`);
  out(`see it: weftctl ui --lab ${spec.name}   (a live web view on http://${DEFAULT_UI_ADDR}/)\n`);
  return ExitCode.Ok;
}

interface DemoRow {
  backend: string;
  upSeconds?: number;
  check?: CheckReport;
  bench?: BenchReport;
  /** The kube row: the NetworkPolicy step. */
  policy?: PolicyCheckReport;
  down?: boolean;
  error?: string;
}

/**
 * The demo's row for Kubernetes mode: vxlan on the kube store, with the policy step in place of
 * the bench (its dataplane is the vxlan row's).
 */
const KUBE_ROW = 'kube';
/** The demo's dual-stack row: vxlan with --ipv6 dual, probed over both families, benched over IPv6. */
const DUAL_ROW = 'dual';

/** --backend values (each may be a comma list); undefined when none was given. */
function backendList(given: readonly string[] | undefined): string[] | undefined {
  if (given === undefined) return undefined;
  const names = given.flatMap((v) => v.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) throw new LabInputError('--backend: empty list');
  return names;
}

interface DemoBase {
  readonly name?: string | undefined;
  readonly hosts?: string | undefined;
  readonly pods?: string | undefined;
  readonly store?: string | undefined;
}

async function demo(base: DemoBase, backends: readonly string[] | undefined, benchSeconds: number): Promise<number> {
  const names = backends ?? [...labBackendNames(), DUAL_ROW, KUBE_ROW];
  const runs = names.map((b) => {
    const kube = b === KUBE_ROW;
    const dual = b === DUAL_ROW;
    if (!kube && !dual) parseBackend(b);
    return {
      row: b, kube,
      spec: parseLabSpec({
        ...base, name: base.name ?? DEMO_NAME, backend: kube || dual ? 'vxlan' : b, store: kube ? 'kube' : base.store ?? 'file',
        ...(dual && { ipv6: 'dual' }),
      }),
    };
  });
  const first = runs[0]?.spec;
  if (!first) throw new LabInputError('--backend: empty list');
  const colour = useColour();
  const progress = new Progress(runs.reduce((n, r) => n + upSteps(r.spec) + 3, 0) + 1);
  const t0 = Date.now();
  const rows: DemoRow[] = [];
  const plain = runs.filter((r) => !r.kube).map((r) => r.row);
  const kubeToo = runs.some((r) => r.kube);
  const dualToo = runs.some((r) => r.spec.ipv6 === 'dual');
  out(`weft lab demo: ${first.hosts} hosts × ${first.pods} containers, ${plain.length > 0 ? `backends ${plain.join(', ')}, ${base.store ?? 'file'} store` : ''}`
    + `${kubeToo ? `${plain.length > 0 ? ', then ' : ''}kube (vxlan on a kube-apiserver, with a NetworkPolicy)` : ''}\n\n`);
  for (const { row: rowName, kube, spec } of runs) {
    const row: DemoRow = { backend: rowName };
    rows.push(row);
    const tag = rowName;
    const stepsBefore = upSteps(spec) + 3;
    let taken = 0;
    const step = (what: string) => { taken++; progress.next(`${tag}: ${what}`); };
    let isUp = false;
    try {
      const tu = Date.now();
      await labUp(spec, step);
      isUp = true;
      row.upSeconds = (Date.now() - tu) / 1000;
      step('check: every container → every container and outside, ICMP + TCP');
      const rec = requireUpLab(spec.name);
      row.check = await labCheck(rec);
      if (kube) {
        step(`policy: kubectl apply NetworkPolicy ${DEMO_POLICY_NAME} (pods on h1 take connections only from pods on h0), probe every pair`);
        row.policy = await labPolicyCheck(rec);
      } else {
        const family = spec.ipv6 === undefined ? 4 : 6;
        step(`bench: iperf3 across hosts (${benchSeconds} s) and the raw underlay${family === 6 ? ', over IPv6' : ''}`);
        row.bench = await labBench(rec, benchSeconds, family);
      }
    } catch (err) {
      row.error = (err as Error).message;
    }
    // Keep the counter honest when a step was skipped by a failure.
    while (taken < stepsBefore - 1) step('skipped after a failure');
    step('down: processes, namespaces, state');
    try {
      if (isUp || existsSync(LabDirs.of(spec.name).root)) await labDown(spec.name);
      row.down = true;
    } catch (err) {
      row.down = false;
      row.error = `${row.error ? `${row.error}; ` : ''}down: ${(err as Error).message}`;
    }
  }
  progress.next('verifying nothing is left (namespaces, processes, state)');
  const leftNs = listNamedNetns().filter((n) => n.startsWith(labNsPrefix(first.name)));
  const leftDir = existsSync(LabDirs.of(first.name).root);
  const clean = leftNs.length === 0 && !leftDir;
  if (clean) progress.done(); else progress.fail();

  const ok = (c: boolean, text: string): Cell => ({ text, tone: c ? 'ok' : 'bad' });
  const tableRows = rows.map((r) => {
    const c = r.check;
    const count = (ps: readonly CheckReport['pairs'][number][], k: 'icmp' | 'tcp') => `${ps.filter((p) => p[k].ok).length}/${ps.length}`;
    const s = c ? rttSummary(c) : {};
    const all = c?.pairs ?? [];
    return [
      r.backend,
      r.upSeconds !== undefined ? `${r.upSeconds.toFixed(1)} s` : ok(false, 'FAILED'),
      c ? ok(all.every((p) => p.icmp.ok), count(all, 'icmp')) : '–',
      c ? ok(all.every((p) => p.tcp.ok), count(all, 'tcp')) : '–',
      c ? ok(c.egress.every((p) => p.icmp.ok && p.tcp.ok), `${c.egress.filter((p) => p.icmp.ok && p.tcp.ok).length}/${c.egress.length}`) : '–',
      `${ms(s.crossHost)} / ${ms(s.tcpCrossHost)}`,
      r.bench ? gbps(r.bench.pod.result.gbps) : '–',
      r.bench ? gbps(r.bench.raw.result.gbps) : '–',
      r.bench ? `${(r.bench.ratio * 100).toFixed(0)} %` : '–',
      r.down === undefined ? '–' : ok(r.down, r.down ? 'clean' : 'FAILED'),
      ...(kubeToo ? [policyCell(r.policy)] : []),
    ];
  });
  out('\n' + table(['backend', 'up', 'ICMP', 'TCP', 'egress', 'RTT ms (icmp/tcp)', 'pod Gbit/s', 'raw Gbit/s', 'pod/raw', 'down', ...(kubeToo ? ['policy'] : [])], tableRows, colour));
  out('\nICMP/TCP: container pairs that answered (all ordered pairs, same host and across hosts); egress: containers\n'
    + 'reaching the "outside" namespace (ICMP and TCP); RTT: median across hosts; Gbit/s: iperf3, one stream,\n'
    + `container on h0 → container on h1, and host h0 → h1 over the bare underlay.\n`
    + (dualToo ? `${DUAL_ROW}: vxlan with every container dual-stack (10.244.0.0/16 and fd10:244::/56, IPv6 over weft-v6.1 on an IPv6\n`
      + 'underlay beside IPv4 over weft.1); ICMP/TCP/egress count both families; its bench runs over IPv6.\n' : '')
    + (kubeToo ? 'kube: vxlan with every weftd reading a real kube-apiserver (Nodes, Pods, NetworkPolicies); no bench (vxlan\'s\n'
      + `dataplane). policy: after the check, kubectl applies NetworkPolicy ${LAB_NS}/${DEMO_POLICY_NAME} (pods on h1 take connections\n`
      + 'only from pods on h0); container pairs blocked / allowed, each answering ICMP and TCP as the policy evaluator says.\n' : ''));
  for (const r of rows) if (r.error) out(`\n${r.backend}: ${r.error}\n`);
  for (const r of rows) {
    const wrong = r.policy?.pairs.filter((p) => p.observed.icmp !== p.expected.icmp || p.observed.tcp !== p.expected.tcp) ?? [];
    const word = (b: boolean) => (b ? 'open' : 'blocked');
    if (wrong.length > 0) out(`\n${r.backend}: ${r.policy?.policy} — not as the evaluator says:\n${wrong.map((p) => `  ${p.from} → ${p.to}: ICMP ${word(p.observed.icmp)}, TCP ${word(p.observed.tcp)}; expected ICMP ${word(p.expected.icmp)}, TCP ${word(p.expected.tcp)}`).join('\n')}\n`);
  }
  const kubeRowsOk = rows.every((r, i) => !runs[i]?.kube || r.policy?.ok === true);
  const passed = clean && kubeRowsOk && rows.every((r) => !r.error && r.check?.ok === true && r.down === true);
  out(`\n${passed ? 'demo passed' : 'demo FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${clean ? 'nothing left behind' : `LEFT BEHIND: ${[...leftNs, ...(leftDir ? [LabDirs.of(first.name).root] : [])].join(', ')}`}\n`);
  return passed ? ExitCode.Ok : ExitCode.Failure;
}

/** The kube row's policy column: pairs blocked / allowed, or how many came out wrong. */
function policyCell(p: PolicyCheckReport | undefined): Cell | string {
  if (p === undefined) return '–';
  if (p.ok) return { text: `${p.expectedBlocked} blocked / ${p.expectedAllowed} allowed, as expected`, tone: 'ok' };
  return { text: `${p.wrong} of ${p.pairs.length} pairs WRONG`, tone: 'bad' };
}

export const labCommand: CliCommand = {
  name: 'lab',
  summary: 'a multi-host weft cluster on this machine (up, status, check, bench, down, demo)',
  get help() { return help(); },
  async run(argv) {
    const [sub, ...rest] = argv;
    if (!sub || !(SUBCOMMANDS as readonly string[]).includes(sub)) {
      throw new UsageError(`expected one of ${SUBCOMMANDS.join(', ')}${sub ? `, got ${JSON.stringify(sub)}` : ''}`);
    }
    const command = sub as Sub;
    let values: {
      [K in keyof typeof options]?: (typeof options)[K] extends { type: 'boolean' } ? boolean : (typeof options)[K] extends { multiple: true } ? string[] : string;
    };
    try {
      ({ values } = parseArgs({ args: rest, options, allowPositionals: false, strict: true }));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    for (const k of Object.keys(values) as Array<keyof typeof options>) {
      if ((k === 'json' || k === 'macvlan-shim') && values[k] === false) continue;
      if (!ALLOWED[command].includes(k)) throw new UsageError(`--${k} does not apply to lab ${command}`);
    }
    try {
      const colour = useColour();
      switch (command) {
        case 'up':
          if ((values.backend?.length ?? 0) > 1) throw new UsageError('--backend: lab up takes one backend (lab demo takes several)');
          return await up(parseLabSpec({
            name: values.name, hosts: values.hosts, pods: values.pods, backend: values.backend?.[0], store: values.store,
            racks: values.racks, macvlanShim: values['macvlan-shim'], ipv6: values.ipv6,
          }));
        case 'status': {
          const s = labStatus(parseName(values.name));
          out(values.json ? JSON.stringify({ name: s.name, stateDir: s.stateDir, healthy: s.healthy, namespaces: s.namespaces, processes: s.processes, ...(s.bird && { bird: s.bird }), lab: s.record ?? null }, null, 2) + '\n' : renderStatus(s, colour));
          return s.healthy ? ExitCode.Ok : ExitCode.Failure;
        }
        case 'check': {
          const r = await labCheck(requireUpLab(parseName(values.name)));
          out(values.json ? JSON.stringify(r, null, 2) + '\n' : renderCheck(r, colour));
          return r.ok ? ExitCode.Ok : ExitCode.Failure;
        }
        case 'bench': {
          const secs = seconds(values.seconds, 2);
          const b = await labBench(requireUpLab(parseName(values.name)), secs);
          out(values.json ? JSON.stringify(b, null, 2) + '\n' : renderBench(b, colour));
          return ExitCode.Ok;
        }
        case 'down': {
          const name = parseName(values.name);
          const r = await labDown(name);
          out(`lab ${name} removed: ${r.namespaces.length} namespace(s), ${r.killed} process(es)${r.stateDir ? `, ${r.stateDir}` : ''}\n`);
          return ExitCode.Ok;
        }
        case 'demo':
          return await demo(
            { name: values.name, hosts: values.hosts, pods: values.pods, store: values.store },
            backendList(values.backend === undefined && values.backends === undefined ? undefined : [...values.backend ?? [], ...values.backends ?? []]),
            seconds(values.seconds, 1),
          );
      }
    } catch (err) {
      if (err instanceof LabInputError) throw new UsageError(err.message);
      throw err;
    }
  },
};

export default labCommand;

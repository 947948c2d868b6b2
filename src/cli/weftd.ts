// weftd: the node agent. Flags (each also as env WEFTD_<FLAG>) → an Agent; SIGTERM/SIGINT stop
// it keeping the dataplane and the lease, so a restart (even after SIGKILL) changes nothing.
import { parseArgs } from 'node:util';
import { Agent } from '../agent/agent.js';
import { cniServerService } from '../agent/cni-server.js';
import { policyServiceStarter } from '../agent/policy-service.js';
import { flowServiceStarter } from '../agent/flow-service.js';
import { trafficMetricsStarter } from '../agent/traffic-metrics.js';
import { EndpointChanges, endpointRecordDir } from '../policy/endpoint-record.js';
import { DEFAULT_DENY_LOG_GROUP } from '../policy/compile.js';
import { openKeyValueStore } from '../store/kv.js';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { defaultCniSocket } from '../cni/fastpath-client.js';
import { WeftError } from '../errors.js';
import { DEFAULT_SUBNET_FILE } from '../cni/subnet-env.js';
import { parseHostPort } from '../agent/http.js';
import { UNIX_PATH_MAX } from '../agent/unix-socket.js';
import { checkStoredConfigSupported } from './weftd-config-check.js';
import { createLogger } from '../log.js';
import { explainParseError } from '../suggest.js';
import { weftVersion } from '../version.js';
import { openStore, storeFlagOptions, storeFlagsHelp, storeSettingsFrom, type StoreSettings } from '../store/flags.js';
import type { SubnetStore } from '../store/types.js';
import { ExitCode, UsageError } from './command.js';

const options = {
  ...storeFlagOptions,
  iface: { type: 'string' },
  'public-ip': { type: 'string' },
  'public-ipv6': { type: 'string' },
  'subnet-file': { type: 'string' },
  'ip-masq': { type: 'boolean' },
  'no-ip-masq': { type: 'boolean' },
  'conntrack-bypass': { type: 'boolean' },
  'no-conntrack-bypass': { type: 'boolean' },
  'health-addr': { type: 'string' },
  'api-socket': { type: 'string' },
  'node-name': { type: 'string' },
  'repair-interval': { type: 'string' },
  'lease-ttl': { type: 'string' },
  'cni-socket': { type: 'string' },
  'flow-log-group': { type: 'string' },
  'flow-records': { type: 'string' },
  'flow-log': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

const DEFAULT_FLOW_RECORDS = 10_000;

const HELP = `weftd — weft's node agent: leases this host's pod subnet, writes subnet.env, and programs
routes, tunnels and traffic rules so pods on every host reach each other.

Usage: weftd [FLAGS]   (weftd --version prints the version)

Flags (each also as env WEFTD_<FLAG>, e.g. WEFTD_IFACE=eth0, WEFTD_IP_MASQ=true; a flag beats
its env value). On/off flags take --FLAG, --no-FLAG or --FLAG=true|false (also 1/0, yes/no):
  --iface NAME|IP          public interface (name, or one of its addresses); default: the
                           interface of the default route
  --public-ip IP           address published to other hosts (default: the interface's first)
  --public-ipv6 IP         IPv6 address published to other hosts when the network config has
                           EnableIPv6 (default: the interface's first global IPv6 address)
  --subnet-file PATH       where subnet.env is written (default ${DEFAULT_SUBNET_FILE})
  --ip-masq                masquerade pod traffic leaving the cluster network (default off)
  --health-addr HOST:PORT  serve weftd's HTTP endpoints here (default: off); :PORT without a
                           host listens on all addresses (0.0.0.0), so a Prometheus elsewhere
                           can scrape it; 127.0.0.1:PORT keeps it local. Endpoints: /healthz,
                           /readyz (200 once ready, JSON details), /metrics (Prometheus;
                           also per-pod and per-peer traffic, README: Traffic metrics),
                           /peers (JSON: the peer subnets this host's dataplane has programmed
                           and those it skipped, with why), /policy/counters (JSON: packets and
                           bytes NetworkPolicy allowed and denied here, per policy and pod),
                           /traffic (JSON: bytes and packets to and from each peer), /flows
                           (JSON: flow records, ?after=SEQ&verdict=dropped) and
                           /<backend>/status (bgp); every JSON one carries an ETag
  --api-socket PATH        serve the same endpoints on this unix socket too (mode 0600; a
                           stale socket is replaced, the file removed when weftd stops). A
                           unix socket is reachable from every network namespace, so tools
                           can ask a weftd running in another one; with or without
                           --health-addr (default: off)
  --node-name NAME         this node's name: with --store kube its Node object (default the
                           hostname, as the kubelet's); names this host's endpoints in policy
  --repair-interval SECS   period of the repair pass (default 5, at most 10)
  --lease-ttl SECS         lease TTL (default 86400)
  --cni-socket PATH|off    serve the weft CNI plugin's fast path on this unix socket (default
                           cni.sock next to the subnet file; announced in subnet.env as
                           WEFT_CNI_SOCKET). PATH.lock claims it for weftd's life: a second
                           weftd given the same path exits naming the owner's PID
  --conntrack-bypass       while no NetworkPolicy exists, pod-to-pod traffic skips connection
                           tracking (table inet weft-notrack; faster forwarding). Replies of
                           connections DNATed to a pod (ClusterIPs, hostPorts) stay tracked,
                           learnt as they pass. Default off: on this kind of machine its
                           rules cost more per packet than conntrack does (bench dataplane);
                           --no-conntrack-bypass (or WEFTD_CONNTRACK_BYPASS=false) keeps it off
  --flow-log-group N       NFLOG group that packets denied by a NetworkPolicy are logged to
                           (at most 100 a second per host; prefix
                           weft-deny:<direction>:<ns>/<policy>[,…]); weftd reads it for its flow
                           records (a group has one reader: with --flow-records 0 another NFLOG
                           reader may take it); 0 turns the log off (default ${DEFAULT_DENY_LOG_GROUP})
  --flow-records N         keep the last N flow records (connections between pods and to the
                           outside, forwarded or dropped by policy) from conntrack events and
                           the policy's NFLOG group, served at /flows (weftctl flows); turns on
                           conntrack accounting and timestamps in this namespace, and puts a
                           ct rule in inet weft so connections are tracked even without
                           --ip-masq or policies. Pod-to-pod traffic --conntrack-bypass leaves
                           untracked has no records (default ${DEFAULT_FLOW_RECORDS}; 0 = off)
  --flow-log PATH          also append every completed flow record to PATH as a JSON line
                           (for log shippers; default: off)
${storeFlagsHelp}

The network config (Network, SubnetLen, Backend …) is read from the store (weftctl config set),
or with --store kube from --net-config (the weft-config ConfigMap's net-conf.json).
Exit: 0 after SIGTERM/SIGINT, also during start-up (dataplane and lease kept), 1 on a fatal
error (including a network config weftd cannot serve, e.g. EnableIPv6 on an IPv4-only backend, and the own lease
removed or taken over by another writer), 2 on bad flags or flag env values (also a path under
/proc or /sys for --subnet-file, --cni-socket, --api-socket or --store-dir).
`;

type Values = { [K in keyof typeof options]?: (typeof options)[K]['type'] extends 'boolean' ? boolean : string };

function envOr(values: Values, flag: keyof typeof options, env: NodeJS.ProcessEnv): string | undefined {
  const v = values[flag];
  if (typeof v === 'string') return v;
  const e = env[`WEFTD_${flag.toUpperCase().replace(/-/g, '_')}`];
  return e === undefined || e === '' ? undefined : e;
}

/** The on/off flags and their defaults; each also takes --no-FLAG and --FLAG=VALUE. */
const BOOLEAN_FLAGS = { 'ip-masq': false, 'conntrack-bypass': false } as const;
type BooleanFlag = keyof typeof BOOLEAN_FLAGS;

function parseBool(v: string): boolean | undefined {
  if (/^(1|true|yes)$/i.test(v)) return true;
  if (/^(0|false|no)$/i.test(v)) return false;
  return undefined;
}

/**
 * parseArgs takes no value on a boolean option: `--FLAG=VALUE` of an on/off flag becomes
 * `--FLAG` or `--no-FLAG` before it parses (a bad VALUE is a UsageError naming the flag).
 */
function normalizeBooleanArgs(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (const [i, arg] of argv.entries()) {
    if (arg === '--') return [...out, ...argv.slice(i)];
    const m = /^--([a-z-]+)=(.*)$/s.exec(arg);
    if (!m || !(m[1]! in BOOLEAN_FLAGS)) {
      out.push(arg);
      continue;
    }
    const v = parseBool(m[2]!);
    if (v === undefined) throw new UsageError(`--${m[1]}: expected true or false, got ${JSON.stringify(m[2])}`);
    out.push(v ? `--${m[1]}` : `--no-${m[1]}`);
  }
  return out;
}

/** An on/off flag: --FLAG / --no-FLAG, else WEFTD_<FLAG> (true|false, 1|0, yes|no), else its default. */
function boolEnv(values: Values, flag: BooleanFlag, env: NodeJS.ProcessEnv): boolean {
  const on = values[flag] === true;
  const off = values[`no-${flag}`] === true;
  if (on && off) throw new UsageError(`--${flag} and --no-${flag} contradict each other`);
  if (on || off) return on;
  const name = `WEFTD_${flag.toUpperCase().replace(/-/g, '_')}`;
  const e = env[name];
  if (e === undefined || e === '') return BOOLEAN_FLAGS[flag];
  const v = parseBool(e);
  if (v === undefined) throw new UsageError(`${name}: expected true or false, got ${JSON.stringify(e)}`);
  return v;
}

function seconds(flag: string, v: string | undefined, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0 || n > max) throw new UsageError(`--${flag}: expected seconds in (0, ${max}], got ${JSON.stringify(v)}`);
  return n;
}

/**
 * A path weftd makes files under. /proc and /sys are the kernel's: nothing can be created there
 * (and Node's recursive mkdir once retried /proc/nope/x for ever at full CPU), so they are a
 * flag error before anything starts.
 */
function writablePath(flag: string, path: string): string {
  const top = resolve(path).split('/')[1];
  if (top === 'proc' || top === 'sys') {
    throw new UsageError(`--${flag} ${path}: under /${top}, the kernel's own filesystem, where weftd cannot create files`);
  }
  return path;
}

/** How long the store may take to answer the first config read before weftd gives up. */
const STORE_TIMEOUT_MS = 10_000;

interface WeftdFlags {
  readonly settings: StoreSettings;
  readonly subnetFile: string;
  readonly cniSocket: string;
  readonly ipMasq: boolean;
  readonly conntrackBypass: boolean;
  readonly nodeName: string | undefined;
  readonly repair: number | undefined;
  readonly ttl: number | undefined;
  readonly iface: string | undefined;
  readonly publicIP: string | undefined;
  readonly publicIPv6: string | undefined;
  readonly healthAddr: string | undefined;
  readonly apiSocket: string | undefined;
  readonly flowRecords: number;
  readonly flowLog: string | undefined;
  readonly flowLogGroup: number;
}

/** An NFLOG group number (nft takes 0-65535; 0 here means no log). */
function logGroup(v: string | undefined): number {
  if (v === undefined) return DEFAULT_DENY_LOG_GROUP;
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(n >= 0 && n <= 65535)) throw new UsageError(`--flow-log-group: expected an NFLOG group 0-65535 (0: off), got ${JSON.stringify(v)}`);
  return n;
}

/** Flags and their WEFTD_* env values, checked; any bad value is a UsageError (exit 2). */
function weftdFlags(values: Values, env: NodeJS.ProcessEnv): WeftdFlags {
  let settings: StoreSettings;
  try {
    settings = storeSettingsFrom(values, env);
  } catch (err) {
    // Every complaint storeSettingsFrom has is about a flag or its env value.
    if (err instanceof WeftError) throw new UsageError(err.message);
    throw err;
  }
  const healthAddr = envOr(values, 'health-addr', env);
  if (healthAddr !== undefined) {
    try {
      parseHostPort(healthAddr);
    } catch (err) {
      throw new UsageError(err instanceof Error ? err.message : String(err));
    }
  }
  const subnetFile = writablePath('subnet-file', envOr(values, 'subnet-file', env) ?? DEFAULT_SUBNET_FILE);
  const apiSocket = envOr(values, 'api-socket', env);
  if (apiSocket !== undefined) {
    writablePath('api-socket', apiSocket);
    if (Buffer.byteLength(apiSocket) > UNIX_PATH_MAX) throw new UsageError(`--api-socket ${apiSocket}: too long for a unix socket (${Buffer.byteLength(apiSocket)} bytes; at most ${UNIX_PATH_MAX})`);
  }
  const cniSocket = envOr(values, 'cni-socket', env) ?? defaultCniSocket(subnetFile);
  if (cniSocket !== 'off') writablePath('cni-socket', cniSocket);
  if (settings.type === 'file') writablePath('store-dir', settings.dir);
  return {
    settings,
    subnetFile,
    cniSocket,
    ipMasq: boolEnv(values, 'ip-masq', env),
    conntrackBypass: boolEnv(values, 'conntrack-bypass', env),
    nodeName: envOr(values, 'node-name', env),
    repair: seconds('repair-interval', envOr(values, 'repair-interval', env), 10),
    ttl: seconds('lease-ttl', envOr(values, 'lease-ttl', env), 10 * 365 * 86400),
    iface: envOr(values, 'iface', env),
    publicIP: envOr(values, 'public-ip', env),
    publicIPv6: envOr(values, 'public-ipv6', env),
    healthAddr,
    apiSocket,
    flowRecords: count('flow-records', envOr(values, 'flow-records', env), DEFAULT_FLOW_RECORDS, 1_000_000),
    flowLog: flowLogPath(envOr(values, 'flow-log', env)),
    flowLogGroup: logGroup(envOr(values, 'flow-log-group', env)),
  };
}

function count(flag: string, v: string | undefined, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) > max) throw new UsageError(`--${flag}: expected 0..${max}, got ${JSON.stringify(v)}`);
  return Number(v);
}

function flowLogPath(v: string | undefined): string | undefined {
  return v === undefined ? undefined : writablePath('flow-log', v);
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values: Values;
  try {
    values = parseArgs({ args: normalizeBooleanArgs(argv), options, strict: true, allowPositionals: false }).values as Values;
  } catch (err) {
    process.stderr.write(`weftd: ${explainParseError((err as Error).message, Object.keys(options))}\n(see weftd --help)\n`);
    return ExitCode.Usage;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return ExitCode.Ok;
  }
  if (values.version) {
    process.stdout.write(`weftd ${weftVersion()} (node ${process.version})\n`);
    return ExitCode.Ok;
  }
  let flags: WeftdFlags;
  try {
    flags = weftdFlags(values, env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`weftd: ${err.message}\n(see weftd --help)\n`);
    return ExitCode.Usage;
  }
  const { nodeName, repair, ttl, iface, publicIP, publicIPv6, healthAddr, apiSocket, subnetFile } = flags;
  // In kube mode the node name picks this host's Node; the kubelet's default is the hostname.
  const settings: StoreSettings = flags.settings.type === 'kube' ? { ...flags.settings, nodeName: nodeName ?? hostname().toLowerCase() } : flags.settings;
  const log = createLogger({ component: 'weftd', ...(nodeName !== undefined && { node: nodeName }) });
  // Installed before anything that can wait: a signal during start-up ends weftd as well. (It
  // used to be logged and then ignored while start-up waited on the store or a file system.)
  let onSignal!: (signal: NodeJS.Signals) => void;
  const signalled = new Promise<NodeJS.Signals>((resolve) => { onSignal = resolve; });
  // `on`, not `once`: a repeated signal (timeout(1) signals the child and then its process
  // group, so weftd may get SIGTERM twice) must not hit the default action — death with 143 —
  // while the first one's orderly stop runs. The first resolves `signalled`; later ones are no-ops.
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const untilSignal = <T>(p: Promise<T>): Promise<StartStep<T>> => Promise.race([
    p.then((value) => ({ type: 'done', value } as const)),
    signalled.then((signal) => ({ type: 'signal', signal } as const)),
  ]);
  let agent: Agent | undefined;
  let store: SubnetStore | undefined;
  // Start-up may be stuck waiting (a store that does not answer, a lock held elsewhere): tear down
  // what exists, within bounds, and leave; main's exit ends whatever is still pending.
  const interrupted = async (signal: NodeJS.Signals): Promise<number> => {
    log.info('stopping during start-up; dataplane and lease are kept', { signal });
    await bounded(agent?.stop({ keepDataplane: true }), 5000);
    await bounded(store?.close(), 2000);
    return ExitCode.Ok;
  };
  try {
    const o = await untilSignal(openStore(settings));
    if (o.type === 'signal') return await interrupted(o.signal);
    const opened = o.value;
    store = opened;
    const checked = await untilSignal(checkStoredConfigSupported(opened, STORE_TIMEOUT_MS));
    if (checked.type === 'signal') return await interrupted(checked.signal);
    const a = new Agent({
      store: opened,
      subnetFile,
      ipMasq: flags.ipMasq,
      ...(flags.flowRecords > 0 && { trackConnections: true }),
      ...(iface !== undefined && { iface }),
      ...(publicIP !== undefined && { publicIP }),
      ...(publicIPv6 !== undefined && { publicIPv6 }),
      ...(healthAddr !== undefined && { healthAddr }),
      ...(apiSocket !== undefined && { apiSocket }),
      ...(nodeName !== undefined && { nodeName }),
      ...(repair !== undefined && { repairIntervalMs: repair * 1000 }),
      ...(ttl !== undefined && { leaseTtlSeconds: Math.round(ttl) }),
      storeTimeoutMs: STORE_TIMEOUT_MS,
      log,
    });
    agent = a;
    // The CNI server's plugins tell the policy service of each ADD/DEL through this agent's own
    // channel. Policy starts first so the fast path's first ADD already waits for enforcement.
    const endpointChanges = new EndpointChanges();
    a.addService('policy', policyServiceStarter(() => openKeyValueStore(settings), nodeName ?? hostname(), endpointRecordDir(subnetFile), endpointChanges, repair !== undefined ? repair * 1000 : undefined, flags.conntrackBypass, settings.type === 'kube', flags.flowLogGroup));
    if (flags.flowRecords > 0) {
      if (flags.conntrackBypass) log.warn('--conntrack-bypass leaves pod-to-pod traffic untracked while no NetworkPolicy exists: those connections get no flow records');
      a.addService('flows', flowServiceStarter(() => openKeyValueStore(settings), nodeName ?? hostname(), {
        capacity: flags.flowRecords, logGroup: flags.flowLogGroup, ...(flags.flowLog !== undefined && { exportFile: flags.flowLog }),
      }));
    }
    if (flags.cniSocket !== 'off') a.addService('cni-server', cniServerService(flags.cniSocket, endpointChanges.announce));
    // Per-pod and per-peer traffic on /metrics, read from the kernel's counters on scrape.
    a.addService('traffic-metrics', trafficMetricsStarter(endpointRecordDir(subnetFile)));
    const fatal = new Promise<WeftError>((resolve) => a.onFatal(resolve));
    const started = await untilSignal(a.start());
    if (started.type === 'signal') return await interrupted(started.signal);
    const end = await Promise.race([
      signalled.then((signal) => ({ type: 'signal', signal } as const)),
      fatal.then((error) => ({ type: 'fatal', error } as const)),
    ]);
    if (end.type === 'signal') log.info('stopping; dataplane and lease are kept', { signal: end.signal });
    else log.error('fatal', { error: end.error.message });
    try {
      await a.stop({ keepDataplane: true });
      await opened.close();
    } catch {
      return ExitCode.Failure;
    }
    return end.type === 'signal' ? ExitCode.Ok : ExitCode.Failure;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    log.error('weftd cannot start', { error: msg });
    process.stderr.write(`weftd: ${msg}\n`);
    await bounded(agent?.stop({ keepDataplane: true }), 5000);
    await bounded(store?.close(), 2000);
    return ExitCode.Failure;
  }
}

/** A start-up step's end: done, or cut short by a signal. */
type StartStep<T> = { readonly type: 'done'; readonly value: T } | { readonly type: 'signal'; readonly signal: NodeJS.Signals };

/** Waits for `p` (errors ignored) at most `ms`. */
async function bounded(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!p) return;
  let t: NodeJS.Timeout | undefined;
  await Promise.race([p.catch(() => {}), new Promise((r) => { t = setTimeout(r, ms); })]);
  clearTimeout(t);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; process.exit(code); },
  (err: unknown) => {
    process.stderr.write(`weftd: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(ExitCode.Failure);
  },
);

// weftctl ui: the web view. Follows a store (a lab's, or the one the store flags name), asks the
// weftds it can reach what they have programmed, and serves a live page of hosts, links, BGP
// sessions, pods and policies, with doctor's path check between two pods (src/ui).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { CliCommand } from './command.js';
import { parseCommandArgs } from './args.js';
import { ExitCode, UsageError } from './command.js';
import { DEFAULT_SUBNET_FILE, readLeasedSubnet } from '../cni/subnet-env.js';
import { DEFAULT_CACHE_DIR } from './cni.js';
import { healthAddr, DEFAULT_HEALTH_ADDR } from './weftd-http.js';
import { parseHostPort } from '../agent/http.js';
import { CniCode, WeftError } from '../errors.js';
import { formatCidr, formatIP } from '../net/ip.js';
import { openStore, storeFlagOptions, storeFlagsHelp, storeFlagText, storeSettingsFrom, type StoreSettings } from '../store/flags.js';
import { openKeyValueStore } from '../store/kv.js';
import { parseLabName } from '../lab/naming.js';
import { LabDirs, type LabRecord } from '../lab/state.js';
import { labStore } from '../lab/lab-store.js';
import { cleanEnv, WEFTCTL_BIN } from '../lab/exec.js';
import { labTopology, nodeTopology, type Topology } from '../doctor/locate.js';
import type { AgentTarget } from '../ui/agents.js';
import { doctorFor } from '../ui/doctor.js';
import { ModelFeed } from '../ui/feed.js';
import type { UiModel } from '../ui/model.js';
import { DEFAULT_UI_ADDR, serverUrl, startUiServer } from '../ui/server.js';

const INSIDE_ENV = 'WEFT_UI_IN_LAB_HOST';
/** The host the proxy in front of an in-lab view listens on: the view's Host check accepts it. */
const PUBLIC_HOST_ENV = 'WEFT_UI_PUBLIC_HOST';

const help = `weftctl ui — a live web view of the network: hosts, subnets, links, BGP, pods, policies

Usage:
  weftctl ui --lab NAME [--listen HOST:PORT]
  weftctl ui [store flags] [--listen HOST:PORT] [--agent-port N] [--health-addr A] [--subnet-file F]

Serves a page (open the URL it prints) that draws every host holding a lease — its subnet and
public IP — and the link between each pair of hosts: ok (both ends have programmed each other),
one-sided (one has; the other's weftd is down or lacks it), broken (no end that could be asked
has it) or unknown (no end can be asked, or only one, which has it); BGP sessions with their
state and prefix counts; the pods of each host with their labels; and each NetworkPolicy with
the pods it selects. It follows the store's watches and asks the weftds every --interval, so a
change shows within about a second, without reloading (a weftd that does not answer is asked
less and less often, every 8 s at most). Click two pods to run doctor's path check (weftctl
doctor) between them: the page lists every hop and marks the first broken one. Read-only.

--lab NAME          a lab made by weftctl lab up: its store, and every host's weftd through its
                    --api-socket (etcd and kube labs: the view runs inside host 0, where the store
                    is, behind a proxy on --listen)
--listen HOST:PORT  where the page is served (default ${DEFAULT_UI_ADDR}); loopback unless you say
                    otherwise — the page shows the cluster's addresses and pods to whoever reaches it
--agent-port N      also ask every lease's weftd at PUBLIC-IP:N (weftd --health-addr 0.0.0.0:N);
                    without it only this node's weftd is asked and other hosts' ends show unknown
--health-addr A     this node's weftd (default: env WEFTD_HEALTH_ADDR, else ${DEFAULT_HEALTH_ADDR})
--subnet-file F     this node's subnet.env (default ${DEFAULT_SUBNET_FILE}): which lease is this node's
--interval MS       how often the weftds are asked (default 1000)

${storeFlagsHelp}
`;

function readSubnetOf(file: string): string | undefined {
  try {
    const subnet = readLeasedSubnet(file);
    return subnet ? formatCidr(subnet) : undefined;
  } catch {
    return undefined; // being rewritten, or not weftd's: the agent's own answer names its subnet
  }
}

/** Every lab host's weftd, through the socket it serves beside its state. */
function labAgents(rec: LabRecord): () => AgentTarget[] {
  const dirs = LabDirs.of(parseLabName(rec.name));
  return () => rec.hostList.map((h) => {
    const subnet = readSubnetOf(dirs.subnetFile(h.index));
    return { addr: `unix:${dirs.apiSocket(h.index)}`, name: `h${h.index}`, ...(subnet !== undefined && { subnet }) };
  });
}

/** This node's weftd, and with --agent-port every other lease's. */
function nodeAgents(local: string, subnetFile: string, agentPort: number | undefined): (leases: ReturnType<ModelFeed['storeView']>['leases']) => AgentTarget[] {
  return (leases) => {
    const subnet = readSubnetOf(subnetFile);
    const own: AgentTarget = { addr: local, ...(subnet !== undefined && { subnet }) };
    if (agentPort === undefined) return [own];
    const others = leases.filter((l) => formatCidr(l.subnet) !== subnet).map((l): AgentTarget => {
      const ip = formatIP(l.attrs.publicIP);
      return { addr: `${l.attrs.publicIP.family === 6 ? `[${ip}]` : ip}:${agentPort}`, subnet: formatCidr(l.subnet) };
    });
    return [own, ...others];
  };
}

function positiveInt(raw: string | undefined, flag: string, max: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= 1 && n <= max)) throw new UsageError(`--${flag}: expected 1-${max}, got ${JSON.stringify(raw)}`);
  return n;
}

/** Until SIGINT or SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => { process.off('SIGINT', on); process.off('SIGTERM', on); resolve(sig); };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

async function serve(settings: StoreSettings, source: UiModel['source'], listen: string, agents: ConstructorParameters<typeof ModelFeed>[0]['agents'],
  topology: () => Promise<Topology>, storeFlags: string, intervalMs: number | undefined): Promise<number> {
  const store = await openStore(settings, { create: false });
  const kv = await openKeyValueStore(settings, { create: false }).catch(async (err: unknown) => { await store.close(); throw err; });
  const feed = new ModelFeed({ store, kv, source, agents, ...(intervalMs !== undefined && { intervalMs }) });
  try {
    await feed.start();
    const publicHost = process.env[INSIDE_ENV] === '1' ? process.env[PUBLIC_HOST_ENV] : undefined;
    const server = await startUiServer({ listen, feed, doctor: doctorFor(feed, topology, storeFlags), ...(publicHost && { publicHost }) });
    process.stdout.write(`weft ui: ${server.url} (${source.label}); Ctrl-C stops it\n`);
    await untilSignal();
    await server.close();
    return ExitCode.Ok;
  } finally {
    await feed.close();
    await kv.close().catch(() => {});
    await store.close().catch(() => {});
  }
}

/**
 * An etcd or kube lab's store is reachable from its hosts only: the view runs in host 0 on a
 * unix socket (reachable from every namespace) and this process forwards --listen to it.
 */
async function serveFromLabHost(rec: LabRecord, argv: string[], listen: string): Promise<number> {
  const host0 = rec.hostList[0];
  if (!host0) throw new WeftError(CniCode.InvalidEnvironment, `lab ${rec.name} has no hosts`);
  const dirs = LabDirs.of(parseLabName(rec.name));
  // One socket per view: two views of one lab must not take each other's.
  const sock = `${dirs.root}/ui-${process.pid}.sock`;
  rmSync(sock, { force: true });
  const { host, port } = parseHostPort(listen);
  const inner = [...argv.filter((a, i) => a !== '--listen' && argv[i - 1] !== '--listen'), '--listen', `unix:${sock}`];
  const child: ChildProcess = spawn('ip', ['netns', 'exec', host0.ns, WEFTCTL_BIN, 'ui', ...inner], {
    stdio: ['ignore', 'ignore', 'inherit'], env: cleanEnv({ [INSIDE_ENV]: '1', [PUBLIC_HOST_ENV]: host }),
  });
  const exited = new Promise<number>((resolve) => {
    child.on('error', (err) => { process.stderr.write(`weftctl ui: cannot start the view inside ${host0.ns}: ${err.message}\n`); resolve(ExitCode.Failure); });
    child.on('close', (code) => resolve(code ?? ExitCode.Failure));
  });
  const conns = new Set<Socket>();
  let proxy: Server | undefined;
  try {
    for (let waited = 0; !existsSync(sock); waited += 100) {
      if (child.exitCode !== null || child.signalCode !== null || waited > 30_000) throw new WeftError(CniCode.InvalidEnvironment, `the view inside ${host0.ns} did not start (its errors are above)`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const server = createServer((c) => {
      const up = connect(sock);
      conns.add(c);
      conns.add(up);
      c.pipe(up).pipe(c);
      const drop = () => { c.destroy(); up.destroy(); conns.delete(c); conns.delete(up); };
      c.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
    });
    proxy = server;
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, () => resolve()); });
    process.stdout.write(`weft ui: ${serverUrl(server, listen)} (lab ${rec.name}, ${rec.backend}, ${rec.store} store, served from ${host0.ns}); Ctrl-C stops it\n`);
    const how = await Promise.race([untilSignal().then(() => 'signal' as const), exited.then(() => 'child' as const)]);
    return how === 'child' ? ExitCode.Failure : ExitCode.Ok;
  } finally {
    // Open pages hold their event streams: cut them, or close() would wait for them forever.
    for (const c of conns) c.destroy();
    await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(sock, { force: true });
  }
}

export const uiCommand: CliCommand = {
  name: 'ui',
  summary: 'a live web view: hosts, subnets, links, BGP sessions, pods, policies; doctor between two pods',
  help,
  async run(argv) {
    const { values: v } = parseCommandArgs(argv, {
      ...storeFlagOptions,
      lab: { type: 'string' },
      listen: { type: 'string' },
      'agent-port': { type: 'string' },
      'health-addr': { type: 'string' },
      'subnet-file': { type: 'string' },
      interval: { type: 'string' },
    } as const, 0);
    const listen = v.listen ?? DEFAULT_UI_ADDR;
    if (!listen.startsWith('unix:') && !/^(?:\[[^\]]+\]|[^:]*):\d{1,5}$/.test(listen)) throw new UsageError(`--listen: expected HOST:PORT (e.g. ${DEFAULT_UI_ADDR}), got ${JSON.stringify(listen)}`);
    const intervalMs = positiveInt(v.interval, 'interval', 60_000);
    if (v.lab !== undefined) {
      const local = ['agent-port', 'health-addr', 'subnet-file', ...Object.keys(storeFlagOptions)].filter((k) => (v as Record<string, unknown>)[k] !== undefined);
      if (local.length > 0) throw new UsageError(`--lab takes the store and the weftds from the lab; drop --${local.join(', --')}`);
      const { requireUpLab } = await import('../lab/lab.js');
      const rec = requireUpLab(parseLabName(v.lab));
      if (rec.store !== 'file' && process.env[INSIDE_ENV] !== '1') return serveFromLabHost(rec, argv, listen);
      const store = labStore(rec);
      return serve(store.settings, { label: `lab ${rec.name} (${rec.backend})`, store: rec.store }, listen, labAgents(rec),
        async () => labTopology(rec), store.flags, intervalMs);
    }
    const settings = storeSettingsFrom(v);
    const subnetFile = v['subnet-file'] ?? process.env.WEFTD_SUBNET_FILE ?? DEFAULT_SUBNET_FILE;
    const local = healthAddr(v['health-addr']);
    const where = settings.type === 'file' ? settings.dir : settings.type === 'etcd' ? settings.endpoints.join(',') : 'the Kubernetes API';
    return serve(settings, { label: `${settings.type} store ${where}`, store: settings.type }, listen,
      nodeAgents(local, subnetFile, positiveInt(v['agent-port'], 'agent-port', 65535)),
      () => nodeTopology({ subnetFile, cacheDir: DEFAULT_CACHE_DIR, nodeName: undefined, healthAddr: v['health-addr'] }),
      storeFlagText(v),
      intervalMs);
  },
};

// `weftctl status`: this node at a glance, as `calicoctl node status` gives it — what weftd says
// about itself (/readyz), what it wrote for the plugins (subnet.env), what the kernel holds
// (weft's routes), whether the CNI fast path answers, and BGP sessions on the bgp backend. Each
// source is read on its own, so a weftd that is down still leaves the rest to look at.
import { connect } from 'node:net';
import type { CliCommand } from './command.js';
import { ExitCode } from './command.js';
import { parseCommandArgs } from './args.js';
import { fetchBgpStatus, formatUptime, type BgpStatusDoc } from './bgp.js';
import { DEFAULT_HEALTH_ADDR, healthAddr, weftdGet } from './weftd-http.js';
import { DEFAULT_SUBNET_FILE, loadSubnetEnv, type SubnetEnv } from '../cni/subnet-env.js';
import { WEFT_BGP_ROUTE_PROTOCOL, WEFT_ROUTE_PROTOCOL } from '../dataplane/protocols.js';
import { Netlink, type Route } from '../netlink/index.js';
import { cidrContains, cidrEquals, formatCidr, formatIP, networkOf, type Cidr, type IP } from '../net/ip.js';
import { WeftError } from '../errors.js';
import { renderTable } from '../text-table.js';

const help = `weftctl status — the local node: lease, backend, peers, repairs, policy, CNI fast path, store

Usage: weftctl status [--addr HOST:PORT] [--subnet-file PATH] [--json]

--addr HOST:PORT     weftd's --health-addr (default: env WEFTD_HEALTH_ADDR, else ${DEFAULT_HEALTH_ADDR})
--subnet-file PATH   the subnet.env weftd writes (default ${DEFAULT_SUBNET_FILE})
--json               everything as one JSON document

Reads weftd's /readyz (and /bgp/status on the bgp backend), the subnet file, the kernel's routes
in this network namespace (weft's: proto ${WEFT_ROUTE_PROTOCOL}, BGP-learned: proto ${WEFT_BGP_ROUTE_PROTOCOL}) and tries the CNI
fast-path socket. Run it on the host (or, in a lab, inside the host's namespace). Exit 0 when
weftd is ready, 1 otherwise.
`;

/** What /readyz says, loosely: weftd's own document, shown as it is. */
interface Readyz {
  readonly ready?: boolean;
  readonly phase?: string;
  readonly lease?: { status?: string; subnet?: string; reason?: string };
  readonly store?: { status?: string; reason?: string };
  readonly watch?: { type?: string; reason?: string };
  readonly backend?: string | null;
  readonly publicIP?: string;
  readonly publicIPv6?: string;
  readonly publicIface?: string;
  readonly mtu?: number;
  readonly peers?: number;
  readonly problems?: readonly string[];
  readonly rules?: boolean;
  readonly reconcileError?: string;
  readonly lastReconcile?: { at?: number | string; repairs?: number; removals?: number };
  readonly services?: Record<string, { ready?: boolean; details?: Record<string, unknown> }>;
}

export interface NodeStatus {
  readonly weftd: { readonly reachable: true; readonly addr: string; readonly readyz: Readyz } | { readonly reachable: false; readonly addr: string; readonly reason: string };
  readonly subnetFile: { readonly path: string; readonly env?: SubnetEnv; readonly error?: string };
  readonly kernel: {
    readonly weftRoutes: number; readonly bgpRoutes: number; readonly peerSubnetsRouted: number;
    /** Dual-stack: peers' IPv6 subnets routed, beside peerSubnetsRouted's IPv4 ones. */
    readonly peerIPv6SubnetsRouted?: number;
  } | { readonly error: string };
  readonly cniFastPath: { readonly socket: string | null; readonly answering: boolean; readonly reason?: string };
  readonly bgp?: { readonly ok: true; readonly doc: BgpStatusDoc } | { readonly ok: false; readonly error: string };
}

async function readReadyz(addr: string): Promise<NodeStatus['weftd']> {
  try {
    // 503 still carries the document: it says why weftd is not ready.
    const r = await weftdGet(addr, '/readyz');
    return { reachable: true, addr, readyz: JSON.parse(r.body) as Readyz };
  } catch (err) {
    return { reachable: false, addr, reason: WeftError.wrap(err).message };
  }
}

async function readSubnetFile(path: string): Promise<NodeStatus['subnetFile']> {
  try {
    return { path, env: await loadSubnetEnv(path) };
  } catch (err) {
    return { path, error: WeftError.wrap(err).message };
  }
}

/** weft's routes in this namespace; those to other subnets of the cluster are the peers programmed. */
function readKernel(env: SubnetEnv | undefined): NodeStatus['kernel'] {
  let nl: Netlink | undefined;
  try {
    nl = Netlink.open();
    const handle = nl;
    const v6only = env?.network === undefined && env?.ipv6Network !== undefined;
    // Each family against its own cluster network and own subnet (a dual-stack peer has a route of each).
    const peersOf = (family: 4 | 6): { ours: Route[]; peers: number } => {
      const network = family === 4 ? env?.network : env?.ipv6Network;
      const subnet = family === 4 ? env?.subnet : env?.ipv6Subnet;
      if ((family === 6 && network === undefined) || (family === 4 && v6only)) return { ours: [], peers: 0 };
      const own = subnet ? networkOf(subnet) : undefined;
      const ours = handle.listRoutes({ family }).filter((r) => r.protocol === WEFT_ROUTE_PROTOCOL || r.protocol === WEFT_BGP_ROUTE_PROTOCOL);
      const toPeers = ours.filter((r) => (network === undefined || cidrContains(network, r.dst.ip))
        && !(own !== undefined && cidrEquals(r.dst, own)) && r.dst.prefix > (network?.prefix ?? 0));
      return { ours, peers: new Set(toPeers.map((r) => formatCidr(r.dst))).size };
    };
    const v4 = peersOf(4);
    const v6 = peersOf(6);
    const ours = [...v4.ours, ...v6.ours];
    return {
      weftRoutes: ours.filter((r) => r.protocol === WEFT_ROUTE_PROTOCOL).length,
      bgpRoutes: ours.filter((r) => r.protocol === WEFT_BGP_ROUTE_PROTOCOL).length,
      // The lease's family: IPv4, or IPv6 on an IPv6-only node.
      peerSubnetsRouted: v6only ? v6.peers : v4.peers,
      ...(env?.network !== undefined && env.ipv6Network !== undefined && { peerIPv6SubnetsRouted: v6.peers }),
    };
  } catch (err) {
    return { error: WeftError.wrap(err).message };
  } finally {
    nl?.close();
  }
}


function probeSocket(path: string | undefined, timeoutMs = 2000): Promise<NodeStatus['cniFastPath']> {
  if (path === undefined) return Promise.resolve({ socket: null, answering: false, reason: 'subnet.env names no WEFT_CNI_SOCKET' });
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (r: NodeStatus['cniFastPath']) => { clearTimeout(timer); s.destroy(); resolve(r); };
    const timer = setTimeout(() => done({ socket: path, answering: false, reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
    s.once('connect', () => done({ socket: path, answering: true }));
    s.once('error', (err) => done({ socket: path, answering: false, reason: err.message }));
  });
}

export async function nodeStatus(addr: string, subnetFile: string): Promise<NodeStatus> {
  const [weftd, file] = await Promise.all([readReadyz(addr), readSubnetFile(subnetFile)]);
  const kernel = readKernel(file.env);
  const cniFastPath = await probeSocket(file.env?.cniSocket);
  const backend = weftd.reachable ? weftd.readyz.backend : file.env?.backend;
  let bgp: NodeStatus['bgp'];
  if (backend === 'bgp' && weftd.reachable) {
    bgp = await fetchBgpStatus(addr).then(
      (doc) => ({ ok: true as const, doc }),
      (err: unknown) => ({ ok: false as const, error: WeftError.wrap(err).message }),
    );
  }
  return { weftd, subnetFile: file, kernel, cniFastPath, ...(bgp !== undefined && { bgp }) };
}

function ago(at: number | string | undefined, now = Date.now()): string {
  if (at === undefined) return '';
  const t = typeof at === 'number' ? at : Date.parse(at);
  if (!Number.isFinite(t)) return '';
  return `${formatUptime(Math.max(0, Math.round((now - t) / 1000)))} ago`;
}

/** Two columns, the way `calicoctl node status` and `kubectl describe` lay out one object. */
export function renderNodeStatus(s: NodeStatus): string {
  const rows: Array<[string, string]> = [];
  const r = s.weftd.reachable ? s.weftd.readyz : undefined;
  if (s.weftd.reachable) {
    rows.push(['weftd', `${r?.ready ? 'ready' : 'NOT READY'} (${r?.phase ?? '?'}) at ${s.weftd.addr}`]);
  } else {
    rows.push(['weftd', `UNREACHABLE at ${s.weftd.addr}: ${s.weftd.reason}`]);
  }
  const env = s.subnetFile.env;
  const lease = r?.lease;
  rows.push(['subnet', lease?.subnet
    ? `${lease.subnet} (${lease.status ?? '?'}${lease.reason ? `: ${lease.reason}` : ''})`
    : lease ? `none (${lease.status ?? '?'}${lease.reason ? `: ${lease.reason}` : ''})` : env?.subnet ? `${formatCidr(networkOf(env.subnet))} (from subnet.env)` : '-']);
  if (env?.ipv6Subnet && env.subnet) rows.push(['IPv6 subnet', `${formatCidr(networkOf(env.ipv6Subnet))} (from subnet.env)`]);
  rows.push(['network', [env?.network, env?.ipv6Network].flatMap((c) => (c ? [formatCidr(c)] : [])).join(' ') || '-']);
  rows.push(['backend', `${r?.backend ?? env?.backend ?? '-'}${env ? `, MTU ${r?.mtu ?? env.mtu}` : ''}${env ? `, ipMasq ${env.ipMasq ? 'on' : 'off'}` : ''}`]);
  rows.push(['public IP', r?.publicIP ? `${r.publicIP}${r.publicIPv6 && r.publicIPv6 !== r.publicIP ? ` ${r.publicIPv6}` : ''}${r.publicIface ? ` on ${r.publicIface}` : ''}` : '-']);
  const leases = r?.peers;
  const k = s.kernel;
  const routed = 'error' in k ? `kernel: ${k.error}` : (r?.backend ?? env?.backend) === 'udp' ? 'routed in userspace (udp)' : `${k.peerSubnetsRouted} routed in the kernel${k.peerIPv6SubnetsRouted !== undefined ? ` (${k.peerIPv6SubnetsRouted} over IPv6)` : ''}`;
  rows.push(['peers', `${leases ?? '?'} leases, ${routed}`]);
  const last = r?.lastReconcile;
  rows.push(['last repair', last ? `${ago(last.at)}: ${last.repairs ?? 0} written, ${last.removals ?? 0} removed${r?.reconcileError ? `; ERROR ${r.reconcileError}` : ''}` : r?.reconcileError ? `ERROR ${r.reconcileError}` : '-']);
  if (r?.problems && r.problems.length > 0) rows.push(['problems', r.problems.join('; ')]);
  rows.push(['store', r?.store ? `${r.store.status ?? '?'}${r.store.reason ? `: ${r.store.reason}` : ''}${r.watch?.type && r.watch.type !== 'ready' ? ` (watch ${r.watch.type}${r.watch.reason ? `: ${r.watch.reason}` : ''})` : ''}` : '-']);
  rows.push(['traffic rules', r?.rules === undefined ? '-' : r.rules ? 'in place' : 'NOT in place']);
  const policy = r?.services?.policy;
  const pd = policy?.details as { type?: string; policies?: number; endpoints?: number; skipped?: number; reason?: string } | undefined;
  rows.push(['policy', !pd ? 'service not running' : pd.type === 'enforcing'
    ? `enforcing ${pd.policies ?? '?'} policies; ${pd.endpoints ?? '?'} pods known to policy${pd.skipped ? ` (${pd.skipped} objects skipped)` : ''}`
    : `${pd.type ?? '?'}${pd.reason ? `: ${pd.reason}` : ''}`]);
  const cni = s.cniFastPath;
  rows.push(['CNI fast path', cni.answering ? `up (${cni.socket})` : `down${cni.socket ? ` (${cni.socket})` : ''}: ${cni.reason ?? '?'}; plugins work standalone`]);
  if (s.subnetFile.error) rows.push(['subnet file', `${s.subnetFile.path}: ${s.subnetFile.error}`]);
  if (s.bgp) {
    if (!s.bgp.ok) rows.push(['bgp', s.bgp.error]);
    else {
      const b = s.bgp.doc;
      const est = b.sessions.filter((x) => x.state === 'Established').length;
      rows.push(['bgp', `AS ${b.asn}, ${est}/${b.sessions.length} sessions Established, ${b.learnedRoutes} routes learned, ${b.kernelRoutes} in the kernel`]);
      for (const x of b.sessions) rows.push(['', `${x.peer} AS ${x.asn} ${x.state} ${formatUptime(x.uptimeSeconds)} rx ${x.prefixesReceived} tx ${x.prefixesSent}`]);
    }
  }
  return renderTable([], rows);
}

/** Addresses and prefixes (bigint inside) as their text, for --json. */
function jsonValue(_key: string, v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return typeof v === 'bigint' ? v.toString() : v;
  const o = v as { family?: unknown; value?: unknown; ip?: unknown; prefix?: unknown };
  if ((o.family === 4 || o.family === 6) && typeof o.value === 'bigint') return formatIP(v as IP);
  if (typeof o.prefix === 'number' && typeof o.ip === 'object') return formatCidr(v as Cidr);
  return v;
}

export const statusCommand: CliCommand = {
  name: 'status',
  summary: 'this node: lease, backend, peers, last repair, policy, CNI fast path, store (like calicoctl node status)',
  help,
  async run(argv) {
    const { values } = parseCommandArgs(argv, { addr: { type: 'string' }, 'subnet-file': { type: 'string' }, json: { type: 'boolean' } } as const, 0);
    const addr = healthAddr(values.addr);
    const s = await nodeStatus(addr, values['subnet-file'] ?? process.env.WEFTD_SUBNET_FILE ?? DEFAULT_SUBNET_FILE);
    process.stdout.write(values.json ? JSON.stringify(s, jsonValue, 2) + '\n' : renderNodeStatus(s));
    return s.weftd.reachable && s.weftd.readyz.ready === true ? ExitCode.Ok : ExitCode.Failure;
  },
};

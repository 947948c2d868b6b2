// weftctl bgp status: the BGP sessions of the weftd on this host, read from weftd's health
// endpoint (/bgp/status, JSON) — the same address as weftd's --health-addr.
import { renderTable } from '../text-table.js';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { DEFAULT_HEALTH_ADDR, healthAddr, weftdGet } from './weftd-http.js';


const help = `weftctl bgp — the BGP backend of the weftd on this host

Usage:
  weftctl bgp status [--addr HOST:PORT] [--json]

status    one line per BGP session: PEER, ASN, TYPE (ibgp/ebgp), ORIGIN (node = another host
          from the store, configured = Backend.Peers), STATE, UPTIME, RECEIVED and SENT prefixes,
          STALE routes kept over a peer's restart; then the routes learned and in the kernel
          (proto 88). Exit 0 when every session is Established, 1 otherwise.
          --json prints weftd's document as is: {"asn","routerId","subnet","reflector",
          "clusterId","importRanges","restartingUntil","learnedRoutes","kernelRoutes","sessions":
          [{"peer","asn","state","uptimeSeconds","prefixesReceived","prefixesRejected",
          "prefixesSent","staleRoutes","gracefulRestart","updatesReceived","updatesSent","origin"}]}
          (prefixesRejected: received but refused by the import policy, see Backend.ImportPrefixes)

How it reaches weftd: HTTP GET http://ADDR/bgp/status, where ADDR is weftd's --health-addr
(--addr, else env WEFTD_HEALTH_ADDR, else ${DEFAULT_HEALTH_ADDR}). Run it where weftd's health
address is reachable (on the host, or inside the host's network namespace in a lab).
`;

const sessionSchema = z.object({
  peer: z.string(),
  asn: z.number(),
  state: z.string(),
  uptimeSeconds: z.number(),
  prefixesReceived: z.number(),
  prefixesSent: z.number(),
  staleRoutes: z.number(),
  gracefulRestart: z.boolean(),
  updatesReceived: z.number(),
  updatesSent: z.number(),
  origin: z.enum(['node', 'configured']),
}).passthrough();

export const bgpStatusSchema = z.object({
  asn: z.number(),
  routerId: z.string(),
  subnet: z.string().nullable(),
  reflector: z.boolean(),
  clusterId: z.string().nullable(),
  restartingUntil: z.string().nullable(),
  learnedRoutes: z.number(),
  kernelRoutes: z.number(),
  sessions: z.array(sessionSchema),
}).passthrough();
export type BgpStatusDoc = z.infer<typeof bgpStatusSchema>;


export async function fetchBgpStatus(addr: string): Promise<BgpStatusDoc> {
  const r = await weftdGet(addr, '/bgp/status');
  if (r.status === 404) throw new WeftError(CniCode.InvalidNetworkConfig, `weftd at ${addr} has no BGP status: its backend is not bgp, or it is still starting`);
  if (r.status !== 200) throw new WeftError(CniCode.Internal, `weftd at ${addr} answered ${r.status} for /bgp/status`);
  let json: unknown;
  try {
    json = JSON.parse(r.body);
  } catch {
    throw new WeftError(CniCode.DecodeFailure, `weftd at ${addr}: /bgp/status is not JSON`);
  }
  const parsed = bgpStatusSchema.safeParse(json);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    throw new WeftError(CniCode.DecodeFailure, `weftd at ${addr}: /bgp/status: ${i?.path.join('.') ?? ''}: ${i?.message ?? 'unexpected shape'}`);
  }
  return parsed.data;
}

export function formatUptime(s: number): string {
  if (s <= 0) return '-';
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${sec}s`;
  return `${sec}s`;
}

export function renderBgpStatus(doc: BgpStatusDoc): string {
  const head = ['PEER', 'ASN', 'TYPE', 'ORIGIN', 'STATE', 'UPTIME', 'RECEIVED', 'SENT', 'STALE'];
  const rows = doc.sessions.map((s) => [s.peer, String(s.asn), s.asn === doc.asn ? 'ibgp' : 'ebgp', s.origin, s.state,
    formatUptime(s.uptimeSeconds), String(s.prefixesReceived), String(s.prefixesSent), String(s.staleRoutes)]);
  const top = `router ${doc.routerId}, AS ${doc.asn}, announcing ${doc.subnet ?? '(nothing yet)'}`
    + (doc.reflector ? `, route reflector (cluster id ${doc.clusterId ?? doc.routerId})` : '')
    + (doc.restartingUntil ? `, restarting until ${doc.restartingUntil}` : '');
  const lines = [top, '', renderTable(head, rows).trimEnd(), '', `routes learned: ${doc.learnedRoutes}, in the kernel: ${doc.kernelRoutes}`];
  if (doc.sessions.length === 0) lines.splice(2, 1, '(no BGP peers)');
  return lines.join('\n') + '\n';
}

export const bgpCommand: CliCommand = {
  name: 'bgp',
  summary: 'BGP sessions of the local weftd (bgp backend): state, uptime, prefixes',
  help,
  async run(argv) {
    const [sub, ...rest] = argv;
    if (sub !== 'status') throw new UsageError(sub === undefined ? 'missing subcommand (status)' : `unknown subcommand ${JSON.stringify(sub)} (expected status)`);
    let values: { addr?: string | undefined; json?: boolean | undefined };
    try {
      values = parseArgs({ args: rest, options: { addr: { type: 'string' }, json: { type: 'boolean' } }, strict: true, allowPositionals: false }).values;
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const addr = healthAddr(values.addr);
    const doc = await fetchBgpStatus(addr);
    process.stdout.write(values.json ? JSON.stringify(doc, null, 2) + '\n' : renderBgpStatus(doc));
    return doc.sessions.every((s) => s.state === 'Established') ? ExitCode.Ok : ExitCode.Failure;
  },
};

// weftctl flows: the connections pods made, as every node's weftd recorded them (GET /flows):
// who talked to whom — by pod, not only by address — over which protocol and port, how much, when,
// and whether it went through or a NetworkPolicy dropped it (and which), like `hubble observe`.
import type { CliCommand } from './command.js';
import { parseCommandArgs } from './args.js';
import { ExitCode, UsageError } from './command.js';
import { DEFAULT_HEALTH_ADDR, healthAddr, weftdGet } from './weftd-http.js';
import { parseLabName } from '../lab/naming.js';
import { LabDirs } from '../lab/state.js';
import { type FlowFilter, flowMatches, mergeFlows } from '../flows/query.js';
import { type FlowRecord, endLabel, flowKey, flowsDocSchema } from '../flows/record.js';
import { type Cell, renderTable, useColour } from '../text-table.js';
import { CniCode, WeftError } from '../errors.js';

const help = `weftctl flows — connections between pods (and to the outside), forwarded or dropped by policy

Usage:
  weftctl flows --lab NAME [filters] [--follow] [--json]
  weftctl flows [--addr HOST:PORT]… [filters] [--follow] [--json]

Reads the flow records every weftd keeps (a ring per node; weftd --flow-records) and prints one
line per connection: when it started, source and destination (namespace/pod where the address
is a pod's, else the IP), protocol and destination port, packets and bytes of both directions,
and the verdict — forwarded, or dropped by the NetworkPolicy named in POLICY (the policies
isolating the pod that matched none of their rules). A connection two nodes saw (pods on two
hosts) is one line naming both nodes. Open connections show no end yet.

--lab NAME          every host of a lab made by weftctl lab up (through its weftd's --api-socket)
--addr HOST:PORT    a weftd's --health-addr (repeat for several nodes; default: env
                    WEFTD_HEALTH_ADDR, else ${DEFAULT_HEALTH_ADDR}); unix:PATH for an --api-socket
--pod P             flows with namespace/pod (or a pod name in any namespace) at either end
--namespace NS      flows with an end in namespace NS
--verdict V         forwarded | dropped
--since T           flows that ended (or, still open, started) after T: 30s, 5m, 2h, or an ISO time
--follow            keep printing new flows as the nodes record them (Ctrl-C stops)
--json              one JSON object per line: {"src":{"ip","namespace","pod"},"dst":{…},"proto",
                    "srcPort","dstPort","bytes","packets","verdict","policy","start","end","node"}

Exit: 0, or 1 when no node could be asked.
`;

interface Source {
  readonly addr: string;
  /** The node's name, known beforehand (a lab's hN), for messages. */
  readonly name: string;
  next: number;
}

function parseSince(raw: string | undefined, now = Date.now()): number | undefined {
  if (raw === undefined) return undefined;
  const m = /^(\d+)(s|m|h|d)$/.exec(raw);
  if (m) return now - Number(m[1]) * ({ s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd']);
  const t = Date.parse(raw);
  if (!Number.isNaN(t)) return t;
  throw new UsageError(`--since: expected a duration (30s, 5m, 2h, 1d) or an ISO time, got ${JSON.stringify(raw)}`);
}

interface Page { readonly records: FlowRecord[]; readonly next: number; readonly lost: number }

async function fetchFlows(src: Source): Promise<Page> {
  const r = await weftdGet(src.addr, `/flows?after=${src.next}`, 5000);
  if (r.status === 404) throw new WeftError(CniCode.InvalidEnvironment, `weftd at ${src.addr} keeps no flow records (weftd --flow-records 0, or older than flows)`);
  if (r.status !== 200) throw new WeftError(CniCode.InvalidEnvironment, `weftd at ${src.addr} answered HTTP ${r.status} for /flows`);
  const doc = flowsDocSchema.safeParse(JSON.parse(r.body));
  if (!doc.success) throw new WeftError(CniCode.DecodeFailure, `weftd at ${src.addr} answered /flows with something else: ${doc.error.issues[0]?.path.join('.') ?? ''} ${doc.error.issues[0]?.message ?? ''}`);
  for (const p of doc.data.problems ?? []) process.stderr.write(`weftctl flows: ${src.name}: ${p}\n`);
  return { records: doc.data.records as FlowRecord[], next: doc.data.next, lost: doc.data.lost };
}

function row(f: FlowRecord): Array<string | Cell> {
  const port = f.dstPort !== 0 ? String(f.dstPort) : '';
  return [f.start.replace('T', ' ').replace(/\.\d+Z$/, ''), endLabel(f.src), endLabel(f.dst), f.proto, port,
    { text: f.verdict, tone: f.verdict === 'dropped' ? 'bad' : 'ok' }, f.policy ?? '', String(f.packets), String(f.bytes), f.end === undefined ? 'open' : '', f.node];
}

const HEAD = ['START', 'SRC', 'DST', 'PROTO', 'PORT', 'VERDICT', 'POLICY', 'PACKETS', 'BYTES', '', 'NODE'];

export const flowsCommand: CliCommand = {
  name: 'flows',
  summary: 'connections between pods with their verdict (forwarded, or dropped by policy NAME), from every node',
  help,
  async run(argv) {
    const { values: v } = parseCommandArgs(argv, {
      lab: { type: 'string' },
      addr: { type: 'string', multiple: true },
      pod: { type: 'string' },
      namespace: { type: 'string' },
      verdict: { type: 'string' },
      since: { type: 'string' },
      follow: { type: 'boolean' },
      json: { type: 'boolean' },
    } as const, 0);
    if (v.verdict !== undefined && v.verdict !== 'forwarded' && v.verdict !== 'dropped') throw new UsageError(`--verdict: expected forwarded or dropped, got ${JSON.stringify(v.verdict)}`);
    if (v.lab !== undefined && v.addr !== undefined) throw new UsageError('--lab asks the lab\'s weftds; drop --addr');
    const since = parseSince(v.since);
    const filter: FlowFilter = {
      ...(v.pod !== undefined && { pod: v.pod }), ...(v.namespace !== undefined && { namespace: v.namespace }),
      ...(v.verdict !== undefined && { verdict: v.verdict as 'forwarded' | 'dropped' }), ...(since !== undefined && { since }),
    };
    let sources: Source[];
    if (v.lab !== undefined) {
      const { requireUpLab } = await import('../lab/lab.js');
      const rec = requireUpLab(parseLabName(v.lab));
      const dirs = LabDirs.of(parseLabName(rec.name));
      sources = rec.hostList.map((h) => ({ addr: `unix:${dirs.apiSocket(h.index)}`, name: `h${h.index}`, next: 0 }));
    } else {
      sources = (v.addr ?? [healthAddr(undefined)]).map((addr) => ({ addr, name: addr, next: 0 }));
    }
    const pages = await Promise.all(sources.map(async (s) => {
      try {
        const p = await fetchFlows(s);
        s.next = p.next;
        return p.records;
      } catch (err) {
        process.stderr.write(`weftctl flows: ${s.name}: ${err instanceof Error ? err.message : String(err)}\n`);
        return undefined;
      }
    }));
    if (pages.every((p) => p === undefined)) return ExitCode.Failure;
    const flows = mergeFlows(pages.flatMap((p) => (p ? [p] : []))).filter((f) => flowMatches(f, filter));
    const print = (list: readonly FlowRecord[]): void => {
      if (v.json) process.stdout.write(list.map((f) => JSON.stringify(f) + '\n').join(''));
      else if (list.length > 0) process.stdout.write(renderTable(v.follow ? [] : HEAD, list.map(row), { colour: useColour() }));
    };
    if (!v.follow) {
      if (!v.json && flows.length === 0) process.stderr.write('no flows recorded that match\n');
      print(flows);
      return ExitCode.Ok;
    }
    if (!v.json) process.stdout.write(renderTable(HEAD, []));
    print(flows);
    // A connection seen by two nodes comes from both: printed as the first node tells it (when
    // it opens, again when it is completed); the other node's copies are left out.
    const printed = new Map<string, { node: string; at: number }>();
    let stop = false;
    const onSignal = () => { stop = true; };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    while (!stop) {
      await new Promise((r) => setTimeout(r, 1000));
      const now = Date.now();
      for (const [k, p] of printed) if (now - p.at > 10_000) printed.delete(k);
      for (const s of sources) {
        const p = await fetchFlows(s).catch(() => undefined);
        if (!p) continue;
        s.next = p.next;
        const fresh = p.records.filter((f) => flowMatches(f, filter) && (printed.get(flowKey(f))?.node ?? f.node) === f.node);
        for (const f of fresh) printed.set(flowKey(f), { node: f.node, at: now });
        print(fresh);
      }
    }
    return ExitCode.Ok;
  },
};

// Local endpoint records: how a workload attachment travels from the CNI path to weftd.
//
// DESIGN.md keeps the store out of the CNI path, so the weft plugin never writes
// `<prefix>/endpoints/...` itself. On ADD it writes one small JSON file per attachment into
// `<dir of subnet.env>/endpoints/<containerID>-<ifname>.json` (removed on DEL and by GC), and
// then announces it in-process:
//   - in weftd's fast path the plugin runs inside weftd, where the policy service listens: the
//     ADD answers only after the service has put the pod's addresses into the kernel's policy
//     table (and published the record to the store for the other hosts);
//   - standalone (no weftd answering) nobody listens; weftd picks the file up through its
//     directory watch and publishes it. Until then the table's guard drops the pod's traffic
//     when policies exist (see compile.ts), so "enforced before its first packet" holds there too.
// The file is the local truth for this host's endpoints; the store copy is what other hosts see.
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { cniArg, type CniEnv } from '../cni/env.js';
import type { CniResult } from '../cni/result.js';
import { CniCode, WeftError } from '../errors.js';
import { formatIP } from '../net/ip.js';
import { type Endpoint, parseEndpoint } from './model.js';

export const RECORD_SUFFIX = '.json';

/** One attachment as the plugin saw it. namespace/pod are absent for non-Kubernetes workloads. */
export interface EndpointRecord {
  readonly containerID: string;
  readonly ifname: string;
  readonly namespace?: string;
  readonly pod?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ips: readonly string[];
  readonly namedPorts?: Readonly<Record<string, { port: number; protocol: string }>>;
}

const recordSchema = z.object({
  containerID: z.string().min(1),
  ifname: z.string().min(1),
  namespace: z.string().min(1).optional(),
  pod: z.string().min(1).optional(),
  labels: z.record(z.string(), z.string()).default({}),
  ips: z.array(z.string()),
  namedPorts: z.record(z.string(), z.object({ port: z.number().int(), protocol: z.string() })).optional(),
}).strict();

export function parseEndpointRecord(input: unknown, where: string): EndpointRecord {
  const r = recordSchema.safeParse(input);
  if (!r.success) throw new WeftError(CniCode.DecodeFailure, `${where}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  const { namespace, pod, namedPorts, ...rest } = r.data;
  return { ...rest, ...(namespace !== undefined && { namespace }), ...(pod !== undefined && { pod }), ...(namedPorts !== undefined && { namedPorts }) };
}

/** The records directory of a node: next to its subnet.env, where weftd looks for it. */
export function endpointRecordDir(subnetFile: string): string {
  return join(dirname(subnetFile), 'endpoints');
}

export function endpointRecordFile(dir: string, containerID: string, ifname: string): string {
  return join(dir, `${containerID}-${ifname}${RECORD_SUFFIX}`);
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Labels given as {k: v} or as the CNI convention's [{key, value}]; anything else is ignored. */
function labelsFrom(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(v)) {
    for (const item of v) if (isRecord(item) && typeof item.key === 'string' && typeof item.value === 'string') out[item.key] = item.value;
  } else if (isRecord(v)) {
    for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  }
  return out;
}

function stringAt(o: Record<string, unknown> | undefined, key: string): string | undefined {
  const v = o?.[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * What ADD knows about the workload. Namespace and pod: CNI_ARGS K8S_POD_NAMESPACE/K8S_POD_NAME,
 * else the conf's `args.cni` / `args` (`namespace`, `pod`). Labels, merged in this order (later
 * wins): runtimeConfig.labels, args.labels, args.cni.labels. Named ports: `namedPorts`
 * ({name: {port, protocol}}) in args.cni or args.
 */
export function recordFromAdd(env: Pick<CniEnv, 'args' | 'containerId' | 'ifname'>, conf: { args: Record<string, unknown>; runtimeConfig: Record<string, unknown> }, result: CniResult): EndpointRecord {
  const cni = isRecord(conf.args.cni) ? conf.args.cni : undefined;
  const namespace = cniArg(env, 'K8S_POD_NAMESPACE') ?? stringAt(cni, 'namespace') ?? stringAt(conf.args, 'namespace');
  const pod = cniArg(env, 'K8S_POD_NAME') ?? stringAt(cni, 'pod') ?? stringAt(conf.args, 'pod');
  const labels = { ...labelsFrom(conf.runtimeConfig.labels), ...labelsFrom(conf.args.labels), ...labelsFrom(cni?.labels) };
  const np = cni?.namedPorts ?? conf.args.namedPorts;
  const namedPorts: Record<string, { port: number; protocol: string }> = {};
  if (isRecord(np)) {
    for (const [name, v] of Object.entries(np)) {
      if (isRecord(v) && typeof v.port === 'number') namedPorts[name] = { port: v.port, protocol: typeof v.protocol === 'string' ? v.protocol : 'TCP' };
    }
  }
  return {
    containerID: env.containerId, ifname: env.ifname,
    ...(namespace !== undefined && { namespace }), ...(pod !== undefined && { pod }),
    labels, ips: result.ips.map((c) => formatIP(c.address.ip)),
    ...(Object.keys(namedPorts).length > 0 && { namedPorts }),
  };
}

export async function writeEndpointRecord(dir: string, rec: EndpointRecord): Promise<void> {
  const file = endpointRecordFile(dir, rec.containerID, rec.ifname);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await writeFile(tmp, JSON.stringify(rec));
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new WeftError(CniCode.IoFailure, `cannot write the endpoint record ${file}: ${(err as Error).message}`);
  }
}

export async function removeEndpointRecord(dir: string, containerID: string, ifname: string): Promise<void> {
  await rm(endpointRecordFile(dir, containerID, ifname), { force: true });
}

/** Every readable record in dir, plus the files that could not be read (reported, not fatal). */
export async function readEndpointRecords(dir: string): Promise<{ records: EndpointRecord[]; bad: { file: string; reason: string }[] }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], bad: [] };
    throw new WeftError(CniCode.IoFailure, `cannot list ${dir}: ${(err as Error).message}`);
  }
  const records: EndpointRecord[] = [];
  const bad: { file: string; reason: string }[] = [];
  for (const name of names.filter((n) => n.endsWith(RECORD_SUFFIX)).sort()) {
    const file = join(dir, name);
    try {
      records.push(parseEndpointRecord(JSON.parse(await readFile(file, 'utf8')) as unknown, file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      bad.push({ file, reason: (err as Error).message });
    }
  }
  return { records, bad };
}

/** The store's key for a record of `host`: endpoints/<host>/<ns>/<pod>/<ifname>. */
export function endpointStoreKey(host: string, rec: Pick<EndpointRecord, 'namespace' | 'pod' | 'ifname'>): string | undefined {
  if (rec.namespace === undefined || rec.pod === undefined) return undefined;
  return `endpoints/${host}/${rec.namespace}/${rec.pod}/${rec.ifname}`;
}

/** The policy model's endpoint for a Kubernetes record (throws, naming the field, if it does not parse). */
export function recordToEndpoint(host: string, rec: EndpointRecord): Endpoint | undefined {
  if (rec.namespace === undefined || rec.pod === undefined || rec.ips.length === 0) return undefined;
  return parseEndpoint({
    namespace: rec.namespace, pod: rec.pod, labels: rec.labels, ips: rec.ips, host, ifname: rec.ifname,
    ...(rec.namedPorts && { namedPorts: rec.namedPorts }),
  }, `endpoint ${rec.containerID}/${rec.ifname}: `);
}

// ---- the in-process announcement (weftd's fast path)

export type EndpointChange =
  | { readonly type: 'added'; readonly dir: string; readonly record: EndpointRecord }
  | { readonly type: 'removed'; readonly dir: string; readonly containerID: string; readonly ifname: string };

export type EndpointSink = (change: EndpointChange) => Promise<void>;

/**
 * One weftd's line from the plugins it runs (their host's endpointChanged) to its policy service.
 * weftd makes one and hands it to both, whatever order they start in: a change announced while
 * no service listens is still in the record file, which the service reads when it starts.
 */
export class EndpointChanges {
  private listener: EndpointSink | undefined;

  /** For the plugins' host: awaits the listener, so ADD returns once the change is enforced. */
  readonly announce: EndpointSink = async (change) => {
    if (this.listener) await this.listener(change);
  };

  /** The policy service follows here; one listener at a time. Returns the undo. */
  listen(fn: EndpointSink): () => void {
    if (this.listener) throw new WeftError(CniCode.Internal, 'endpoint changes already have a listener');
    this.listener = fn;
    return () => {
      if (this.listener === fn) this.listener = undefined;
    };
  }
}

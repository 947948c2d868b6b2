// How doctor finds nodes and pods. In a lab (--lab NAME) the lab's record knows every host
// namespace, pod namespace, address and weftd. On a node, pods are the weft plugin's endpoint
// records beside subnet.env (src/policy/endpoint-record.ts), their namespaces come from the CNI
// result cache (the interface's "sandbox"), and pods of other nodes from the store's endpoints.
import { healthAddr, weftdGet } from '../cli/weftd-http.js';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { parseSubnetEnv, parseSubnetEnvText, type SubnetEnv } from '../cni/subnet-env.js';
import { CniCode, WeftError } from '../errors.js';
import { type IP, formatIP, ipEquals, tryParseIP } from '../net/ip.js';
import { NETNS_RUN_DIR, netnsPath } from '../netns/index.js';
import { endpointRecordDir, readEndpointRecords } from '../policy/endpoint-record.js';
import type { Endpoint } from '../policy/model.js';
import { LabDirs, type LabRecord } from '../lab/state.js';
import { parseLabName } from '../lab/naming.js';
import type { DoctorNode, DoctorPod, Place } from './types.js';

export interface Topology {
  readonly nodes: readonly DoctorNode[];
  /** Pods whose namespace doctor can enter (or at least whose node it knows). */
  readonly pods: readonly DoctorPod[];
  /** The node doctor runs on, outside a lab. */
  readonly local: DoctorNode | undefined;
}

function readEnv(file: string): { env: SubnetEnv | undefined; envError?: string } {
  try {
    return { env: parseSubnetEnv(parseSubnetEnvText(readFileSync(file, 'utf8')), file) };
  } catch (err) {
    return { env: undefined, envError: err instanceof Error ? err.message : String(err) };
  }
}

function namedPlace(ns: string): Place {
  return { nsName: ns, nsPath: netnsPath(ns) };
}

/**
 * weftd's /healthz on a lab host, over the host's API socket: a unix socket answers from this
 * namespace, so nothing needs to run inside the host's.
 */
async function labHealth(socket: string): Promise<{ ok: boolean; detail: string }> {
  const where = `unix:${socket}`;
  try {
    const r = await weftdGet(where, '/healthz', 1000);
    if (r.status === 200) return { ok: true, detail: `/healthz 200 on ${where}` };
    return { ok: false, detail: `/healthz on ${where} answered ${r.status}` };
  } catch (err) {
    const cause = err instanceof WeftError && err.cause instanceof Error ? err.cause.message : err instanceof Error ? err.message : String(err);
    return { ok: false, detail: `/healthz on ${where} did not answer (${cause})` };
  }
}

export function labTopology(rec: LabRecord): Topology {
  const dirs = LabDirs.of(parseLabName(rec.name));
  const nodes = rec.hostList.map((h): DoctorNode => {
    const weftd = rec.processes.find((p) => p.role === `weftd h${h.index}`);
    return {
      name: `h${h.index}`, ...namedPlace(h.ns), subnetFile: dirs.subnetFile(h.index), ...readEnv(dirs.subnetFile(h.index)),
      health: () => labHealth(dirs.apiSocket(h.index)),
      agentHint: `weftd h${h.index}${weftd ? ` (lab pid ${weftd.pid})` : ''} is the lab's; its log is ${dirs.weftdLog(h.index)}; rebuild the lab to restart it: weftctl lab down --name ${rec.name}, then lab up again`,
    };
  });
  const pods = rec.containers.flatMap((c): DoctorPod[] => {
    const ip = c.ip !== undefined ? tryParseIP(c.ip) : undefined;
    if (!ip) return [];
    return [{ name: c.name, ip, containerId: c.containerId, ifname: 'eth0', place: namedPlace(c.ns), node: nodes[c.host], nodeName: `h${c.host}` }];
  });
  return { nodes, pods, local: undefined };
}

export interface NodeOptions {
  readonly subnetFile: string;
  readonly cacheDir: string;
  readonly nodeName: string | undefined;
  readonly healthAddr: string | undefined;
}

async function httpHealth(addr: string): Promise<{ ok: boolean; detail: string }> {
  try {
    const r = await weftdGet(addr, '/healthz', 1000);
    return { ok: r.status === 200, detail: `weftd at ${addr} answered ${r.status} for /healthz` };
  } catch (err) {
    return { ok: false, detail: `weftd at ${addr} did not answer /healthz (${err instanceof Error ? err.message : String(err)})` };
  }
}

/** containerId/ifname → the namespace path the runtime gave CNI, from its cached results. */
function sandboxes(cacheDir: string): Map<string, string> {
  const out = new Map<string, string>();
  const dir = join(cacheDir, 'results');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const n of names) {
    try {
      const e = JSON.parse(readFileSync(join(dir, n), 'utf8')) as { containerId?: unknown; ifName?: unknown; result?: { interfaces?: Array<{ name?: unknown; sandbox?: unknown }> } };
      if (typeof e.containerId !== 'string' || typeof e.ifName !== 'string') continue;
      const sb = e.result?.interfaces?.find((i) => i.name === e.ifName && typeof i.sandbox === 'string' && i.sandbox !== '')?.sandbox;
      if (typeof sb === 'string') out.set(`${e.containerId}/${e.ifName}`, sb);
    } catch { /* a cache entry being rewritten: skip it */ }
  }
  return out;
}

function placeOfPath(path: string): Place | undefined {
  if (!existsSync(path)) return undefined;
  return dirname(path) === NETNS_RUN_DIR ? { nsName: basename(path), nsPath: path } : { nsName: undefined, nsPath: path };
}

export async function nodeTopology(o: NodeOptions): Promise<Topology> {
  const name = o.nodeName ?? hostname();
  const local: DoctorNode = {
    name, nsName: undefined, nsPath: undefined, subnetFile: o.subnetFile, ...readEnv(o.subnetFile),
    health: () => httpHealth(healthAddr(o.healthAddr)),
    agentHint: `start weftd on ${name} (e.g. systemctl restart weftd) and read its log`,
  };
  const { records } = await readEndpointRecords(endpointRecordDir(o.subnetFile));
  const sb = sandboxes(o.cacheDir);
  const pods = records.flatMap((r): DoctorPod[] => {
    const path = sb.get(`${r.containerID}/${r.ifname}`);
    return r.ips.flatMap((a) => {
      const ip = tryParseIP(a);
      if (!ip) return [];
      return [{
        name: r.namespace !== undefined && r.pod !== undefined ? `${r.namespace}/${r.pod}` : r.containerID,
        ip, containerId: r.containerID, ifname: r.ifname, place: path !== undefined ? placeOfPath(path) : undefined, node: local, nodeName: name,
      }];
    });
  });
  return { nodes: [local], pods, local };
}

/**
 * SRC or DST as typed: a pod IP, a lab container name, namespace/pod, or a container id (or a
 * unique prefix of one, at least 6 characters). Pods only the store knows (other nodes) are found
 * through its endpoints; a bare IP nobody knows is still a destination.
 */
export function resolvePod(query: string, topo: Topology, storeEndpoints: readonly Endpoint[]): DoctorPod {
  const ip = tryParseIP(query);
  const byIp = (x: IP) => topo.pods.find((p) => ipEquals(p.ip, x));
  if (ip) {
    const p = byIp(ip);
    if (p) return p;
  }
  const named = topo.pods.filter((p) => p.name === query || p.containerId === query || p.name.endsWith(`/${query}`));
  if (named.length === 1 && named[0]) return named[0];
  if (named.length > 1) throw new WeftError(CniCode.InvalidEnvironment, `${JSON.stringify(query)} names ${named.length} pods (${named.map((p) => p.name).join(', ')}); give namespace/pod or the IP`);
  if (query.length >= 6) {
    const pre = topo.pods.filter((p) => p.containerId?.startsWith(query));
    if (pre.length === 1 && pre[0]) return pre[0];
  }
  const eps = storeEndpoints.filter((e) => `${e.namespace}/${e.pod}` === query || e.pod === query || (ip !== undefined && e.ips.some((a) => ipEquals(a, ip))));
  const ep = eps[0];
  if (eps.length === 1 && ep) {
    const epIp = ip ?? ep.ips.find((a) => a.family === 4) ?? ep.ips[0];
    if (epIp) {
      const known = byIp(epIp);
      if (known) return known;
      const node = topo.nodes.find((n) => n.name === ep.host);
      return { name: `${ep.namespace}/${ep.pod}`, ip: epIp, containerId: undefined, ifname: ep.ifname, place: undefined, node, nodeName: ep.host };
    }
  }
  if (eps.length > 1) throw new WeftError(CniCode.InvalidEnvironment, `${JSON.stringify(query)} names ${eps.length} pods in the store; give namespace/pod or the IP`);
  if (ip) return { name: formatIP(ip), ip, containerId: undefined, ifname: 'eth0', place: undefined, node: undefined, nodeName: undefined };
  throw new WeftError(CniCode.InvalidEnvironment, `no pod ${JSON.stringify(query)}: not an IP, and no pod name, namespace/pod or container id matches${topo.local ? ` (looked in ${endpointRecordDir(topo.local.subnetFile)} and the store's endpoints)` : ''}`);
}

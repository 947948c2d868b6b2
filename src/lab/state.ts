// The lab's state directory and its record, lab.json. The record is rewritten atomically after
// every step of `up`, so a crash leaves a consistent (if incomplete) picture; `down` does not
// depend on it being complete (see naming.ts), but uses it for PIDs and for status/check.
//
//   /run/weft-lab/NAME/lab.json           this record
//   store/                                file store shared by the hosts' weftd
//   etcd/                                 etcd data (store etcd)
//   kube/, weft.kubeconfig, net-conf.json control plane state, weftd's identity, network config (store kube)
//   hosts/hI/{subnet.env,cni.sock,api.sock,weftd.log,net.d/,cni-cache/,weft-state/,ipam/}
//   procs/ROLE.log                        echo servers, etcd
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { type LabName, labStateDir } from './naming.js';

const processSchema = z.object({
  role: z.string(),
  pid: z.number().int().positive(),
  startTime: z.string(),
  ns: z.string(),
  log: z.string(),
});

const hostSchema = z.object({
  index: z.number().int().nonnegative(),
  ns: z.string(),
  ip: z.string(),
  /** The host's IPv6 underlay address (labs with --ipv6). */
  ip6: z.string().optional(),
  /** The pod subnet weftd leased (network form), or the host's macvlan range. */
  subnet: z.string().optional(),
  /** The host's IPv6 pod subnet (dual-stack labs). */
  subnet6: z.string().optional(),
  /** The rack (L2 segment) of a multi-rack lab. */
  rack: z.number().int().nonnegative().optional(),
  /** macvlan --macvlan-shim: the host's address on its shim. */
  shimAddress: z.string().optional(),
});

const containerSchema = z.object({
  /** Short name used in tables: h0c1 = host 0, container 1. */
  name: z.string(),
  host: z.number().int().nonnegative(),
  ns: z.string(),
  containerId: z.string(),
  /** The container's address: IPv4, or IPv6 in an IPv6-only lab. */
  ip: z.string().optional(),
  /** Its IPv6 address in a dual-stack lab. */
  ip6: z.string().optional(),
});

export const labRecordSchema = z.object({
  version: z.literal(1),
  name: z.string(),
  backend: z.string(),
  store: z.enum(['file', 'etcd', 'kube']),
  hosts: z.number().int().positive(),
  pods: z.number().int().positive(),
  phase: z.enum(['creating', 'up', 'failed']),
  createdAt: z.string(),
  /** The `weftctl lab up` process while it builds (down stops it if it is still running). */
  controller: z.object({ pid: z.number().int(), startTime: z.string() }),
  underlay: z.string().optional(),
  outside: z.string().optional(),
  outsideIP: z.string().optional(),
  /** The outside namespace's IPv6 address (labs with --ipv6). */
  outsideIP6: z.string().optional(),
  /** --ipv6 dual|only: the pod network's address families. */
  ipv6: z.enum(['dual', 'only']).optional(),
  hostList: z.array(hostSchema),
  containers: z.array(containerSchema),
  processes: z.array(processSchema),
  /** Namespaces added later (benchmark reference paths); all carry the lab prefix too. */
  extraNamespaces: z.array(z.string()),
  etcdUrl: z.string().optional(),
  /** --store kube: the API server's URL (its state, kubeconfigs and logs are under kube/). */
  kubeServer: z.string().optional(),
  /** --racks R > 1: one switch namespace per rack, the router namespace between them and BIRD's control socket. */
  racks: z.number().int().positive().optional(),
  switches: z.array(z.string()).optional(),
  router: z.string().optional(),
  birdSocket: z.string().optional(),
  /** --macvlan-shim: every host has a shim to its own containers. */
  macvlanShim: z.boolean().optional(),
  error: z.string().optional(),
});

export type LabRecord = z.infer<typeof labRecordSchema>;
export type LabHostRecord = z.infer<typeof hostSchema>;
export type LabContainerRecord = z.infer<typeof containerSchema>;

export class LabDirs {
  constructor(readonly root: string) {}
  static of(name: LabName): LabDirs {
    return new LabDirs(labStateDir(name));
  }
  get record(): string { return join(this.root, 'lab.json'); }
  get store(): string { return join(this.root, 'store'); }
  get etcd(): string { return join(this.root, 'etcd'); }
  /** --store kube: the control plane's state dir (pki, etcd data, logs, admin.kubeconfig). */
  get kube(): string { return join(this.root, 'kube'); }
  /** The weft ServiceAccount's kubeconfig every weftd of a kube lab runs with. */
  get kubeconfig(): string { return join(this.root, 'weft.kubeconfig'); }
  get netConfig(): string { return join(this.root, 'net-conf.json'); }
  get procs(): string { return join(this.root, 'procs'); }
  /** BIRD's config, control socket and pid file (multi-rack labs). */
  get bird(): string { return join(this.root, 'bird'); }
  host(i: number): string { return join(this.root, 'hosts', `h${i}`); }
  subnetFile(i: number): string { return join(this.host(i), 'subnet.env'); }
  weftdLog(i: number): string { return join(this.host(i), 'weftd.log'); }
  /** weftd's --api-socket: its HTTP endpoints, reachable from any namespace (doctor, weftctl ui). */
  apiSocket(i: number): string { return join(this.host(i), 'api.sock'); }
  netd(i: number): string { return join(this.host(i), 'net.d'); }
  conflist(i: number): string { return join(this.netd(i), '10-weft-lab.conflist'); }
  cniCache(i: number): string { return join(this.host(i), 'cni-cache'); }
  pluginState(i: number): string { return join(this.host(i), 'weft-state'); }
  ipam(i: number): string { return join(this.host(i), 'ipam'); }
  procLog(role: string): string { return join(this.procs, `${role.replace(/[^a-zA-Z0-9_.-]/g, '_')}.log`); }

  makeHostDirs(i: number): void {
    for (const d of [this.host(i), this.netd(i), this.cniCache(i), this.pluginState(i), this.ipam(i)]) mkdirSync(d, { recursive: true, mode: 0o700 });
  }
}

export function writeRecord(dirs: LabDirs, rec: LabRecord): void {
  const tmp = `${dirs.record}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, dirs.record);
}

/** The record, undefined when there is none (a lab killed before writing it). */
export function readRecord(dirs: LabDirs): LabRecord | undefined {
  let text: string;
  try {
    text = readFileSync(dirs.record, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new WeftError(CniCode.IoFailure, `cannot read ${dirs.record}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new WeftError(CniCode.DecodeFailure, `${dirs.record} is not JSON: ${(err as Error).message}`);
  }
  const p = labRecordSchema.safeParse(raw);
  if (!p.success) {
    const issue = p.error.issues[0];
    throw new WeftError(CniCode.DecodeFailure, `${dirs.record}: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'invalid'}`);
  }
  return p.data;
}

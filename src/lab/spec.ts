// A lab's shape from raw flag values: parse once at the edge, refuse with a message naming the
// flag. LabInputError means "the user asked for something impossible" (weftctl exit 2).
import { type LabBackend, labBackend, labBackendNames } from './backends.js';
import { DEFAULT_LAB_NAME, type LabName, parseLabName } from './naming.js';

export const MAX_HOSTS = 16;
export const MAX_PODS = 32;
export type LabStore = 'file' | 'etcd' | 'kube';
/** --ipv6: IPv6 pods beside IPv4 ones (`dual`), or instead of them on an IPv6-only underlay (`only`). */
export type LabIPv6 = 'dual' | 'only';

export interface LabSpec {
  readonly name: LabName;
  readonly hosts: number;
  readonly pods: number;
  readonly backend: LabBackend;
  readonly store: LabStore;
  /** L2 segments the hosts are spread over; more than 1 puts a BIRD router between them. */
  readonly racks: number;
  /** macvlan: a shim on each host so it can reach its own containers. */
  readonly macvlanShim: boolean;
  /**
   * weftd --ip-masq (containers reach "outside", which has no route back). Always on from the
   * CLI; `bench dataplane` turns it off (and the bridge's own masquerade with it) to compare with a
   * reference that has no NAT either.
   */
  readonly ipMasq: boolean;
  /** Absent: an IPv4-only lab. */
  readonly ipv6?: LabIPv6 | undefined;
}

export class LabInputError extends Error {
  override readonly name = 'LabInputError';
}

function count(flag: string, raw: string | undefined, dflt: number, max: number): number {
  if (raw === undefined) return dflt;
  if (!/^\d+$/.test(raw)) throw new LabInputError(`${flag}: expected a whole number 1..${max}, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < 1 || n > max) throw new LabInputError(`${flag}: expected 1..${max}, got ${n}`);
  return n;
}

export function parseName(raw: string | undefined): LabName {
  try {
    return parseLabName(raw ?? DEFAULT_LAB_NAME);
  } catch (err) {
    throw new LabInputError(`--name: ${(err as Error).message}`);
  }
}

export function parseBackend(raw: string | undefined): LabBackend {
  const name = raw ?? 'vxlan';
  const b = labBackend(name);
  if (!b) throw new LabInputError(`--backend: unknown backend ${JSON.stringify(name)}; expected one of ${labBackendNames().join(', ')}`);
  return b;
}

export interface RawLabFlags {
  name?: string | undefined;
  hosts?: string | undefined;
  pods?: string | undefined;
  backend?: string | undefined;
  store?: string | undefined;
  racks?: string | undefined;
  macvlanShim?: boolean | undefined;
  ipv6?: string | undefined;
}

function racksProblem(backend: LabBackend, racks: number, hosts: number): string | undefined {
  if (racks === 1) return undefined;
  if (!backend.racksNetworkConfig) {
    const why = backend.oneSegmentWhy ? `: ${backend.oneSegmentWhy}` : '; in the lab only bgp spreads the pod subnets through the rack router';
    const can = labBackendNames().filter((n) => labBackend(n)?.racksNetworkConfig !== undefined);
    return `--racks ${racks}: the ${backend.name} backend cannot span racks${why} (backends that can: ${can.join(', ')})`;
  }
  if (hosts < racks) return `--racks ${racks}: needs at least one host per rack, got --hosts ${hosts}`;
  return undefined;
}

export function parseLabSpec(raw: RawLabFlags): LabSpec {
  const name = parseName(raw.name);
  const hosts = count('--hosts', raw.hosts, 3, MAX_HOSTS);
  const pods = count('--pods', raw.pods, 2, MAX_PODS);
  const backend = parseBackend(raw.backend);
  const store = raw.store ?? 'file';
  if (store !== 'file' && store !== 'etcd' && store !== 'kube') throw new LabInputError(`--store: expected file, etcd or kube, got ${JSON.stringify(store)}`);
  const racks = count('--racks', raw.racks, 1, MAX_HOSTS);
  const macvlanShim = raw.macvlanShim ?? false;
  if (macvlanShim && backend.name !== 'macvlan') throw new LabInputError(`--macvlan-shim: only for --backend macvlan (the ${backend.name} backend's hosts reach their containers already)`);
  const problem = racksProblem(backend, racks, hosts) ?? backend.sizeProblem?.(hosts, pods, { macvlanShim });
  if (problem !== undefined) throw new LabInputError(problem);
  const ipv6 = parseIPv6Mode(raw.ipv6, backend, store, racks);
  if (ipv6 && macvlanShim) throw new LabInputError(`--macvlan-shim: the shim has an IPv4 address only; leave out --ipv6 ${ipv6}`);
  return { name, hosts, pods, backend, store, racks, macvlanShim, ipMasq: true, ...(ipv6 && { ipv6 }) };
}

function parseIPv6Mode(raw: string | undefined, backend: LabBackend, store: LabStore, racks: number): LabIPv6 | undefined {
  if (raw === undefined || raw === 'off') return undefined;
  if (raw !== 'dual' && raw !== 'only') throw new LabInputError(`--ipv6: expected dual, only or off, got ${JSON.stringify(raw)}`);
  if (!backend.ipv6) {
    const can = labBackendNames().filter((n) => labBackend(n)?.ipv6 === true);
    throw new LabInputError(`--ipv6 ${raw}: the ${backend.name} backend carries IPv4 only in the lab (backends with IPv6: ${can.join(', ')})`);
  }
  if (racks > 1) throw new LabInputError(`--ipv6 ${raw}: the rack router speaks IPv4 only; use --racks 1`);
  // The lab's kube-apiserver listens on the IPv4 underlay, which an IPv6-only lab's hosts lack.
  if (store === 'kube' && raw === 'only') throw new LabInputError('--ipv6 only: the kube lab\'s API server is on the IPv4 underlay; use --ipv6 dual, or --store file or etcd');
  return raw;
}

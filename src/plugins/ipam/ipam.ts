// The IPAM operations (ADD/DEL/CHECK/GC/STATUS) over a parsed config and the disk store. Plugins
// call these directly (weft-ipam, and the bridge/routed plugins when they allocate in-process).
import { z } from 'zod';
import { CniCode, WeftError } from '../../errors.js';
import { formatIP, ipEquals, tryParseCidr, tryParseIP, type IP } from '../../net/ip.js';
import type { Attachment, NetConf } from '../../cni/conf.js';
import { cniArg, type CniEnv } from '../../cni/env.js';
import type { CniIPConfig, CniResult } from '../../cni/result.js';
import { describeRangeSet, rangeSetContains, type IpamConfig } from './config.js';
import { pickFree, rangeFor, usableCount } from './allocator.js';
import { readResolvConf } from './resolv.js';
import { DiskStore } from './store.js';
import type { FileLockOptions } from '../../fs/lock.js';

export interface IpamTarget {
  config: IpamConfig;
  /** Network name: the store directory under dataDir. */
  network: string;
  lock?: FileLockOptions;
}

/** Where a network's allocations live: all that DEL needs, so it works without valid ranges. */
export interface IpamStoreRef {
  dataDir: string;
  network: string;
  lock?: FileLockOptions;
}

function storeFor(t: IpamTarget | IpamStoreRef): DiskStore {
  const dataDir = 'config' in t ? t.config.dataDir : t.dataDir;
  return new DiskStore(dataDir, t.network, t.lock ?? {});
}

function parseRequested(source: string, s: string): IP {
  // runtimeConfig.ips may carry a prefix ("10.1.2.3/24"); only the address matters here.
  const ip = tryParseIP(s) ?? tryParseCidr(s)?.ip;
  if (!ip) throw new WeftError(CniCode.InvalidNetworkConfig, `${source}: invalid IP address ${JSON.stringify(s)}`);
  return ip;
}

const ipListSchema = z.array(z.string());

/**
 * Specific addresses asked for, from CNI_ARGS `IP=` (comma-separated), `args.cni.ips` and
 * `runtimeConfig.ips`, in that order, duplicates dropped.
 */
export function requestedIPs(conf: Pick<NetConf, 'args' | 'runtimeConfig'>, env: Pick<CniEnv, 'args'>): IP[] {
  const out: IP[] = [];
  const add = (ip: IP): void => {
    if (!out.some((o) => ipEquals(o, ip))) out.push(ip);
  };
  const fromEnv = cniArg(env, 'IP');
  if (fromEnv) for (const s of fromEnv.split(',')) if (s.trim()) add(parseRequested('CNI_ARGS IP', s.trim()));
  const cni = conf.args.cni;
  if (cni !== undefined && typeof cni === 'object' && cni !== null && 'ips' in cni) {
    const p = ipListSchema.safeParse(cni.ips);
    if (!p.success) throw new WeftError(CniCode.InvalidNetworkConfig, 'args.cni.ips: expected an array of IP strings');
    for (const s of p.data) add(parseRequested('args.cni.ips', s));
  }
  if (conf.runtimeConfig.ips !== undefined) {
    const p = ipListSchema.safeParse(conf.runtimeConfig.ips);
    if (!p.success) throw new WeftError(CniCode.InvalidNetworkConfig, 'runtimeConfig.ips: expected an array of IP strings');
    for (const s of p.data) add(parseRequested('runtimeConfig.ips', s));
  }
  return out;
}

/**
 * Allocates one address per range set (a requested one when it falls in the set). All-or-nothing:
 * on any failure the addresses taken by this call are released before the error propagates.
 */
export async function ipamAdd(t: IpamTarget, containerId: string, ifname: string, requested: IP[] = []): Promise<CniResult> {
  const store = storeFor(t);
  const dns = t.config.resolvConf ? readResolvConf(t.config.resolvConf) : {};
  const ips = await store.locked((): CniIPConfig[] => {
    const taken: IP[] = [];
    try {
      const reserved = store.reservedSet();
      const held = store.byId(containerId, ifname);
      const pending = [...requested];
      const out: CniIPConfig[] = [];
      t.config.rangeSets.forEach((rs, idx) => {
        const dup = held.find((a) => rangeSetContains(rs, a.ip));
        if (dup) {
          throw new WeftError(CniCode.Internal, `${formatIP(dup.ip)} has been allocated to ${containerId}/${ifname}, duplicate allocation is not allowed`);
        }
        const want = pending.findIndex((ip) => rangeSetContains(rs, ip));
        let ip: IP;
        if (want >= 0) {
          ip = pending.splice(want, 1)[0] as IP;
          const range = rangeFor(rs, ip);
          if (range?.gateway && ipEquals(range.gateway, ip)) {
            throw new WeftError(CniCode.InvalidNetworkConfig, `requested IP ${formatIP(ip)} is the gateway of range set ${describeRangeSet(rs)}`);
          }
          if (reserved.has(formatIP(ip)) || !store.reserve(ip, containerId, ifname, idx)) {
            throw new WeftError(CniCode.IpamExhausted, `requested IP address ${formatIP(ip)} is not available in range set ${describeRangeSet(rs)}`);
          }
        } else {
          // reserved is a snapshot, but we hold the lock; reserve() is O_EXCL anyway, so an
          // allocation made by a foreign tool meanwhile is skipped, not overwritten.
          let chosen: IP | undefined;
          let last = store.lastReserved(idx);
          for (;;) {
            const c = pickFree(rs, (x) => reserved.has(formatIP(x)), last);
            if (!c) break;
            if (store.reserve(c.ip, containerId, ifname, idx)) { chosen = c.ip; break; }
            reserved.add(formatIP(c.ip));
            last = c.ip;
          }
          if (!chosen) {
            throw new WeftError(CniCode.IpamExhausted, `no IP addresses available in range set ${describeRangeSet(rs)} (range set ${idx})`);
          }
          ip = chosen;
        }
        taken.push(ip);
        reserved.add(formatIP(ip));
        const range = rangeFor(rs, ip);
        const cfg: CniIPConfig = { address: { ip, prefix: range?.subnet.prefix ?? (ip.family === 4 ? 32 : 128) } };
        if (range?.gateway) cfg.gateway = range.gateway;
        out.push(cfg);
      });
      if (pending.length > 0) {
        throw new WeftError(
          CniCode.InvalidNetworkConfig,
          `failed to allocate all requested IPs: ${pending.map(formatIP).join(' ')} (not in any range set, or two in one set)`,
        );
      }
      return out;
    } catch (err) {
      for (const ip of taken) store.release(ip);
      throw err;
    }
  });
  return { interfaces: [], ips, routes: t.config.routes.map((r) => ({ ...r })), dns };
}

/** Releases (containerId, ifname)'s addresses; succeeds when there are none. */
export async function ipamDel(t: IpamTarget | IpamStoreRef, containerId: string, ifname: string): Promise<IP[]> {
  const store = storeFor(t);
  if (!store.exists()) return [];
  return store.locked(() => store.releaseById(containerId, ifname));
}

/** Verifies the container still holds an address in every range set (and those of prevResult). */
export async function ipamCheck(t: IpamTarget, containerId: string, ifname: string, prev?: CniResult): Promise<void> {
  const store = storeFor(t);
  const held = store.exists() ? store.byId(containerId, ifname) : [];
  if (held.length === 0) {
    throw new WeftError(CniCode.UnknownContainer, `weft-ipam: failed to find address added by container ${containerId} (${ifname})`);
  }
  t.config.rangeSets.forEach((rs, idx) => {
    if (!held.some((a) => rangeSetContains(rs, a.ip))) {
      throw new WeftError(CniCode.UnknownContainer, `weft-ipam: container ${containerId} holds no address in range set ${idx} (${describeRangeSet(rs)})`);
    }
  });
  for (const ip of prev?.ips ?? []) {
    const inOurSets = t.config.rangeSets.some((rs) => rangeSetContains(rs, ip.address.ip));
    if (inOurSets && !held.some((a) => ipEquals(a.ip, ip.address.ip))) {
      throw new WeftError(CniCode.UnknownContainer, `weft-ipam: ${formatIP(ip.address.ip)} from prevResult is not allocated to ${containerId} (${ifname})`);
    }
  }
}

/** Releases every allocation not owned by a valid attachment; returns the released addresses. */
export async function ipamGc(t: IpamTarget, valid: readonly Attachment[]): Promise<IP[]> {
  const store = storeFor(t);
  if (!store.exists()) return [];
  return store.locked(() => {
    const released: IP[] = [];
    for (const a of store.all()) {
      const keep = valid.some((v) => v.containerID === a.containerId && (a.ifname === '' || v.ifname === a.ifname));
      if (!keep) {
        store.release(a.ip);
        released.push(a.ip);
      }
    }
    return released;
  });
}

export type IpamStatus =
  | { type: 'available'; free: bigint[] }
  | { type: 'exhausted'; rangeSet: number; description: string };

/** How many addresses each range set still has, or the first exhausted one. */
export function ipamUsage(t: IpamTarget): IpamStatus {
  const store = storeFor(t);
  const reserved = store.exists() ? store.reservedSet() : new Set<string>();
  const free: bigint[] = [];
  for (const [idx, rs] of t.config.rangeSets.entries()) {
    const has = pickFree(rs, (x) => reserved.has(formatIP(x)));
    if (!has) return { type: 'exhausted', rangeSet: idx, description: describeRangeSet(rs) };
    const used = [...reserved].filter((s) => {
      const ip = tryParseIP(s);
      return ip !== undefined && rangeSetContains(rs, ip);
    }).length;
    free.push(usableCount(rs) - BigInt(used));
  }
  return { type: 'available', free };
}

/**
 * STATUS: code 50 (cannot serve ADD) when a range set is exhausted, since ADD needs one address
 * from every set. Existing containers are unaffected, so 51 does not apply.
 */
export async function ipamStatus(t: IpamTarget): Promise<void> {
  const s = ipamUsage(t);
  if (s.type === 'exhausted') {
    throw new WeftError(CniCode.PluginNotAvailable, `no IP addresses available in range set ${s.description} (range set ${s.rangeSet})`);
  }
}

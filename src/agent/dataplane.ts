// Desired → kernel for the objects a backend owns: routes (recognised by weft's own route
// protocol number), permanent neighbours and FDB entries on the backend's device. A full sync
// dumps each kind, diffs and writes one netlink batch, so thousands of peers cost a few round
// trips and a pass over an already-correct kernel writes nothing. Between full syncs (the repair
// pass), lease events take the incremental path (DataplaneSync): the diff is against what the
// last sync wrote, so a burst of events costs its own writes, not a dump of every table.
import type { FdbInput, Netlink, NetlinkOp, NeighInput, Route } from '../netlink/index.js';
import { type Cidr, type IP, ipEquals } from '../net/ip.js';

/** rtm_protocol of every route weftd writes (`ip route show proto 87`); iproute2 leaves 5–98 free. */
export const WEFT_ROUTE_PROTOCOL = 87;

export interface DesiredRoute {
  readonly dst: Cidr;
  readonly gateway: IP;
  readonly oif: number;
  readonly onlink: boolean;
}

export interface DesiredNeigh {
  readonly ip: IP;
  readonly mac: string;
}

export interface DesiredFdb {
  readonly mac: string;
  readonly dst: IP;
}

export interface DesiredState {
  readonly routes: readonly DesiredRoute[];
  /** Permanent neighbours on `device` (ignored without a device). */
  readonly neighs: readonly DesiredNeigh[];
  /** FDB entries on `device` (ignored without a device). */
  readonly fdb: readonly DesiredFdb[];
  /** The backend's own device (vxlan), whose neighbour and FDB tables it owns entirely. */
  readonly device?: number;
}

export interface SyncResult {
  readonly repairs: number;
  readonly removals: number;
  /** Kernel refusals, one line each. */
  readonly errors: readonly string[];
}

function routeMatches(have: Route, want: DesiredRoute): boolean {
  return have.gateway !== undefined && ipEquals(have.gateway, want.gateway) && have.oif === want.oif
    && have.onlink === want.onlink && have.type === 'unicast';
}

const NUD_PERMANENT = 0x80;

const routeKey = (dst: Cidr): string => `${dst.ip.value}/${dst.prefix}`;
const neighKey = (ip: IP): string => `${ip.family}:${ip.value}`;
const fdbKey = (mac: string, dst: IP | undefined): string => `${mac.toLowerCase()}>${dst ? neighKey(dst) : ''}`;

function sameDesiredRoute(a: DesiredRoute, b: DesiredRoute): boolean {
  return ipEquals(a.gateway, b.gateway) && a.oif === b.oif && a.onlink === b.onlink;
}

function routeOp(w: DesiredRoute): NetlinkOp {
  return { op: 'replaceRoute', route: { dst: w.dst, gateway: w.gateway, oif: w.oif, onlink: w.onlink, protocol: WEFT_ROUTE_PROTOCOL, scope: 'universe' } };
}

/**
 * Deletes first (a stale entry may stand in the way of its replacement), then neighbours and FDB
 * entries, routes last: a route is only usable once its next hop resolves, and "every route is
 * in" then means the whole peer is.
 */
function orderOps(ops: NetlinkOp[]): NetlinkOp[] {
  const rank = (o: NetlinkOp) => (o.op.startsWith('delete') ? 0 : o.op === 'replaceRoute' ? 2 : 1);
  return ops.sort((a, b) => rank(a) - rank(b));
}

/** Applies ops; returns the kernel's refusals and the set of ops it refused. */
function apply(nl: Netlink, ops: NetlinkOp[]): { errors: string[]; failed: Set<NetlinkOp> } {
  const errors: string[] = [];
  const failed = new Set<NetlinkOp>();
  if (ops.length === 0) return { errors, failed };
  orderOps(ops);
  const results = nl.applyBatch(ops);
  for (const [i, err] of results.entries()) {
    if (!err) continue;
    errors.push(err.message);
    failed.add(ops[i]!);
  }
  return { errors, failed };
}

export function syncDataplane(nl: Netlink, want: DesiredState): SyncResult {
  return new DataplaneSync(nl).sync(want, 'full');
}

/**
 * A backend's dataplane with a memory of what it last wrote. `full` dumps the kernel and fixes
 * every difference (start-up, the periodic repair); `incremental` writes only the difference
 * between `want` and the last sync's result, trusting the kernel still holds it — whatever
 * someone changed by hand meanwhile is the next full sync's business. Without a remembered
 * state (or when the device changed), incremental falls back to full.
 */
export class DataplaneSync {
  private routes: Map<string, DesiredRoute> | undefined;
  private neighs = new Map<string, DesiredNeigh>();
  private fdb = new Map<string, DesiredFdb>();
  private device: number | undefined;

  constructor(private readonly nl: Netlink) {}

  /** Forget what was written (e.g. the device was re-created): the next sync is full. */
  forget(): void {
    this.routes = undefined;
  }

  sync(want: DesiredState, mode: 'full' | 'incremental'): SyncResult {
    if (mode === 'full' || this.routes === undefined || this.device !== want.device) return this.full(want);
    return this.incremental(want, this.routes);
  }

  /** Remembers `want` minus what the kernel refused (so the next pass tries those again). */
  private remember(want: DesiredState, failed: Set<NetlinkOp>): void {
    const routes = new Map<string, DesiredRoute>();
    const neighs = new Map<string, DesiredNeigh>();
    const fdb = new Map<string, DesiredFdb>();
    const refused = new Set<string>();
    for (const o of failed) {
      if (o.op === 'replaceRoute' && o.route.dst !== 'default') refused.add(`r${routeKey(o.route.dst)}`);
      else if (o.op === 'replaceNeigh') refused.add(`n${neighKey(o.neigh.ip)}`);
      else if (o.op === 'replaceFdb') refused.add(`f${fdbKey(o.fdb.mac, o.fdb.dst)}`);
    }
    for (const w of want.routes) { const k = routeKey(w.dst); if (!refused.has(`r${k}`)) routes.set(k, w); }
    if (want.device !== undefined) {
      for (const w of want.neighs) { const k = neighKey(w.ip); if (!refused.has(`n${k}`)) neighs.set(k, w); }
      for (const w of want.fdb) { const k = fdbKey(w.mac, w.dst); if (!refused.has(`f${k}`)) fdb.set(k, w); }
    }
    this.routes = routes;
    this.neighs = neighs;
    this.fdb = fdb;
    this.device = want.device;
  }

  private incremental(want: DesiredState, had: Map<string, DesiredRoute>): SyncResult {
    const ops: NetlinkOp[] = [];
    let repairs = 0;
    let removals = 0;
    const seenRoutes = new Set<string>();
    for (const w of want.routes) {
      const k = routeKey(w.dst);
      seenRoutes.add(k);
      const h = had.get(k);
      if (h && sameDesiredRoute(h, w)) continue;
      ops.push(routeOp(w));
      repairs++;
    }
    for (const [k, h] of had) {
      if (seenRoutes.has(k)) continue;
      ops.push({ op: 'deleteRoute', route: { dst: h.dst, gateway: h.gateway, oif: h.oif, protocol: WEFT_ROUTE_PROTOCOL } });
      removals++;
    }
    const link = want.device;
    if (link !== undefined) {
      const seenNeigh = new Set<string>();
      for (const w of want.neighs) {
        const k = neighKey(w.ip);
        seenNeigh.add(k);
        const h = this.neighs.get(k);
        if (h && h.mac.toLowerCase() === w.mac.toLowerCase()) continue;
        ops.push({ op: 'replaceNeigh', neigh: { link, ip: w.ip, mac: w.mac, state: NUD_PERMANENT } });
        repairs++;
      }
      for (const [k, h] of this.neighs) {
        if (seenNeigh.has(k)) continue;
        ops.push({ op: 'deleteNeigh', link, ip: h.ip });
        removals++;
      }
      const seenFdb = new Set<string>();
      for (const w of want.fdb) {
        const k = fdbKey(w.mac, w.dst);
        seenFdb.add(k);
        if (this.fdb.has(k)) continue;
        ops.push({ op: 'replaceFdb', fdb: { link, mac: w.mac, dst: w.dst, state: NUD_PERMANENT } });
        repairs++;
      }
      for (const [k, h] of this.fdb) {
        if (seenFdb.has(k)) continue;
        ops.push({ op: 'deleteFdb', fdb: { link, mac: h.mac, dst: h.dst } });
        removals++;
      }
    }
    const { errors, failed } = apply(this.nl, ops);
    this.remember(want, failed);
    return { repairs, removals, errors };
  }

  private full(want: DesiredState): SyncResult {
    const { nl } = this;
    const ops: NetlinkOp[] = [];
    let repairs = 0;
    let removals = 0;

    // Routes: every weft-protocol route in the main table is ours to keep equal to `want`.
    const haveRoutes = new Map<string, Route[]>();
    for (const r of nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL })) {
      const k = routeKey(r.dst);
      const list = haveRoutes.get(k);
      if (list) list.push(r);
      else haveRoutes.set(k, [r]);
    }
    const wantedRoutes = new Set<string>();
    for (const w of want.routes) {
      const k = routeKey(w.dst);
      wantedRoutes.add(k);
      const have = haveRoutes.get(k) ?? [];
      const good = have.find((h) => routeMatches(h, w));
      for (const h of have) {
        if (h === good) continue;
        ops.push({ op: 'deleteRoute', route: h });
        removals++;
      }
      if (!good) {
        ops.push(routeOp(w));
        repairs++;
      }
    }
    for (const [k, list] of haveRoutes) {
      if (wantedRoutes.has(k)) continue;
      for (const h of list) { ops.push({ op: 'deleteRoute', route: h }); removals++; }
    }

    if (want.device !== undefined) {
      const link = want.device;
      const haveNeigh = new Map(nl.listNeigh({ link, family: 4 }).map((n) => [neighKey(n.ip), n]));
      const wantedNeigh = new Set<string>();
      for (const w of want.neighs) {
        const k = neighKey(w.ip);
        wantedNeigh.add(k);
        const h = haveNeigh.get(k);
        if (h && h.permanent && h.mac?.toLowerCase() === w.mac.toLowerCase()) continue;
        const n: NeighInput = { link, ip: w.ip, mac: w.mac, state: NUD_PERMANENT };
        ops.push({ op: 'replaceNeigh', neigh: n });
        repairs++;
      }
      for (const [k, h] of haveNeigh) {
        if (wantedNeigh.has(k)) continue;
        ops.push({ op: 'deleteNeigh', link, ip: h.ip });
        removals++;
      }

      const haveFdb = new Map<string, { mac: string; dst: IP | undefined; permanent: boolean }>();
      for (const e of nl.listFdb({ link })) {
        // The kernel lists the device's own addresses as local entries; those are not ours.
        if (e.index !== link || e.master !== undefined) continue;
        haveFdb.set(fdbKey(e.mac, e.dst), { mac: e.mac, dst: e.dst, permanent: e.permanent });
      }
      const wantedFdb = new Set<string>();
      for (const w of want.fdb) {
        const k = fdbKey(w.mac, w.dst);
        wantedFdb.add(k);
        const h = haveFdb.get(k);
        if (h && h.permanent) continue;
        const f: FdbInput = { link, mac: w.mac, dst: w.dst, state: NUD_PERMANENT };
        ops.push({ op: 'replaceFdb', fdb: f });
        repairs++;
      }
      for (const [k, h] of haveFdb) {
        if (wantedFdb.has(k)) continue;
        ops.push({ op: 'deleteFdb', fdb: { link, mac: h.mac, ...(h.dst && { dst: h.dst }) } });
        removals++;
      }
    }

    const { errors, failed } = apply(nl, ops);
    this.remember(want, failed);
    return { repairs, removals, errors };
  }
}

/** Removes every weft-protocol route (backend shut down without keeping the dataplane). */
export function removeWeftRoutes(nl: Netlink): number {
  const routes = nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL });
  if (routes.length > 0) nl.applyBatch(routes.map((route) => ({ op: 'deleteRoute', route })));
  return routes.length;
}

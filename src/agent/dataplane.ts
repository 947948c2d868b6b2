// Desired → kernel for the objects a backend owns: routes (recognised by weft's own route
// protocol number), permanent neighbours and FDB entries on the backend's device. One dump per
// kind, a diff, and one netlink batch for every write, so thousands of peers cost a few round
// trips and a pass over an already-correct kernel writes nothing.
import type { FdbInput, Netlink, NetlinkOp, NeighInput, Route } from '../netlink/index.js';
import { type Cidr, type IP, formatCidr, formatIP, ipEquals } from '../net/ip.js';

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

export function syncDataplane(nl: Netlink, want: DesiredState): SyncResult {
  const ops: NetlinkOp[] = [];
  let repairs = 0;
  let removals = 0;

  // Routes: every weft-protocol route in the main table is ours to keep equal to `want`.
  const haveRoutes = new Map<string, Route[]>();
  for (const r of nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL })) {
    const k = formatCidr(r.dst);
    const list = haveRoutes.get(k);
    if (list) list.push(r);
    else haveRoutes.set(k, [r]);
  }
  const wantedRoutes = new Set<string>();
  for (const w of want.routes) {
    const k = formatCidr(w.dst);
    wantedRoutes.add(k);
    const have = haveRoutes.get(k) ?? [];
    const good = have.find((h) => routeMatches(h, w));
    for (const h of have) {
      if (h === good) continue;
      ops.push({ op: 'deleteRoute', route: h });
      removals++;
    }
    if (!good) {
      ops.push({ op: 'replaceRoute', route: { dst: w.dst, gateway: w.gateway, oif: w.oif, onlink: w.onlink, protocol: WEFT_ROUTE_PROTOCOL, scope: 'universe' } });
      repairs++;
    }
  }
  for (const [k, list] of haveRoutes) {
    if (wantedRoutes.has(k)) continue;
    for (const h of list) { ops.push({ op: 'deleteRoute', route: h }); removals++; }
  }

  if (want.device !== undefined) {
    const link = want.device;
    const haveNeigh = new Map(nl.listNeigh({ link, family: 4 }).map((n) => [formatIP(n.ip), n]));
    const wantedNeigh = new Set<string>();
    for (const w of want.neighs) {
      const k = formatIP(w.ip);
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

    const fdbKey = (mac: string, dst: IP | undefined) => `${mac.toLowerCase()}>${dst ? formatIP(dst) : ''}`;
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

  // Deletes first: a stale entry may stand in the way of its replacement.
  ops.sort((a, b) => Number(!a.op.startsWith('delete')) - Number(!b.op.startsWith('delete')));
  const errors: string[] = [];
  if (ops.length > 0) {
    const results = nl.applyBatch(ops);
    for (const err of results) if (err) errors.push(err.message);
  }
  return { repairs, removals, errors };
}

/** Removes every weft-protocol route (backend shut down without keeping the dataplane). */
export function removeWeftRoutes(nl: Netlink): number {
  const routes = nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL });
  if (routes.length > 0) nl.applyBatch(routes.map((route) => ({ op: 'deleteRoute', route })));
  return routes.length;
}

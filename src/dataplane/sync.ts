// Desired → kernel for the objects a backend owns: routes (recognised by weft's own route
// protocol number), permanent neighbours and FDB entries on the backend's device. A full sync
// dumps each kind, diffs and writes one netlink batch, so thousands of peers cost a few round
// trips and a pass over an already-correct kernel writes nothing. Between full syncs (the repair
// pass), lease events take the incremental path (DataplaneSync): the diff is against what the
// last sync wrote, so a burst of events costs its own writes, not a dump of every table. Routes
// name their next hop through a nexthop object where the kernel has them (src/netlink/nexthop.ts
// says why: bulk programming costs a third of the kernel time). weftd's full passes after the
// first run on a worker thread (syncOffLoop), so its event loop never waits for one.
import { isNetlinkError, type FdbInput, type Netlink, type NetlinkOp, type NeighInput, type NexthopObject, type Route } from '../netlink/index.js';
import { type Cidr, type IP, ipEquals } from '../net/ip.js';

import { Worker } from 'node:worker_threads';
import { workerScript } from '../worker-script.js';
import { CniCode, WeftError } from '../errors.js';
import { WEFT_ROUTE_PROTOCOL } from './protocols.js';
import type { FullPassReply, FullPassRequest } from './full-pass-worker.js';

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

/** A device of the backend's own (vxlan's), whose neighbour and FDB tables it owns entirely. */
export interface DesiredDevice {
  readonly index: number;
  /** Permanent neighbours on the device (both families). */
  readonly neighs: readonly DesiredNeigh[];
  readonly fdb: readonly DesiredFdb[];
}

export interface DesiredState {
  /** Weft-protocol routes of the main table, IPv4 and IPv6. */
  readonly routes: readonly DesiredRoute[];
  /** The backend's devices (none for routing-only backends). */
  readonly devices: readonly DesiredDevice[];
}

export interface SyncResult {
  readonly repairs: number;
  readonly removals: number;
  /** Kernel refusals, one line each. */
  readonly errors: readonly string[];
}

const NUD_PERMANENT = 0x80;

const routeKey = (dst: Cidr): string => `${dst.ip.family}:${dst.ip.value}/${dst.prefix}`;
const ipKey = (ip: IP): string => `${ip.family}:${ip.value}`;
const neighKey = (link: number, ip: IP): string => `${link}@${ipKey(ip)}`;
const fdbKey = (link: number, mac: string, dst: IP | undefined): string => `${link}@${mac.toLowerCase()}>${dst ? ipKey(dst) : ''}`;
/** Which devices a state owns: a change of them makes the next sync a full one. */
const devicesKey = (want: DesiredState): string => want.devices.map((d) => d.index).join(',');

/**
 * The nexthop object id a route via `gateway` uses: the IPv4 gateway itself as a number, so the
 * id is the same in every process and across restarts (nothing to persist, nothing to look up)
 * and two routes via one gateway share one object. IPv6 gateways keep the classic route form.
 */
export function nexthopIdFor(gateway: IP): number | undefined {
  if (gateway.family !== 4 || gateway.value === 0n) return undefined;
  return Number(gateway.value);
}

/** A nexthop dump's refusal by a kernel without nexthop objects (before 5.3: an unknown message type). */
function nexthopsUnsupported(err: unknown): boolean {
  return isNetlinkError(err, 'EOPNOTSUPP', 'EINVAL', 'EPROTONOSUPPORT');
}

/** The next hop a route needs, as a nexthop object would hold it. */
interface WantedNexthop {
  readonly gateway: IP;
  readonly oif: number;
  readonly onlink: boolean;
}

function sameNexthop(a: WantedNexthop, b: WantedNexthop): boolean {
  return ipEquals(a.gateway, b.gateway) && a.oif === b.oif && a.onlink === b.onlink;
}

/** A neighbour or FDB entry as written, with the device it is on. */
interface LinkNeigh { readonly link: number; readonly w: DesiredNeigh }
interface LinkFdb { readonly link: number; readonly w: DesiredFdb }

/**
 * fe80::/10 and ff00::/8: the kernel's own IPv6 neighbour discovery and multicast (MLD, router
 * solicitation) put these on any device, the IPv4 VXLAN device too; they are not ours to remove.
 */
function isKernelOwnNeighbour(ip: IP): boolean {
  return ip.family === 6 && (ip.value >> 118n === 0x3fan || ip.value >> 120n === 0xffn);
}

/** A route as written: its desired next hop and the nexthop object it points at (if any). */
interface WrittenRoute {
  readonly want: DesiredRoute;
  readonly nhid: number | undefined;
}

function routeOp(w: DesiredRoute, nhid: number | undefined): NetlinkOp {
  return nhid !== undefined
    ? { op: 'replaceRoute', route: { dst: w.dst, nhid, protocol: WEFT_ROUTE_PROTOCOL, scope: 'universe' } }
    : { op: 'replaceRoute', route: { dst: w.dst, gateway: w.gateway, oif: w.oif, onlink: w.onlink, protocol: WEFT_ROUTE_PROTOCOL, scope: 'universe' } };
}

function nexthopOp(id: number, n: WantedNexthop): NetlinkOp {
  return { op: 'replaceNexthop', nexthop: { id, gateway: n.gateway, oif: n.oif, onlink: n.onlink, protocol: WEFT_ROUTE_PROTOCOL } };
}

/** Does the kernel's route `have` already do what `want` (written as nhid, or classic) asks? */
function routeMatches(have: Route, want: DesiredRoute, nhid: number | undefined): boolean {
  if (have.type !== 'unicast') return false;
  if (nhid !== undefined) return have.nhid === nhid;
  return have.nhid === undefined && have.gateway !== undefined && ipEquals(have.gateway, want.gateway)
    && have.oif === want.oif && have.onlink === want.onlink;
}

/**
 * Deletes first — routes before the nexthop objects they use (a stale entry may stand in the
 * way of its replacement) — then neighbours, FDB entries and nexthop objects, routes last: a
 * route is only usable once its next hop resolves, and "every route is in" then means the whole
 * peer is.
 */
function rankOf(o: NetlinkOp): number {
  if (o.op === 'deleteRoute') return 0;
  if (o.op.startsWith('delete')) return 1;
  return o.op === 'replaceRoute' ? 3 : 2;
}

function orderOps(ops: NetlinkOp[]): NetlinkOp[] {
  return ops.sort((a, b) => rankOf(a) - rankOf(b));
}

/**
 * The nexthop object a route uses: none without nexthop objects, or when another owner holds
 * the id (the route then takes the classic form).
 */
function nhidOf(w: DesiredRoute, objects: boolean | undefined, foreign: ReadonlySet<number>): number | undefined {
  if (!objects) return undefined;
  const id = nexthopIdFor(w.gateway);
  return id !== undefined && !foreign.has(id) ? id : undefined;
}

/** The nexthop objects `want`'s routes need, by id. */
function wantedNexthopsOf(want: DesiredState, nhidFor: (w: DesiredRoute) => number | undefined): Map<number, WantedNexthop> {
  const out = new Map<number, WantedNexthop>();
  for (const w of want.routes) {
    const id = nhidFor(w);
    if (id !== undefined && !out.has(id)) out.set(id, { gateway: w.gateway, oif: w.oif, onlink: w.onlink });
  }
  return out;
}

function sameIds(a: readonly number[], b: ReadonlySet<number>): boolean {
  return a.length === b.size && a.every((id) => b.has(id));
}

/**
 * Below this many kernel objects (routes, neighbours, FDB entries) full passes stay on the
 * caller's thread: a pass over a few hundred objects blocks for a few milliseconds, while the
 * thread costs ~10 MB of RSS (a V8 isolate) for as long as it lives. 512 objects is 128 vxlan
 * peers (a route, nexthop, neighbour and FDB entry each) or 512 host-gw ones.
 */
export const FULL_PASS_THREAD_MIN_OBJECTS = 512;

function objectCount(want: DesiredState): number {
  let n = want.routes.length;
  for (const d of want.devices) n += d.neighs.length + d.fdb.length;
  return n;
}

/** The refused writes as keys remember() understands (strings: they cross threads). */
function refusedKeys(failed: ReadonlySet<NetlinkOp>): Set<string> {
  const refused = new Set<string>();
  for (const o of failed) {
    if (o.op === 'replaceRoute' && o.route.dst !== 'default') refused.add(`r${routeKey(o.route.dst)}`);
    // Every neighbour and FDB write here names its device by index.
    else if (o.op === 'replaceNeigh') refused.add(`n${neighKey(o.neigh.link as number, o.neigh.ip)}`);
    else if (o.op === 'replaceFdb') refused.add(`f${fdbKey(o.fdb.link as number, o.fdb.mac, o.fdb.dst)}`);
    else if (o.op === 'replaceNexthop') refused.add(`h${o.nexthop.id}`);
  }
  return refused;
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

export interface DataplaneSyncOptions {
  /**
   * Write routes through nexthop objects (default: when the kernel has them, Linux ≥ 5.3). They
   * make bulk programming ~3× cheaper in the kernel (see src/netlink/nexthop.ts); false keeps
   * the classic one-gateway-per-route form.
   */
  readonly nexthopObjects?: boolean;
  /**
   * syncOffLoop runs full passes (after the first) of FULL_PASS_THREAD_MIN_OBJECTS objects or
   * more on a worker thread (default true); false runs them all on the caller's thread, as
   * sync() does.
   */
  readonly fullPassThread?: boolean;
}

/**
 * A worker thread running fullPass (src/dataplane/full-pass-worker.ts), started on first use.
 * It keeps the process alive only while a pass is in flight. A thread that dies fails the
 * passes in flight; the next pass starts a new one.
 */
class FullPassThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve(o: FullPassOutcome): void; reject(e: Error): void }>();
  private nextId = 1;

  /** The thread holds a copy of the last state it was sent (a new thread holds none). */
  holdsWant = false;

  /** `want` undefined: the same state as the last call's. */
  run(nsPath: string | undefined, want: DesiredState | undefined, nexthopObjects: boolean | undefined): Promise<FullPassOutcome> {
    if (want === undefined && !this.holdsWant) return Promise.reject(new WeftError(CniCode.Internal, 'dataplane full-pass thread: no state to repeat'));
    const w = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.ref();
      w.postMessage({ id, nsPath, nexthopObjects, ...(want !== undefined && { want }) } satisfies FullPassRequest);
      if (want !== undefined) this.holdsWant = true;
    });
  }

  private start(): Worker {
    const w = new Worker(workerScript(import.meta.url, 'full-pass-worker'));
    w.unref();
    w.on('message', (r: FullPassReply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      if (r.ok) p?.resolve(r.outcome);
      else p?.reject(new WeftError(r.code, r.message, r.details));
    });
    const fail = (err: Error): void => {
      if (this.worker === w) {
        this.worker = undefined;
        this.holdsWant = false;
      }
      for (const p of this.pending.values()) p.reject(WeftError.wrap(err, CniCode.Internal, 'dataplane full-pass thread'));
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exited (code ${code})`)));
    this.worker = w;
    return w;
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    this.holdsWant = false;
    if (w) await w.terminate();
  }
}

/**
 * A backend's dataplane with a memory of what it last wrote. `full` dumps the kernel and fixes
 * every difference (start-up, the periodic repair); `incremental` writes only the difference
 * between `want` and the last sync's result, trusting the kernel still holds it — whatever
 * someone changed by hand meanwhile is the next full sync's business. Without a remembered
 * state (or when the device changed), incremental falls back to full.
 *
 * Routes point at nexthop objects (protocol 87, id = the gateway, see nexthopIdFor) when the
 * kernel supports them; an id already taken by an object weft did not write makes that route
 * fall back to the classic form rather than take someone else's object over.
 */
export class DataplaneSync {
  private routes: Map<string, WrittenRoute> | undefined;
  private nexthops = new Map<number, WantedNexthop>();
  private neighs = new Map<string, LinkNeigh>();
  private fdb = new Map<string, LinkFdb>();
  /** devicesKey of the state last written. */
  private devices = '';
  /** undefined until the first full sync has asked the kernel. */
  private nexthopObjects: boolean | undefined;
  /** Nexthop ids held by objects of other owners, as of the last full sync. */
  private foreign = new Set<number>();

  private readonly fullPassThread: boolean;
  private thread: FullPassThread | undefined;
  /** Counts remember() calls: what was last written changed since the thread's last pass? */
  private generation = 0;
  /** `generation` right after the thread's last pass was absorbed (-1: it holds nothing yet). */
  private threadGeneration = -1;
  /** The state the thread's last pass was given (or confirmed), by identity (see DesiredMemo). */
  private threadWant: DesiredState | undefined;
  /** The last syncOffLoop call, which the next one waits for. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly nl: Netlink, opts: DataplaneSyncOptions = {}) {
    if (opts.nexthopObjects === false) this.nexthopObjects = false;
    this.fullPassThread = opts.fullPassThread ?? true;
  }

  /** Forget what was written (e.g. the device was re-created): the next sync is full. */
  forget(): void {
    this.routes = undefined;
  }

  /** Whether routes are written through nexthop objects (undefined before the first full sync). */
  get usesNexthopObjects(): boolean | undefined {
    return this.nexthopObjects;
  }

  sync(want: DesiredState, mode: 'full' | 'incremental'): SyncResult {
    if (mode === 'full' || this.routes === undefined || this.devices !== devicesKey(want)) return this.full(want);
    return this.incremental(want, this.routes);
  }

  private nhidFor(w: DesiredRoute): number | undefined {
    return nhidOf(w, this.nexthopObjects, this.foreign);
  }

  private wantedNexthops(want: DesiredState): Map<number, WantedNexthop> {
    return wantedNexthopsOf(want, (w) => this.nhidFor(w));
  }

  /** Remembers `want` minus what the kernel refused (so the next pass tries those again). */
  private remember(want: DesiredState, nexthops: Map<number, WantedNexthop>, refused: ReadonlySet<string>): void {
    const routes = new Map<string, WrittenRoute>();
    const neighs = new Map<string, LinkNeigh>();
    const fdb = new Map<string, LinkFdb>();
    for (const w of want.routes) {
      const k = routeKey(w.dst);
      const nhid = this.nhidFor(w);
      if (!refused.has(`r${k}`) && (nhid === undefined || !refused.has(`h${nhid}`))) routes.set(k, { want: w, nhid });
    }
    const kept = new Map<number, WantedNexthop>();
    for (const [id, n] of nexthops) if (!refused.has(`h${id}`)) kept.set(id, n);
    for (const { index: link, neighs: ns, fdb: fs } of want.devices) {
      for (const w of ns) { const k = neighKey(link, w.ip); if (!refused.has(`n${k}`)) neighs.set(k, { link, w }); }
      for (const w of fs) { const k = fdbKey(link, w.mac, w.dst); if (!refused.has(`f${k}`)) fdb.set(k, { link, w }); }
    }
    this.generation++;
    this.routes = routes;
    this.nexthops = kept;
    this.neighs = neighs;
    this.fdb = fdb;
    this.devices = devicesKey(want);
  }

  private incremental(want: DesiredState, had: Map<string, WrittenRoute>): SyncResult {
    const { ops, repairs, removals, nexthops } = this.plan(want, had);
    const { errors, failed } = apply(this.nl, ops);
    this.remember(want, nexthops, refusedKeys(failed));
    return { repairs, removals, errors };
  }

  /** The writes that take the kernel from what was last written to `want`. */
  private plan(want: DesiredState, had: Map<string, WrittenRoute>): { ops: NetlinkOp[]; repairs: number; removals: number; nexthops: Map<number, WantedNexthop> } {
    const ops: NetlinkOp[] = [];
    let repairs = 0;
    let removals = 0;
    const nexthops = this.wantedNexthops(want);
    for (const [id, n] of nexthops) {
      const h = this.nexthops.get(id);
      if (h && sameNexthop(h, n)) continue;
      ops.push(nexthopOp(id, n));
    }
    const seenRoutes = new Set<string>();
    for (const w of want.routes) {
      const k = routeKey(w.dst);
      seenRoutes.add(k);
      const h = had.get(k);
      const nhid = this.nhidFor(w);
      if (h && h.nhid === nhid && sameNexthop(h.want, w)) continue;
      ops.push(routeOp(w, nhid));
      repairs++;
    }
    for (const [k, h] of had) {
      if (seenRoutes.has(k)) continue;
      ops.push({ op: 'deleteRoute', route: h.nhid !== undefined
        ? { dst: h.want.dst, protocol: WEFT_ROUTE_PROTOCOL }
        : { dst: h.want.dst, gateway: h.want.gateway, oif: h.want.oif, protocol: WEFT_ROUTE_PROTOCOL } });
      removals++;
    }
    for (const id of this.nexthops.keys()) if (!nexthops.has(id)) ops.push({ op: 'deleteNexthop', id });
    const seenNeigh = new Set<string>();
    const seenFdb = new Set<string>();
    for (const { index: link, neighs, fdb } of want.devices) {
      for (const w of neighs) {
        const k = neighKey(link, w.ip);
        seenNeigh.add(k);
        const h = this.neighs.get(k);
        if (h && h.w.mac.toLowerCase() === w.mac.toLowerCase()) continue;
        ops.push({ op: 'replaceNeigh', neigh: { link, ip: w.ip, mac: w.mac, state: NUD_PERMANENT } });
        repairs++;
      }
      for (const w of fdb) {
        const k = fdbKey(link, w.mac, w.dst);
        seenFdb.add(k);
        if (this.fdb.has(k)) continue;
        ops.push({ op: 'replaceFdb', fdb: { link, mac: w.mac, dst: w.dst, state: NUD_PERMANENT } });
        repairs++;
      }
    }
    for (const [k, h] of this.neighs) {
      if (seenNeigh.has(k)) continue;
      ops.push({ op: 'deleteNeigh', link: h.link, ip: h.w.ip });
      removals++;
    }
    for (const [k, h] of this.fdb) {
      if (seenFdb.has(k)) continue;
      ops.push({ op: 'deleteFdb', fdb: { link: h.link, mac: h.w.mac, dst: h.w.dst } });
      removals++;
    }
    return { ops, repairs, removals, nexthops };
  }

  /**
   * sync() without holding up the caller's event loop: a full pass over thousands of peers is
   * tens of milliseconds of blocking netlink dumps, decoding and writes (hundreds under load),
   * so it runs on a worker thread and only its outcome comes back here. The first full pass
   * stays on this thread: at start-up nothing else is served yet, and the peers are programmed
   * without waiting for a thread to start. Incremental passes write only a difference and stay
   * here too. Calls run one after another, in order.
   */
  syncOffLoop(want: DesiredState, mode: 'full' | 'incremental'): Promise<SyncResult> {
    const run = async (): Promise<SyncResult> => {
      const full = mode === 'full' || this.routes === undefined || this.devices !== devicesKey(want);
      if (!full || this.routes === undefined || this.fullPassThread === false) return this.sync(want, mode);
      if (objectCount(want) < FULL_PASS_THREAD_MIN_OBJECTS) {
        // A small dataplane's full pass takes a few milliseconds here; a thread would cost
        // weftd ~10 MB of RSS for nothing. One left from a larger cluster is let go.
        if (this.thread) await this.stopThread();
        return this.sync(want, mode);
      }
      const thread = (this.thread ??= new FullPassThread());
      // A repair pass mostly wants what the last one did: then the thread checks the kernel against
      // the copy it kept, and neither side copies or re-remembers thousands of objects again.
      // The very object the thread last had needs no diff to know it is the same.
      const same = thread.holdsWant && this.threadGeneration === this.generation && this.devices === devicesKey(want)
        && (want === this.threadWant || this.plan(want, this.routes).ops.length === 0);
      const out = await thread.run(this.nl.nsPath, same ? undefined : want, this.nexthopObjects);
      this.threadWant = want;
      if (same && out.refused.length === 0 && out.nexthopObjects === this.nexthopObjects && sameIds(out.foreign, this.foreign)) {
        return { repairs: out.repairs, removals: out.removals, errors: out.errors };
      }
      const r = this.absorb(want, out);
      this.threadGeneration = this.generation;
      return r;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }

  /** Stops the full-pass thread (if one was started); the kernel state stays. */
  async close(): Promise<void> {
    await this.queue;
    await this.stopThread();
  }

  private async stopThread(): Promise<void> {
    const t = this.thread;
    this.thread = undefined;
    this.threadGeneration = -1;
    await t?.close();
  }

  private full(want: DesiredState): SyncResult {
    return this.absorb(want, fullPass(this.nl, want, this.nexthopObjects));
  }

  /** Takes a full pass's findings (made on this thread or on the worker) as what was written. */
  private absorb(want: DesiredState, out: FullPassOutcome): SyncResult {
    this.nexthopObjects = out.nexthopObjects;
    this.foreign = new Set(out.foreign);
    this.remember(want, this.wantedNexthops(want), new Set(out.refused));
    return { repairs: out.repairs, removals: out.removals, errors: out.errors };
  }
}

/** What a full pass found and did; plain data, so it can come back from a worker thread. */
export interface FullPassOutcome {
  readonly repairs: number;
  readonly removals: number;
  readonly errors: string[];
  /** Keys (see refusedKeys) of the writes the kernel refused. */
  readonly refused: string[];
  /** Nexthop ids held by objects of other owners. */
  readonly foreign: number[];
  readonly nexthopObjects: boolean;
}

/**
 * The kernel's nexthop objects, and whether routes go through them: `known` is the caller's
 * earlier finding (undefined: ask the kernel; a kernel without them refuses the dump).
 */
function listNexthopObjects(nl: Netlink, known: boolean | undefined): { objects: NexthopObject[]; supported: boolean } {
  if (known === false) return { objects: [], supported: false };
  try {
    return { objects: nl.listNexthops(), supported: true };
  } catch (err) {
    if (known === undefined && nexthopsUnsupported(err)) return { objects: [], supported: false };
    throw err;
  }
}

/**
 * Dumps the kernel, diffs against `want` and writes the difference in one batch. Stateless: the
 * caller keeps the outcome (DataplaneSync.absorb), so it can run on another thread.
 */
export function fullPass(nl: Netlink, want: DesiredState, nexthopObjects: boolean | undefined): FullPassOutcome {
    const ops: NetlinkOp[] = [];
    let repairs = 0;
    let removals = 0;

    // Nexthop objects: every protocol-87 object is ours; an id someone else holds is left alone
    // and the routes that would use it are written the classic way.
    const listed = listNexthopObjects(nl, nexthopObjects);
    const haveNh = new Map(listed.objects.map((n) => [n.id, n]));
    const foreign = new Set([...haveNh.values()].filter((n) => n.protocol !== WEFT_ROUTE_PROTOCOL).map((n) => n.id));
    const nhidFor = (w: DesiredRoute): number | undefined => nhidOf(w, listed.supported, foreign);
    const nexthops = wantedNexthopsOf(want, nhidFor);
    for (const [id, n] of nexthops) {
      const h = haveNh.get(id);
      if (h && !h.group && !h.blackhole && h.gateway !== undefined && h.oif !== undefined
        && sameNexthop({ gateway: h.gateway, oif: h.oif, onlink: h.onlink }, n)) continue;
      ops.push(nexthopOp(id, n));
      repairs++;
    }
    for (const h of haveNh.values()) {
      if (h.protocol !== WEFT_ROUTE_PROTOCOL || nexthops.has(h.id)) continue;
      ops.push({ op: 'deleteNexthop', id: h.id });
      removals++;
    }

    // Routes: every weft-protocol route in the main table is ours to keep equal to `want`.
    const haveRoutes = new Map<string, Route[]>();
    for (const r of [...nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL }), ...nl.listRoutes({ family: 6, protocol: WEFT_ROUTE_PROTOCOL })]) {
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
      const nhid = nhidFor(w);
      const good = have.find((h) => routeMatches(h, w, nhid));
      // Without a good one, the first route for the destination is replaced in place (no gap in
      // forwarding, e.g. when the classic form turns into a nexthop object); the rest go.
      const replaced = good ? undefined : have[0];
      for (const h of have) {
        if (h === good || h === replaced) continue;
        ops.push({ op: 'deleteRoute', route: h });
        removals++;
      }
      if (!good) {
        ops.push(routeOp(w, nhid));
        repairs++;
      }
    }
    for (const [k, list] of haveRoutes) {
      if (wantedRoutes.has(k)) continue;
      for (const h of list) { ops.push({ op: 'deleteRoute', route: h }); removals++; }
    }

    for (const { index: link, neighs, fdb } of want.devices) {
      const haveNeigh = new Map([...nl.listNeigh({ link, family: 4 }), ...nl.listNeigh({ link, family: 6 })]
        .map((n) => [neighKey(link, n.ip), n]));
      const wantedNeigh = new Set<string>();
      for (const w of neighs) {
        const k = neighKey(link, w.ip);
        wantedNeigh.add(k);
        const h = haveNeigh.get(k);
        if (h && h.permanent && h.mac?.toLowerCase() === w.mac.toLowerCase()) continue;
        const n: NeighInput = { link, ip: w.ip, mac: w.mac, state: NUD_PERMANENT };
        ops.push({ op: 'replaceNeigh', neigh: n });
        repairs++;
      }
      for (const [k, h] of haveNeigh) {
        if (wantedNeigh.has(k) || isKernelOwnNeighbour(h.ip)) continue;
        ops.push({ op: 'deleteNeigh', link, ip: h.ip });
        removals++;
      }

      const haveFdb = new Map<string, { mac: string; dst: IP | undefined; permanent: boolean }>();
      for (const e of nl.listFdb({ link })) {
        // The kernel lists the device's own addresses as local entries; those are not ours.
        if (e.index !== link || e.master !== undefined) continue;
        haveFdb.set(fdbKey(link, e.mac, e.dst), { mac: e.mac, dst: e.dst, permanent: e.permanent });
      }
      const wantedFdb = new Set<string>();
      for (const w of fdb) {
        const k = fdbKey(link, w.mac, w.dst);
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
    return { repairs, removals, errors, refused: [...refusedKeys(failed)], foreign: [...foreign], nexthopObjects: listed.supported };
}

/**
 * Removes every weft-protocol route and nexthop object (backend shut down without keeping the
 * dataplane). Returns the number of routes removed.
 */
export function removeWeftRoutes(nl: Netlink): number {
  const routes = [...nl.listRoutes({ family: 4, protocol: WEFT_ROUTE_PROTOCOL }), ...nl.listRoutes({ family: 6, protocol: WEFT_ROUTE_PROTOCOL })];
  const ops: NetlinkOp[] = routes.map((route) => ({ op: 'deleteRoute', route }));
  let objects: NexthopObject[] = [];
  try {
    objects = nl.listNexthops();
  } catch (err) {
    if (!nexthopsUnsupported(err)) throw err;
  }
  for (const n of objects) if (n.protocol === WEFT_ROUTE_PROTOCOL) ops.push({ op: 'deleteNexthop', id: n.id });
  if (ops.length > 0) nl.applyBatch(ops);
  return routes.length;
}

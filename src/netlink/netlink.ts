// The dataplane API: one Netlink handle per network namespace, synchronous calls, typed results.
// Writes are plain kernel requests (so they fail loudly with the kernel's reason); deletes report
// whether the thing existed instead of failing when it is already gone, which keeps CNI DEL and
// the agent's repair loop idempotent.

import { closeSync, openSync } from 'node:fs';
import { WeftError, CniCode } from '../errors.js';
import { formatCidr, formatIP, type Cidr, type IP, type IPFamily } from '../net/ip.js';
import * as C from './constants.js';
import { isNetlinkError, type NetlinkError } from './error.js';
import { NetlinkSocket } from './socket.js';
import type { RequestSpec } from './message.js';
import {
  bridgePortSetRequest,
  decodeLink,
  linkCreateRequest,
  linkDeleteRequest,
  linkDumpRequest,
  linkGroupDeleteRequest,
  linkGetRequest,
  linkSetRequest,
  type Link,
  type LinkCreateSpec,
  type MacvlanMode,
} from './link.js';
import { addressAddRequest, addressDeleteRequest, addressDumpRequest, decodeAddress, type Address, type AddressOptions } from './addr.js';
import { decodeNsid, nsidGetRequest } from './nsid.js';
import { decodeNexthop, nexthopDeleteRequest, nexthopDumpRequest, nexthopReplaceRequest, type NexthopObject, type NexthopSpec } from './nexthop.js';
import { decodeRoute, routeDumpRequest, routeRequest, type Route, type RouteFilter, type RouteSpec } from './route.js';
import {
  decodeFdb,
  decodeNeigh,
  fdbDumpRequest,
  fdbRequest,
  neighDeleteRequest,
  neighDumpRequest,
  neighReplaceRequest,
  type FdbEntry,
  type FdbOp,
  type Neigh,
} from './neigh.js';

/** A link by index, by name, or a Link already looked up. */
export type LinkRef = number | string | Link;

export interface VethOptions {
  readonly name: string;
  readonly peerName: string;
  /** Create the peer directly in this namespace (/run/netns/X or /proc/PID/ns/net). */
  readonly peerNsPath?: string;
  /** Create the first end (name) in this namespace instead of the handle's own. */
  readonly nsPath?: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly peerMac?: string;
  readonly up?: boolean;
  /** Bring the peer up too (a second request, in the peer's namespace). */
  readonly peerUp?: boolean;
}

export interface BridgeOptions {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly vlanFiltering?: boolean;
  readonly up?: boolean;
}

export interface VxlanOptions {
  readonly name: string;
  readonly vni: number;
  readonly local?: IP;
  readonly group?: IP;
  /** UDP destination port; the kernel's default is 8472 (Linux) when unset. */
  readonly port?: number;
  readonly learning?: boolean;
  /** Underlay device. */
  readonly dev?: LinkRef;
  readonly ttl?: number;
  readonly mtu?: number;
  readonly mac?: string;
  readonly up?: boolean;
}

export interface MacvlanOptions {
  readonly name: string;
  /** The parent device, in this handle's namespace. */
  readonly master: LinkRef;
  readonly mode: MacvlanMode;
  readonly mtu?: number;
  readonly mac?: string;
  /** Create the macvlan directly in this namespace. */
  readonly nsPath?: string;
  readonly up?: boolean;
}

export interface DummyOptions {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly nsPath?: string;
  readonly up?: boolean;
}

export interface LinkSettings {
  readonly up?: boolean;
  readonly mtu?: number;
  readonly name?: string;
  /** Enslave to this bridge; null releases the link from its master. */
  readonly master?: LinkRef | null;
  readonly promisc?: boolean;
  readonly mac?: string;
  /** Move the link into another namespace. */
  readonly nsPath?: string;
  /** Device group (0 = default). */
  readonly group?: number;
}

/** RouteSpec with oif also accepted by name. A Route from listRoutes is a valid RouteInput. */
export type RouteInput = Omit<RouteSpec, 'oif'> & { readonly oif?: LinkRef };

export interface NeighInput {
  readonly link: LinkRef;
  readonly ip: IP;
  readonly mac: string;
  readonly state?: number;
}

/** NexthopSpec with oif also accepted by name. */
export type NexthopInput = Omit<NexthopSpec, 'oif'> & { readonly oif: LinkRef };

export interface FdbInput {
  readonly link: LinkRef;
  readonly mac: string;
  readonly dst?: IP;
  readonly vni?: number;
  readonly port?: number;
  readonly vlan?: number;
  /** The master bridge's table (NTF_MASTER) instead of the device's own (NTF_SELF). */
  readonly master?: boolean;
  readonly state?: number;
}


/** One write in a batch (see Netlink.applyBatch). Deletes of things already gone count as done. */
export type NetlinkOp =
  | { readonly op: 'replaceRoute'; readonly route: RouteInput }
  | { readonly op: 'deleteRoute'; readonly route: RouteInput }
  | { readonly op: 'replaceNeigh'; readonly neigh: NeighInput }
  | { readonly op: 'deleteNeigh'; readonly link: LinkRef; readonly ip: IP }
  | { readonly op: 'replaceFdb'; readonly fdb: FdbInput }
  | { readonly op: 'deleteFdb'; readonly fdb: Omit<FdbInput, 'state'> }
  | { readonly op: 'replaceNexthop'; readonly nexthop: NexthopInput }
  | { readonly op: 'deleteNexthop'; readonly id: number };

function describeOp(o: NetlinkOp): string {
  switch (o.op) {
    case 'replaceRoute': return `replace route ${describeRoute(o.route)}`;
    case 'deleteRoute': return `delete route ${describeRoute(o.route)}`;
    case 'replaceNeigh': return `replace neighbour ${formatIP(o.neigh.ip)} lladdr ${o.neigh.mac}`;
    case 'deleteNeigh': return `delete neighbour ${formatIP(o.ip)}`;
    case 'replaceFdb': return `replace fdb ${o.fdb.mac}${o.fdb.dst ? ` dst ${formatIP(o.fdb.dst)}` : ''}`;
    case 'deleteFdb': return `delete fdb ${o.fdb.mac}${o.fdb.dst ? ` dst ${formatIP(o.fdb.dst)}` : ''}`;
    case 'replaceNexthop': return `replace nexthop id ${o.nexthop.id} via ${formatIP(o.nexthop.gateway)}`;
    case 'deleteNexthop': return `delete nexthop id ${o.id}`;
  }
}

function withNsFd<T>(nsPath: string | undefined, fn: (fd: number | undefined) => T): T {
  if (nsPath === undefined) return fn(undefined);
  let fd: number;
  try {
    fd = openSync(nsPath, 'r');
  } catch (err) {
    throw new WeftError(CniCode.Namespace, `cannot open network namespace ${nsPath}: ${(err as Error).message}`, '', { cause: err });
  }
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

/** The optional settings every created link takes, spread into its create spec only when set. */
function commonLinkSpec(o: { readonly mtu?: number; readonly mac?: string; readonly up?: boolean }, nsFd: number | undefined) {
  return {
    ...(o.mtu !== undefined && { mtu: o.mtu }),
    ...(o.mac !== undefined && { mac: o.mac }),
    ...(nsFd !== undefined && { nsFd }),
    ...(o.up !== undefined && { up: o.up }),
  };
}

function describeRoute(r: RouteInput): string {
  const dst = r.dst === 'default' ? 'default' : formatCidr(r.dst);
  const parts = [dst];
  if (r.nhid !== undefined) parts.push(`nhid ${r.nhid}`);
  if (r.gateway) parts.push(`via ${formatIP(r.gateway)}`);
  if (r.oif !== undefined) parts.push(`dev ${typeof r.oif === 'object' ? r.oif.name : r.oif}`);
  if (r.table !== undefined) parts.push(`table ${r.table}`);
  return parts.join(' ');
}

export class Netlink {
  readonly nsPath: string | undefined;
  private readonly sock: NetlinkSocket;

  private constructor(sock: NetlinkSocket, nsPath: string | undefined) {
    this.sock = sock;
    this.nsPath = nsPath;
  }

  /** A handle on the namespace at nsPath (default: the caller's own). */
  static open(nsPath?: string, opts: { timeoutMs?: number } = {}): Netlink {
    return new Netlink(NetlinkSocket.open({ ...(nsPath !== undefined && { nsPath }), ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }) }), nsPath);
  }

  /** Opens a handle, runs fn, closes the handle. */
  static with<T>(nsPath: string | undefined, fn: (nl: Netlink) => T): T {
    const nl = Netlink.open(nsPath);
    try {
      return fn(nl);
    } finally {
      nl.close();
    }
  }

  close(): void {
    this.sock.close();
  }

  private where(): string {
    return this.nsPath ? ` in ${this.nsPath}` : '';
  }

  // ---- links ----

  /** Every link; `stats` adds each one's counters (Link.stats). */
  listLinks(opts: { readonly stats?: boolean } = {}): Link[] {
    return this.sock.dump(linkDumpRequest(opts), `list links${this.where()}`, C.RTM_NEWLINK).map(decodeLink);
  }

  getLink(ref: LinkRef): Link | undefined {
    const key = typeof ref === 'object' ? ref.index : ref;
    try {
      return decodeLink(this.sock.query(linkGetRequest(key), `get link ${key}${this.where()}`, C.RTM_NEWLINK));
    } catch (err) {
      if (isNetlinkError(err, 'ENODEV')) return undefined;
      throw err;
    }
  }

  /** Like getLink, but a missing link is an error naming it. */
  requireLink(ref: LinkRef): Link {
    const link = this.getLink(ref);
    if (!link) throw new WeftError(CniCode.Netlink, `no link ${typeof ref === 'object' ? ref.name : JSON.stringify(ref)}${this.where()}`);
    return link;
  }

  private indexOf(ref: LinkRef): number {
    if (typeof ref === 'number') return ref;
    if (typeof ref === 'object') return ref.index;
    return this.requireLink(ref).index;
  }

  private create(spec: LinkCreateSpec, what: string, resultNs: string | undefined): Link {
    this.sock.request(linkCreateRequest(spec), `create ${what}${this.where()}`);
    if (resultNs === undefined) return this.requireLink(spec.name);
    return Netlink.with(resultNs, (other) => other.requireLink(spec.name));
  }

  /** Creates a veth pair; the peer is born directly in peerNsPath when given. Returns the first end. */
  createVeth(o: VethOptions): Link {
    const link = withNsFd(o.nsPath, (fd) =>
      withNsFd(o.peerNsPath, (peerFd) =>
        this.create(
          {
            kind: 'veth',
            name: o.name,
            ...commonLinkSpec(o, fd),
            peer: {
              name: o.peerName,
              ...(o.mtu !== undefined && { mtu: o.mtu }),
              ...(o.peerMac !== undefined && { mac: o.peerMac }),
              ...(peerFd !== undefined && { nsFd: peerFd }),
            },
          },
          `veth ${o.name}${o.nsPath ? ` in ${o.nsPath}` : ''} (peer ${o.peerName}${o.peerNsPath ? ` in ${o.peerNsPath}` : ''})`,
          o.nsPath,
        ),
      ),
    );
    if (o.peerUp) {
      // The kernel configures the peer before the pair is linked, so IFF_UP on the peer inside
      // the create request fails with ENOTCONN; it takes a second request.
      if (o.peerNsPath === undefined || o.peerNsPath === this.nsPath) this.setLink(o.peerName, { up: true });
      else Netlink.with(o.peerNsPath, (peerNl) => peerNl.setLink(o.peerName, { up: true }));
    }
    return link;
  }

  createBridge(o: BridgeOptions): Link {
    return this.create(
      {
        kind: 'bridge',
        name: o.name,
        ...commonLinkSpec(o, undefined),
        ...(o.vlanFiltering !== undefined && { vlanFiltering: o.vlanFiltering }),
      },
      `bridge ${o.name}`,
      undefined,
    );
  }

  createVxlan(o: VxlanOptions): Link {
    const dev = o.dev !== undefined ? this.indexOf(o.dev) : undefined;
    return this.create(
      {
        kind: 'vxlan',
        name: o.name,
        vni: o.vni,
        ...(o.local && { local: o.local }),
        ...(o.group && { group: o.group }),
        ...(o.port !== undefined && { port: o.port }),
        ...(o.learning !== undefined && { learning: o.learning }),
        ...(dev !== undefined && { dev }),
        ...(o.ttl !== undefined && { ttl: o.ttl }),
        ...commonLinkSpec(o, undefined),
      },
      `vxlan ${o.name} (vni ${o.vni})`,
      undefined,
    );
  }

  /** Creates a macvlan on master (in this namespace), directly inside nsPath when given. */
  createMacvlan(o: MacvlanOptions): Link {
    const master = this.indexOf(o.master);
    return withNsFd(o.nsPath, (fd) =>
      this.create(
        {
          kind: 'macvlan',
          name: o.name,
          master,
          mode: o.mode,
          ...commonLinkSpec(o, fd),
        },
        `macvlan ${o.name} on ${master}${o.nsPath ? ` into ${o.nsPath}` : ''}`,
        o.nsPath,
      ),
    );
  }

  /** A dummy device (needs the kernel's dummy driver). */
  createDummy(o: DummyOptions): Link {
    return withNsFd(o.nsPath, (fd) =>
      this.create(
        {
          kind: 'dummy',
          name: o.name,
          ...commonLinkSpec(o, fd),
        },
        `dummy ${o.name}`,
        o.nsPath,
      ),
    );
  }

  setLink(ref: LinkRef, s: LinkSettings): void {
    const index = this.indexOf(ref);
    const master = s.master === undefined ? undefined : s.master === null ? null : this.indexOf(s.master);
    withNsFd(s.nsPath, (fd) =>
      this.sock.request(
        linkSetRequest(index, {
          ...(s.up !== undefined && { up: s.up }),
          ...(s.mtu !== undefined && { mtu: s.mtu }),
          ...(s.name !== undefined && { name: s.name }),
          ...(master !== undefined && { master }),
          ...(s.promisc !== undefined && { promisc: s.promisc }),
          ...(s.mac !== undefined && { mac: s.mac }),
          ...(fd !== undefined && { nsFd: fd }),
          ...(s.group !== undefined && { group: s.group }),
        }),
        `set link ${typeof ref === 'object' ? ref.name : ref} ${JSON.stringify(s)}${this.where()}`,
      ),
    );
  }

  /** Bridge-port options (the link must be enslaved to a bridge). */
  setBridgePort(ref: LinkRef, opts: { hairpin?: boolean }): void {
    this.sock.request(bridgePortSetRequest(this.indexOf(ref), opts), `set bridge port ${typeof ref === 'object' ? ref.name : ref}${this.where()}`);
  }

  /**
   * A delete-like request where "already gone" is an answer, not an error: true when the kernel
   * did it, false when it answered with one of the `gone` errnos.
   */
  private requestUnlessGone(req: RequestSpec, what: string, ...gone: string[]): boolean {
    try {
      this.sock.request(req, what);
      return true;
    } catch (err) {
      if (isNetlinkError(err, ...gone)) return false;
      throw err;
    }
  }

  /** The link's index, or undefined when a link named this way no longer exists. */
  private indexIfPresent(link: LinkRef): number | undefined {
    return typeof link === 'string' ? this.getLink(link)?.index : typeof link === 'object' ? link.index : link;
  }

  /** Deletes a link; false when it did not exist. Deleting one end of a veth removes both. */
  deleteLink(ref: LinkRef): boolean {
    const key = typeof ref === 'object' ? ref.index : ref;
    return this.requestUnlessGone(linkDeleteRequest(key), `delete link ${key}${this.where()}`, 'ENODEV');
  }

  /**
   * Deletes every link in device group `group` with one request, so the kernel unregisters them
   * as one batch. True when the kernel deleted something, false when the group was empty.
   */
  deleteLinkGroup(group: number): boolean {
    return this.requestUnlessGone(linkGroupDeleteRequest(group), `delete link group ${group}${this.where()}`, 'ENODEV');
  }

  /**
   * The id this handle's namespace uses for the namespace at nsPath (what IFLA_LINK_NETNSID of a
   * link here says when its peer lives there); undefined when none is assigned.
   */
  netnsIdOf(nsPath: string): number | undefined {
    return withNsFd(nsPath, (fd) => decodeNsid(this.sock.query(nsidGetRequest(fd ?? -1), `get the id of namespace ${nsPath}${this.where()}`, C.RTM_NEWNSID)));
  }

  // ---- addresses ----

  addAddress(link: LinkRef, cidr: Cidr, opts: AddressOptions = {}): void {
    this.sock.request(addressAddRequest(this.indexOf(link), cidr, opts), `add address ${formatCidr(cidr)} to ${typeof link === 'object' ? link.name : link}${this.where()}`);
  }

  /** Adds the address, or updates it (broadcast, flags) when it is already there. */
  replaceAddress(link: LinkRef, cidr: Cidr, opts: AddressOptions = {}): void {
    this.sock.request(addressAddRequest(this.indexOf(link), cidr, opts, true), `replace address ${formatCidr(cidr)} on ${typeof link === 'object' ? link.name : link}${this.where()}`);
  }

  deleteAddress(link: LinkRef, cidr: Cidr): boolean {
    const index = this.indexIfPresent(link);
    if (index === undefined) return false;
    return this.requestUnlessGone(
      addressDeleteRequest(index, cidr),
      `delete address ${formatCidr(cidr)} from ${typeof link === 'object' ? link.name : link}${this.where()}`,
      'EADDRNOTAVAIL', 'ENODEV',
    );
  }

  /**
   * The addresses of this namespace, or with netnsId of the namespace this one numbers so (a
   * veth's linkNetnsId: its peer's namespace, which needs no path to be read); link is then an
   * index in that namespace.
   */
  listAddresses(filter: { link?: LinkRef; family?: IPFamily; netnsId?: number } = {}): Address[] {
    if (filter.netnsId !== undefined && filter.link !== undefined && typeof filter.link !== 'number') {
      throw new WeftError(CniCode.Netlink, 'listing addresses in another namespace takes a link index of that namespace, not a name');
    }
    const index = filter.link !== undefined ? this.indexOf(filter.link) : undefined;
    const where = filter.netnsId !== undefined ? ` in namespace id ${filter.netnsId}${this.nsPath ? ` (as ${this.nsPath} numbers it)` : ''}` : this.where();
    return this.sock
      .dump(addressDumpRequest(filter.family, index, filter.netnsId), `list addresses${where}`, C.RTM_NEWADDR)
      .map(decodeAddress)
      .filter((a): a is Address => a !== undefined && (index === undefined || a.index === index) && (filter.family === undefined || a.family === filter.family));
  }

  // ---- routes ----

  private routeSpec(r: RouteInput): RouteSpec {
    const { oif, ...rest } = r;
    return oif === undefined ? rest : { ...rest, oif: this.indexOf(oif) };
  }

  addRoute(r: RouteInput): void {
    this.sock.request(routeRequest('add', this.routeSpec(r)), `add route ${describeRoute(r)}${this.where()}`);
  }

  replaceRoute(r: RouteInput): void {
    this.sock.request(routeRequest('replace', this.routeSpec(r)), `replace route ${describeRoute(r)}${this.where()}`);
  }

  /** Deletes the first route matching r (unset fields match anything); false when none did. */
  deleteRoute(r: RouteInput): boolean {
    let spec: RouteSpec;
    try {
      spec = this.routeSpec(r);
    } catch (err) {
      if (typeof r.oif === 'string') return false; // the device is gone, and its routes with it
      throw err;
    }
    return this.requestUnlessGone(routeRequest('delete', spec), `delete route ${describeRoute(r)}${this.where()}`, 'ESRCH', 'ENODEV');
  }

  listRoutes(filter: Omit<RouteFilter, 'oif'> & { oif?: LinkRef } = {}): Route[] {
    const oif = filter.oif !== undefined ? this.indexOf(filter.oif) : undefined;
    const f: RouteFilter = {
      ...(filter.family !== undefined && { family: filter.family }),
      ...(filter.table !== undefined && { table: filter.table }),
      ...(filter.protocol !== undefined && { protocol: filter.protocol }),
      ...(oif !== undefined && { oif }),
    };
    const table = f.table ?? C.RT_TABLE_MAIN;
    return this.sock
      .dump(routeDumpRequest(f), `list routes${this.where()}`, C.RTM_NEWROUTE)
      .map(decodeRoute)
      .filter(
        (r): r is Route =>
          r !== undefined &&
          (table === 'all' || r.table === table) &&
          (f.family === undefined || r.family === f.family) &&
          (f.protocol === undefined || r.protocol === f.protocol) &&
          (oif === undefined || r.oif === oif),
      );
  }

  // ---- neighbours ----

  replaceNeigh(n: NeighInput): void {
    this.sock.request(
      neighReplaceRequest({ index: this.indexOf(n.link), ip: n.ip, mac: n.mac, ...(n.state !== undefined && { state: n.state }) }),
      `replace neighbour ${formatIP(n.ip)} lladdr ${n.mac}${this.where()}`,
    );
  }

  deleteNeigh(link: LinkRef, ip: IP): boolean {
    const index = this.indexIfPresent(link);
    if (index === undefined) return false;
    return this.requestUnlessGone(neighDeleteRequest(index, ip), `delete neighbour ${formatIP(ip)}${this.where()}`, 'ENOENT', 'ENODEV');
  }

  listNeigh(filter: { link?: LinkRef; family?: IPFamily } = {}): Neigh[] {
    const index = filter.link !== undefined ? this.indexOf(filter.link) : undefined;
    return this.sock
      .dump(neighDumpRequest(filter.family, index), `list neighbours${this.where()}`, C.RTM_NEWNEIGH)
      .map(decodeNeigh)
      .filter((n): n is Neigh => n !== undefined && (index === undefined || n.index === index) && (filter.family === undefined || n.family === filter.family));
  }

  // ---- bridge / vxlan forwarding database ----

  private fdb(op: FdbOp, e: FdbInput): void {
    this.sock.request(
      fdbRequest(op, {
        index: this.indexOf(e.link),
        mac: e.mac,
        ...(e.dst && { dst: e.dst }),
        ...(e.vni !== undefined && { vni: e.vni }),
        ...(e.port !== undefined && { port: e.port }),
        ...(e.vlan !== undefined && { vlan: e.vlan }),
        ...(e.master !== undefined && { master: e.master }),
        ...(e.state !== undefined && { state: e.state }),
      }),
      `${op} fdb ${e.mac}${e.dst ? ` dst ${formatIP(e.dst)}` : ''} on ${typeof e.link === 'object' ? e.link.name : e.link}${this.where()}`,
    );
  }

  /** Adds an entry alongside existing ones for the same MAC (vxlan: one more remote for 00:00:..). */
  appendFdb(e: FdbInput): void {
    this.fdb('append', e);
  }

  replaceFdb(e: FdbInput): void {
    this.fdb('replace', e);
  }

  /**
   * Removes an entry; false when the kernel reports it absent (or the device is gone). Note the
   * vxlan driver acknowledges deleting a remote `dst` that a still-present MAC does not have.
   */
  deleteFdb(e: Omit<FdbInput, 'state'>): boolean {
    try {
      this.fdb('delete', e);
      return true;
    } catch (err) {
      if (isNetlinkError(err, 'ENOENT', 'ENODEV')) return false;
      if (err instanceof WeftError && typeof e.link === 'string' && !this.getLink(e.link)) return false;
      throw err;
    }
  }

  /** Entries of one port/vxlan device (link) and/or of one bridge's table. */
  listFdb(filter: { link?: LinkRef; bridge?: LinkRef } = {}): FdbEntry[] {
    const index = filter.link !== undefined ? this.indexOf(filter.link) : undefined;
    const bridge = filter.bridge !== undefined ? this.indexOf(filter.bridge) : undefined;
    return this.sock
      .dump(fdbDumpRequest(index, bridge), `list fdb${this.where()}`, C.RTM_NEWNEIGH)
      .map(decodeFdb)
      .filter((e): e is FdbEntry => e !== undefined && (index === undefined || e.index === index));
  }

  // ---- nexthop objects ----

  /** Every nexthop object in the namespace (the kernel's dump has no protocol filter). */
  listNexthops(): NexthopObject[] {
    return this.sock.dump(nexthopDumpRequest(), `list nexthops${this.where()}`, C.RTM_NEWNEXTHOP)
      .map(decodeNexthop)
      .filter((n): n is NexthopObject => n !== undefined);
  }

  replaceNexthop(n: NexthopInput): void {
    this.sock.request(nexthopReplaceRequest({ ...n, oif: this.indexOf(n.oif) }), `replace nexthop id ${n.id} via ${formatIP(n.gateway)}${this.where()}`);
  }

  /** Deletes nexthop `id` and, in the kernel, every route using it; false when it did not exist. */
  deleteNexthop(id: number): boolean {
    return this.requestUnlessGone(nexthopDeleteRequest(id), `delete nexthop id ${id}${this.where()}`, 'ENOENT', 'ESRCH');
  }

  // ---- batches ----

  /**
   * Applies many writes with few round trips (requests are sent before their ACKs are read).
   * Returns one entry per op: undefined when done, else the kernel's refusal. Deletes that find
   * nothing (ESRCH/ENOENT) count as done, as in the single-call deletes.
   */
  applyBatch(ops: readonly NetlinkOp[]): (NetlinkError | undefined)[] {
    const index = new Map<string | number, number>();
    const idx = (ref: LinkRef): number => {
      if (typeof ref === 'object') return ref.index;
      const hit = index.get(ref);
      if (hit !== undefined) return hit;
      const v = this.indexOf(ref);
      index.set(ref, v);
      return v;
    };
    const fdbSpec = (e: Omit<FdbInput, 'state'> & { state?: number }) => ({
      index: idx(e.link),
      mac: e.mac,
      ...(e.dst && { dst: e.dst }),
      ...(e.vni !== undefined && { vni: e.vni }),
      ...(e.port !== undefined && { port: e.port }),
      ...(e.vlan !== undefined && { vlan: e.vlan }),
      ...(e.master !== undefined && { master: e.master }),
      ...(e.state !== undefined && { state: e.state }),
    });
    const routeSpec = (r: RouteInput): RouteSpec => {
      const { oif, ...rest } = r;
      return oif === undefined ? rest : { ...rest, oif: idx(oif) };
    };
    const reqs = ops.map((o) => {
      switch (o.op) {
        case 'replaceRoute': return routeRequest('replace', routeSpec(o.route));
        case 'deleteRoute': return routeRequest('delete', routeSpec(o.route));
        case 'replaceNeigh': return neighReplaceRequest({ index: idx(o.neigh.link), ip: o.neigh.ip, mac: o.neigh.mac, ...(o.neigh.state !== undefined && { state: o.neigh.state }) });
        case 'deleteNeigh': return neighDeleteRequest(idx(o.link), o.ip);
        case 'replaceFdb': return fdbRequest('replace', fdbSpec(o.fdb));
        case 'deleteFdb': return fdbRequest('delete', fdbSpec(o.fdb));
        case 'replaceNexthop': return nexthopReplaceRequest({ ...o.nexthop, oif: idx(o.nexthop.oif) });
        case 'deleteNexthop': return nexthopDeleteRequest(o.id);
      }
    });
    const results = this.sock.requestBatch(reqs, (i) => `${ops[i] ? describeOp(ops[i]) : 'batch'}${this.where()}`);
    return results.map((err, i) => {
      const o = ops[i];
      if (err && o && o.op.startsWith('delete') && isNetlinkError(err, 'ESRCH', 'ENOENT', 'ENODEV')) return undefined;
      return err;
    });
  }
}

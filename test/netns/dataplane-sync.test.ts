// DataplaneSync against the real kernel: routes through nexthop objects (protocol 87, id = the
// gateway), the classic form, the switch between them without a gap, repairs of objects and
// routes deleted by hand, an id already taken by someone else, and removal. The kernel's view is
// read back with iproute2 (`ip -json nexthop`, `ip -json route`).

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { Netlink } from '../../src/netlink/index.js';
import { NetnsPool, bridgeJson, ipJson, ipIn, type TestNetns } from '../../src/netns/testing.js';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { DataplaneSync, nexthopIdFor, removeWeftRoutes, type DesiredState } from '../../src/dataplane/sync.js';
import { WEFT_ROUTE_PROTOCOL } from '../../src/dataplane/protocols.js';

interface IpNexthop { id: number; gateway?: string; dev?: string; flags: string[]; protocol?: string }
interface IpRoute { dst: string; nhid?: number; gateway?: string; dev?: string; protocol?: string; flags: string[] }

const pool = new NetnsPool('wds');
const handles: Netlink[] = [];
after(() => {
  for (const h of handles.splice(0)) h.close();
  pool.cleanup();
});

/** A namespace with a vxlan device `weft.1` (10.9.0.0/32) as weft's vxlan backend makes it. */
function host(): { ns: TestNetns; nl: Netlink; dev: number } {
  const ns = pool.make();
  const nl = Netlink.open(ns.path);
  handles.push(nl);
  const link = nl.createVxlan({ name: 'weft.1', vni: 1, port: 8472, learning: false, up: true });
  nl.addAddress(link.index, parseCidr('10.9.0.0/32'));
  return { ns, nl, dev: link.index };
}

function peers(dev: number, n: number, from = 0): DesiredState {
  const routes = [];
  const neighs = [];
  const fdb = [];
  for (let i = from; i < from + n; i++) {
    const net = `10.${10 + (i >> 8)}.${i & 255}`;
    const vtep = parseIP(`${net}.0`);
    const mac = `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
    routes.push({ dst: parseCidr(`${net}.0/24`), gateway: vtep, oif: dev, onlink: true });
    neighs.push({ ip: vtep, mac });
    fdb.push({ mac, dst: parseIP(`198.18.${1 + (i >> 8)}.${i & 255}`) });
  }
  return { routes, devices: [{ index: dev, neighs, fdb }] };
}

const weftNexthops = (ns: string) => ipJson<IpNexthop[]>(ns, ['nexthop', 'show']).filter((n) => n.protocol === String(WEFT_ROUTE_PROTOCOL));
const weftRoutes = (ns: string) => ipJson<IpRoute[]>(ns, ['route', 'show', 'proto', String(WEFT_ROUTE_PROTOCOL)]);

describe('DataplaneSync with nexthop objects', () => {
  it('writes one object per gateway (id = the gateway) and routes pointing at it; a second pass writes nothing', () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    const r1 = sync.sync(peers(dev, 3), 'full');
    assert.deepEqual(r1.errors, []);
    assert.equal(sync.usesNexthopObjects, true);
    const objs = weftNexthops(ns.name);
    assert.equal(objs.length, 3);
    for (const o of objs) {
      assert.equal(o.id, nexthopIdFor(parseIP(o.gateway ?? ''))!);
      assert.equal(o.dev, 'weft.1');
      assert.ok(o.flags.includes('onlink'), JSON.stringify(o));
    }
    const routes = weftRoutes(ns.name);
    assert.equal(routes.length, 3);
    for (const r of routes) {
      const want = nexthopIdFor(parseIP(r.dst.replace('/24', '')));
      assert.equal(r.nhid, want, JSON.stringify(r));
    }
    assert.deepEqual(sync.sync(peers(dev, 3), 'full'), { repairs: 0, removals: 0, errors: [] });
    assert.deepEqual(sync.sync(peers(dev, 3), 'incremental'), { repairs: 0, removals: 0, errors: [] });
  });

  it('incremental: a peer gone takes its route and object along; a new one gets both', () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    sync.sync(peers(dev, 3), 'full');
    const r = sync.sync(peers(dev, 3, 1), 'incremental'); // peer 0 gone, peer 3 new
    assert.deepEqual(r.errors, []);
    assert.deepEqual(weftRoutes(ns.name).map((x) => x.dst).sort(), ['10.10.1.0/24', '10.10.2.0/24', '10.10.3.0/24']);
    assert.deepEqual(weftNexthops(ns.name).map((x) => x.gateway).sort(), ['10.10.1.0', '10.10.2.0', '10.10.3.0']);
    assert.deepEqual(sync.sync(peers(dev, 3, 1), 'full'), { repairs: 0, removals: 0, errors: [] });
  });

  it('a full pass repairs an object deleted by hand (the kernel took its route with it) and a route deleted by hand', () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    sync.sync(peers(dev, 2), 'full');
    ipIn(ns.name, ['nexthop', 'del', 'id', String(nexthopIdFor(parseIP('10.10.0.0')))]);
    ipIn(ns.name, ['route', 'del', '10.10.1.0/24']);
    assert.equal(weftRoutes(ns.name).length, 0);
    const r = sync.sync(peers(dev, 2), 'full');
    assert.deepEqual(r.errors, []);
    assert.equal(r.repairs, 3); // one object, two routes
    assert.equal(weftRoutes(ns.name).length, 2);
    assert.equal(weftNexthops(ns.name).length, 2);
  });

  it('turns classic routes into nexthop-object routes in place, and back with nexthopObjects: false', () => {
    const { ns, nl, dev } = host();
    const classic = new DataplaneSync(nl, { nexthopObjects: false });
    classic.sync(peers(dev, 2), 'full');
    assert.deepEqual(weftNexthops(ns.name), []);
    assert.ok(weftRoutes(ns.name).every((r) => r.nhid === undefined && r.gateway !== undefined && r.flags.includes('onlink')));
    const modern = new DataplaneSync(nl);
    const r = modern.sync(peers(dev, 2), 'full');
    assert.deepEqual(r.errors, []);
    assert.equal(r.removals, 0, 'the classic routes are replaced, not deleted first');
    assert.ok(weftRoutes(ns.name).every((x) => x.nhid !== undefined));
    const back = new DataplaneSync(nl, { nexthopObjects: false }).sync(peers(dev, 2), 'full');
    assert.deepEqual(back.errors, []);
    assert.ok(weftRoutes(ns.name).every((x) => x.nhid === undefined && x.gateway !== undefined));
  });

  it('leaves an object of another owner alone: its route takes the classic form', () => {
    const { ns, nl, dev } = host();
    const id = nexthopIdFor(parseIP('10.10.0.0'))!;
    ipIn(ns.name, ['nexthop', 'add', 'id', String(id), 'via', '10.10.0.99', 'dev', 'weft.1', 'onlink']);
    const sync = new DataplaneSync(nl);
    const r = sync.sync(peers(dev, 2), 'full');
    assert.deepEqual(r.errors, []);
    const foreign = ipJson<IpNexthop[]>(ns.name, ['nexthop', 'show', 'id', String(id)]);
    assert.equal(foreign[0]?.gateway, '10.10.0.99', 'not taken over');
    const routes = new Map(weftRoutes(ns.name).map((x) => [x.dst, x]));
    assert.equal(routes.get('10.10.0.0/24')?.nhid, undefined);
    assert.equal(routes.get('10.10.0.0/24')?.gateway, '10.10.0.0');
    assert.equal(routes.get('10.10.1.0/24')?.nhid, nexthopIdFor(parseIP('10.10.1.0')));
    assert.deepEqual(sync.sync(peers(dev, 2), 'full'), { repairs: 0, removals: 0, errors: [] });
  });

  it('removeWeftRoutes removes weft routes and objects, nothing else', () => {
    const { ns, nl, dev } = host();
    ipIn(ns.name, ['nexthop', 'add', 'id', '7', 'via', '10.11.0.1', 'dev', 'weft.1', 'onlink']);
    new DataplaneSync(nl).sync(peers(dev, 3), 'full');
    assert.equal(removeWeftRoutes(nl), 3);
    assert.deepEqual(weftRoutes(ns.name), []);
    assert.deepEqual(weftNexthops(ns.name), []);
    assert.equal(ipJson<IpNexthop[]>(ns.name, ['nexthop', 'show']).length, 1, 'the foreign object stays');
  });

  it('1000 peers in one full pass, then removed incrementally', () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    assert.deepEqual(sync.sync(peers(dev, 1000), 'full').errors, []);
    assert.equal(weftRoutes(ns.name).length, 1000);
    const r = sync.sync({ routes: [], devices: [{ index: dev, neighs: [], fdb: [] }] }, 'incremental');
    assert.deepEqual(r.errors, []);
    assert.equal(weftRoutes(ns.name).length, 0);
    assert.equal(weftNexthops(ns.name).length, 0);
  });
});

/** Runs `p` and counts the event loop's turns (setImmediate callbacks) until it settles. */
async function turnsWhile<T>(p: Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let done = false;
  const tick = (): void => { if (!done) { turns++; setImmediate(tick); } };
  setImmediate(tick);
  try {
    return { value: await p, turns };
  } finally {
    done = true;
  }
}

describe('DataplaneSync.syncOffLoop', () => {
  it('keeps the first full pass on this thread and runs later ones on the worker thread, with the same outcome', async () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    try {
      const first = await turnsWhile(sync.syncOffLoop(peers(dev, 200), 'full'));
      assert.deepEqual(first.value, { repairs: 800, removals: 0, errors: [] }); // route, object, neighbour, FDB entry each
      assert.equal(first.turns, 0, 'the first pass ran without yielding');
      assert.equal(sync.usesNexthopObjects, true);

      ipIn(ns.name, ['route', 'del', '10.10.5.0/24']);
      ipIn(ns.name, ['neigh', 'del', '10.10.6.0', 'dev', 'weft.1']);
      ipIn(ns.name, ['nexthop', 'del', 'id', String(nexthopIdFor(parseIP('10.10.7.0')))]); // takes its route along
      const repair = await turnsWhile(sync.syncOffLoop(peers(dev, 200), 'full'));
      assert.deepEqual(repair.value, { repairs: 4, removals: 0, errors: [] });
      assert.ok(repair.turns > 0, 'the event loop kept turning during the pass');
      assert.equal(weftRoutes(ns.name).length, 200);
      assert.equal(weftNexthops(ns.name).length, 200);

      // What the worker wrote is remembered here: an incremental pass only writes the news.
      assert.deepEqual(await sync.syncOffLoop(peers(dev, 201), 'incremental'), { repairs: 3, removals: 0, errors: [] });
      assert.deepEqual(await sync.syncOffLoop(peers(dev, 201), 'full'), { repairs: 0, removals: 0, errors: [] });
      // Unchanged state is not sent again: the thread repairs from the copy it kept.
      ipIn(ns.name, ['route', 'del', '10.10.200.0/24']);
      assert.deepEqual(await sync.syncOffLoop(peers(dev, 201), 'full'), { repairs: 1, removals: 0, errors: [] });
      assert.equal(weftRoutes(ns.name).length, 201);
    } finally {
      await sync.close();
    }
  });

  it('a small dataplane\'s full passes stay on this thread (no ~10 MB thread for a few hundred objects); one grown past the bar gets the thread, and lets it go when it shrinks again', async () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    const threads = () => readdirSync(`/proc/${process.pid}/task`).length;
    try {
      const base = threads();
      await sync.syncOffLoop(peers(dev, 10), 'full');
      assert.deepEqual(await sync.syncOffLoop(peers(dev, 10), 'full'), { repairs: 0, removals: 0, errors: [] });
      assert.equal(threads(), base, 'no thread for 40 objects');
      await sync.syncOffLoop(peers(dev, 200), 'full');
      assert.ok(threads() > base, 'a thread for 800 objects');
      assert.equal((await sync.syncOffLoop(peers(dev, 10), 'full')).removals, 190 * 4);
      assert.equal(weftRoutes(ns.name).length, 10);
      for (let i = 0; i < 50 && threads() > base; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(threads(), base, 'the thread is gone once the dataplane is small again');
    } finally {
      await sync.close();
    }
  });

  it('brings the kernel\'s refusals back from the worker, and the next pass tries those writes again', async () => {
    const { ns, nl, dev } = host();
    const sync = new DataplaneSync(nl);
    try {
      // 130 peers: 520 objects, enough for the thread (FULL_PASS_THREAD_MIN_OBJECTS).
      await sync.syncOffLoop(peers(dev, 130), 'full');
      // A route through a device index that does not exist: the kernel refuses that one write.
      const bad: DesiredState = { ...peers(dev, 130), routes: [...peers(dev, 130).routes, { dst: parseCidr('10.99.0.0/24'), gateway: parseIP('10.99.0.1'), oif: 9999, onlink: true }] };
      const r = await sync.syncOffLoop(bad, 'full');
      assert.ok(r.errors.length >= 1, JSON.stringify(r));
      assert.equal(weftRoutes(ns.name).length, 130);
      const again = await sync.syncOffLoop(bad, 'incremental');
      assert.ok(again.repairs >= 1 && again.errors.length >= 1, `the refused route is not taken as written: ${JSON.stringify(again)}`);
    } finally {
      await sync.close();
    }
  });
});

describe('DataplaneSync, dual-stack (vxlan\'s two devices)', () => {
  /** weft.1 as in host(), plus weft-v6.1 over an IPv6 underlay address, as the vxlan backend makes them. */
  function dualHost(): { ns: TestNetns; nl: Netlink; dev: number; dev6: number } {
    const h = host();
    const under = h.nl.createVeth({ name: 'u0', peerName: 'u1', up: true, peerUp: true });
    h.nl.addAddress(under.index, parseCidr('2001:2::1/64'), { noDad: true });
    const v6 = h.nl.createVxlan({ name: 'weft-v6.1', vni: 1, port: 8472, learning: false, local: parseIP('2001:2::1'), dev: under.index, up: true });
    h.nl.addAddress(v6.index, parseCidr('fd00:9::/128'), { noDad: true });
    return { ...h, dev6: v6.index };
  }

  function dualPeers(dev: number, dev6: number, ids: readonly number[]): DesiredState {
    const v4 = peers(dev, 0);
    const routes = [...v4.routes];
    const d4 = { index: dev, neighs: [] as { ip: ReturnType<typeof parseIP>; mac: string }[], fdb: [] as { mac: string; dst: ReturnType<typeof parseIP> }[] };
    const d6 = { index: dev6, neighs: [] as typeof d4.neighs, fdb: [] as typeof d4.fdb };
    for (const i of ids) {
      const vtep4 = parseIP(`10.10.${i}.0`);
      const vtep6 = parseIP(`fd00:10:0:${i.toString(16)}::`);
      const mac4 = `02:00:00:00:04:${i.toString(16).padStart(2, '0')}`;
      const mac6 = `02:00:00:00:06:${i.toString(16).padStart(2, '0')}`;
      routes.push({ dst: parseCidr(`10.10.${i}.0/24`), gateway: vtep4, oif: dev, onlink: true });
      routes.push({ dst: parseCidr(`fd00:10:0:${i.toString(16)}::/64`), gateway: vtep6, oif: dev6, onlink: true });
      d4.neighs.push({ ip: vtep4, mac: mac4 });
      d4.fdb.push({ mac: mac4, dst: parseIP(`198.18.0.${i}`) });
      d6.neighs.push({ ip: vtep6, mac: mac6 });
      d6.fdb.push({ mac: mac6, dst: parseIP(`2001:2::${i.toString(16)}`) });
    }
    return { routes, devices: [d4, d6] };
  }

  const routes6 = (ns: string) => ipJson<IpRoute[]>(ns, ['-6', 'route', 'show', 'proto', String(WEFT_ROUTE_PROTOCOL)]);
  const neighs6 = (ns: string) => ipJson<Array<{ dst: string; lladdr?: string; state: string[] }>>(ns, ['-6', 'neigh', 'show', 'dev', 'weft-v6.1']).filter((n) => n.state.includes('PERMANENT'));
  const fdbOf = (ns: string, dev: string) => bridgeJson<Array<{ mac: string; dst?: string }>>(ns, ['fdb', 'show', 'dev', dev]);

  it('programs IPv6 routes (classic form: nexthop ids are IPv4 gateways), neighbours and FDB on the IPv6 device beside the IPv4 ones; a second pass writes nothing', () => {
    const { ns, nl, dev, dev6 } = dualHost();
    const sync = new DataplaneSync(nl);
    const r = sync.sync(dualPeers(dev, dev6, [1, 2, 3]), 'full');
    assert.deepEqual(r.errors, []);
    assert.equal(weftRoutes(ns.name).length, 3);
    const r6 = routes6(ns.name);
    assert.deepEqual(r6.map((x) => `${x.dst} via ${x.gateway} dev ${x.dev}`).sort(), [1, 2, 3].map((i) => `fd00:10:0:${i}::/64 via fd00:10:0:${i}:: dev weft-v6.1`));
    assert.deepEqual(neighs6(ns.name).map((n) => `${n.dst} ${n.lladdr}`).sort(), [1, 2, 3].map((i) => `fd00:10:0:${i}:: 02:00:00:00:06:0${i}`));
    assert.deepEqual(fdbOf(ns.name, 'weft-v6.1').filter((f) => f.dst).map((f) => `${f.mac} ${f.dst}`).sort(), [1, 2, 3].map((i) => `02:00:00:00:06:0${i} 2001:2::${i}`));
    assert.equal(fdbOf(ns.name, 'weft.1').filter((f) => f.dst?.includes(':')).length, 0, 'no IPv6 entry on the IPv4 device');
    assert.deepEqual(sync.sync(dualPeers(dev, dev6, [1, 2, 3]), 'full'), { repairs: 0, removals: 0, errors: [] });
    assert.deepEqual(sync.sync(dualPeers(dev, dev6, [1, 2, 3]), 'incremental'), { repairs: 0, removals: 0, errors: [] });
  });

  it('a peer gone (incremental) and IPv6 state changed by hand (full) are put right in both families; removeWeftRoutes clears both', () => {
    const { ns, nl, dev, dev6 } = dualHost();
    const sync = new DataplaneSync(nl);
    sync.sync(dualPeers(dev, dev6, [1, 2]), 'full');
    const inc = sync.sync(dualPeers(dev, dev6, [2]), 'incremental');
    assert.deepEqual(inc.errors, []);
    assert.deepEqual(routes6(ns.name).map((x) => x.dst), ['fd00:10:0:2::/64']);
    assert.deepEqual(neighs6(ns.name).map((n) => n.dst), ['fd00:10:0:2::']);
    ipIn(ns.name, ['-6', 'route', 'del', 'fd00:10:0:2::/64']);
    ipIn(ns.name, ['-6', 'route', 'add', 'fd00:77::/64', 'via', 'fd00:10:0:2::', 'dev', 'weft-v6.1', 'onlink', 'proto', String(WEFT_ROUTE_PROTOCOL)]);
    ipIn(ns.name, ['-6', 'neigh', 'add', 'fd00:77::1', 'lladdr', '02:00:00:00:07:07', 'dev', 'weft-v6.1', 'nud', 'permanent']);
    const full = sync.sync(dualPeers(dev, dev6, [2]), 'full');
    assert.deepEqual(full.errors, []);
    assert.ok(full.repairs >= 1 && full.removals >= 2, JSON.stringify(full));
    assert.deepEqual(routes6(ns.name).map((x) => x.dst), ['fd00:10:0:2::/64']);
    assert.deepEqual(neighs6(ns.name).map((n) => n.dst), ['fd00:10:0:2::']);
    assert.equal(removeWeftRoutes(nl), 2);
    assert.deepEqual(routes6(ns.name), []);
    assert.deepEqual(weftRoutes(ns.name), []);
  });
});

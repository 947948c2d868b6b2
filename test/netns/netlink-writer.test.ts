// Dataplane writes on weftd's writer thread (src/agent/netlink-writer.ts): they land in the
// namespace of the handle the writer stands in for (never the test's own), refusals come back per
// op, a DataplaneSync pass through the writer leaves the kernel as the synchronous path would, and
// a closed writer still applies (on the caller's socket).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Netlink, type NetlinkOp } from '../../src/netlink/index.js';
import { NetnsPool, ipIn, ipJson, type TestNetns } from '../../src/netns/testing.js';
import { ipFromValue, parseCidr, parseIP, type Cidr } from '../../src/net/ip.js';
import { DataplaneSync, WEFT_ROUTE_PROTOCOL, type DesiredRoute } from '../../src/agent/dataplane.js';
import { NetlinkWriter } from '../../src/agent/netlink-writer.js';

interface IpRoute { dst: string; gateway?: string; dev?: string; flags: string[] }

const subnet = (i: number): Cidr => ({ ip: ipFromValue(4, parseIP('10.60.0.0').value + (BigInt(i) << 8n)), prefix: 24 });
const gateway = (i: number) => ipFromValue(4, parseIP('10.61.0.0').value + BigInt(i));

function weftRoutes(ns: string): IpRoute[] {
  return ipJson<IpRoute[]>(ns, ['-4', 'route', 'show', 'proto', String(WEFT_ROUTE_PROTOCOL)]);
}

/** The same in the test's own namespace (read only). */
function ownNamespaceWeftRoutes(): number {
  const out = execFileSync('ip', ['-json', '-4', 'route', 'show', 'proto', String(WEFT_ROUTE_PROTOCOL)], { encoding: 'utf8' }).trim();
  return out === '' ? 0 : (JSON.parse(out) as unknown[]).length;
}

describe('netlink writer thread', { timeout: 60_000 }, () => {
  const pool = new NetnsPool('wc2');
  let ns: TestNetns;
  let nl: Netlink;
  let dev = 0;

  before(() => {
    ns = pool.make();
    ipIn(ns.name, ['link', 'add', 'wc2d0', 'type', 'veth', 'peer', 'name', 'wc2d1']);
    ipIn(ns.name, ['link', 'set', 'wc2d1', 'up']);
    ipIn(ns.name, ['link', 'set', 'lo', 'up']); // without the local table an onlink gateway is "invalid"
    ipIn(ns.name, ['link', 'set', 'wc2d0', 'up']);
    nl = Netlink.open(ns.path);
    dev = nl.requireLink('wc2d0').index;
  });
  after(() => {
    nl?.close();
    pool.cleanup();
  });

  it('applies a batch in the handle\'s namespace and reports refusals per op', async () => {
    const rootBefore = ownNamespaceWeftRoutes();
    const writer = new NetlinkWriter(nl);
    try {
      const ops: NetlinkOp[] = Array.from({ length: 300 }, (_, i) => ({
        op: 'replaceRoute',
        route: { dst: subnet(i), gateway: gateway(i), oif: dev, onlink: true, protocol: WEFT_ROUTE_PROTOCOL, scope: 'universe' },
      }));
      // A device that does not exist: the kernel refuses this one op, the others still land.
      ops.splice(150, 0, { op: 'replaceRoute', route: { dst: parseCidr('10.62.0.0/24'), gateway: parseIP('10.61.9.9'), oif: 99_999, onlink: true, protocol: WEFT_ROUTE_PROTOCOL, scope: 'universe' } });
      const outcome = await writer.apply(ops);
      assert.equal(outcome.length, ops.length);
      const refused = outcome.flatMap((m, i) => (m === undefined ? [] : [i]));
      assert.deepEqual(refused, [150]);
      assert.match(outcome[150] ?? '', /No such device|ENODEV/);
      const routes = weftRoutes(ns.name);
      assert.equal(routes.length, 300);
      const r7 = routes.find((r) => r.dst === '10.60.7.0/24');
      assert.equal(r7?.gateway, '10.61.0.7');
      assert.equal(r7?.dev, 'wc2d0');
      assert.ok(r7?.flags.includes('onlink'));
      assert.equal(ownNamespaceWeftRoutes(), rootBefore, 'nothing written in the test\'s own namespace');
    } finally {
      await writer.close();
    }
    // Closed: applies on the caller's socket.
    const outcome = await writer.apply(Array.from({ length: 300 }, (_, i): NetlinkOp => ({ op: 'deleteRoute', route: { dst: subnet(i), gateway: gateway(i), oif: dev, protocol: WEFT_ROUTE_PROTOCOL } })));
    assert.ok(outcome.every((m) => m === undefined));
    assert.equal(weftRoutes(ns.name).length, 0);
  });

  it('DataplaneSync through the writer: incremental passes add, change and remove; a refusal is retried', async () => {
    const writer = new NetlinkWriter(nl);
    const sync = new DataplaneSync(nl);
    const want = (n: number, gwShift = 0, oif = dev): DesiredRoute[] =>
      Array.from({ length: n }, (_, i) => ({ dst: subnet(i), gateway: gateway(i + gwShift), oif, onlink: true }));
    try {
      let r = await sync.syncVia(writer, { routes: want(100), neighs: [], fdb: [] }, 'full');
      assert.equal(r.repairs, 100);
      r = await sync.syncVia(writer, { routes: want(400), neighs: [], fdb: [] }, 'incremental');
      assert.deepEqual([r.repairs, r.removals, r.errors.length], [300, 0, 0]);
      assert.equal(weftRoutes(ns.name).length, 400);

      const changed = [...want(200, 1000), { dst: parseCidr('10.63.0.0/24'), gateway: parseIP('10.61.9.9'), oif: 99_999, onlink: true }];
      r = await sync.syncVia(writer, { routes: changed, neighs: [], fdb: [] }, 'incremental');
      assert.deepEqual([r.repairs, r.removals, r.errors.length], [201, 200, 1]);
      const routes = weftRoutes(ns.name);
      assert.equal(routes.length, 200);
      assert.equal(routes.find((x) => x.dst === '10.60.3.0/24')?.gateway, '10.61.3.235', 'gateway moved (10.61.0.0 + 1003)');
      // The refused route is not remembered as written, so the next pass tries it again.
      r = await sync.syncVia(writer, { routes: changed, neighs: [], fdb: [] }, 'incremental');
      assert.deepEqual([r.repairs, r.removals, r.errors.length], [1, 0, 1]);
      r = await sync.syncVia(writer, { routes: [], neighs: [], fdb: [] }, 'incremental');
      assert.equal(r.removals, 200);
      assert.equal(weftRoutes(ns.name).length, 0);
    } finally {
      await writer.close();
    }
  });
});

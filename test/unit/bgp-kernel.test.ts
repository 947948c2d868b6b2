// Kernel ownership in the bgp backend's route writer (src/backends/bgp/kernel.ts),
// against a model of the kernel's main table that behaves as the kernel does where it matters:
// replace overwrites whatever route has the destination and metric (any protocol), add with
// NLM_F_EXCL refuses with EEXIST, and a delete naming a protocol only matches that protocol.
// test/netns/bgp-hijack.test.ts checks the same against the real kernel and a real BIRD.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type KernelRoutes, KernelView, removeBgpRoutes, syncBgpRoutes, writeRoutes,
} from '../../src/backends/bgp/kernel.js';
import { WEFT_BGP_ROUTE_PROTOCOL } from '../../src/dataplane/protocols.js';
import { type Address, type NetlinkOp, type Route, type RouteInput, NetlinkError } from '../../src/netlink/index.js';
import { type Cidr, formatCidr, formatIP, parseCidr, parseIPv4 } from '../../src/net/ip.js';

const ETH0 = 2;
const STATIC = 4;
const KERNEL = 2;

class KernelModel implements KernelRoutes {
  routes: Route[] = [];
  readonly addresses: Address[] = [{ index: ETH0, family: 4, cidr: parseCidr('198.18.0.1/24'), scope: 0, flags: 0 }];

  constructor() {
    this.put({ dst: parseCidr('198.18.0.0/24'), oif: ETH0, protocol: KERNEL, scope: 'link' });
    this.put({ dst: parseCidr('0.0.0.0/0'), gateway: parseIPv4('198.18.0.254'), oif: ETH0, protocol: STATIC });
  }

  private static key(r: { dst: Cidr | 'default'; priority?: number | undefined }): string {
    return `${r.dst === 'default' ? '0.0.0.0/0' : formatCidr(r.dst)} metric ${r.priority ?? 0}`;
  }

  private toRoute(r: RouteInput): Route {
    const dst = r.dst === 'default' ? parseCidr('0.0.0.0/0') : r.dst;
    const oif = typeof r.oif === 'number' ? r.oif : ETH0;
    return {
      family: 4, dst, table: 254, protocol: r.protocol ?? 3, scope: r.scope === 'link' ? 253 : 0, type: 'unicast', onlink: false, oif,
      ...(r.gateway && { gateway: r.gateway }), ...(r.priority !== undefined && { priority: r.priority }),
    };
  }

  /** `ip route replace`: overwrites the route at the same destination and metric, whoever owns it. */
  put(r: RouteInput): void {
    const k = KernelModel.key(r);
    this.routes = [...this.routes.filter((x) => KernelModel.key(x) !== k), this.toRoute(r)];
  }

  // The family filter as the kernel's dump has it: the backend asks for IPv4 and IPv6 in turn.
  listAddresses(filter: { family?: 4 | 6 } = {}): Address[] {
    return this.addresses.filter((a) => filter.family === undefined || a.family === filter.family);
  }

  listRoutes(filter: { protocol?: number; family?: 4 | 6 } = {}): Route[] {
    return this.routes.filter((r) => (filter.protocol === undefined || r.protocol === filter.protocol) && (filter.family === undefined || r.dst.ip.family === filter.family));
  }

  addRoute(r: RouteInput): void {
    if (this.routes.some((x) => KernelModel.key(x) === KernelModel.key(r))) throw new NetlinkError(`add route ${KernelModel.key(r)}`, 17);
    this.routes.push(this.toRoute(r));
  }

  applyBatch(ops: readonly NetlinkOp[]): (NetlinkError | undefined)[] {
    return ops.map((o) => {
      if (o.op === 'replaceRoute') { this.put(o.route); return undefined; }
      if (o.op === 'deleteRoute') {
        const dst = o.route.dst === 'default' ? '0.0.0.0/0' : formatCidr(o.route.dst);
        const i = this.routes.findIndex((x) => formatCidr(x.dst) === dst && (o.route.protocol === undefined || x.protocol === o.route.protocol));
        // The kernel's ESRCH, which applyBatch counts as done.
        if (i >= 0) this.routes.splice(i, 1);
        return undefined;
      }
      throw new Error(`the model has no ${o.op}`);
    });
  }

  at(prefix: string): string[] {
    return this.routes.filter((r) => formatCidr(r.dst) === prefix).map((r) => `proto ${r.protocol}${r.gateway ? ` via ${formatIP(r.gateway)}` : ''}`);
  }
}

const BIRD = parseIPv4('198.18.0.254');
const via = { gateway: BIRD, oif: ETH0 };
const write = (prefix: string) => ({ prefix: parseCidr(prefix), via });

test('the model replaces another protocol\'s route on replace — which is why the writer never replaces what it does not own', () => {
  const k = new KernelModel();
  k.applyBatch([{ op: 'replaceRoute', route: { dst: parseCidr('0.0.0.0/0'), gateway: BIRD, oif: ETH0, protocol: WEFT_BGP_ROUTE_PROTOCOL } }]);
  assert.deepEqual(k.at('0.0.0.0/0'), ['proto 88 via 198.18.0.254']);
});

test('writeRoutes: the connected subnet and the static default route are left to their owners and reported', () => {
  const k = new KernelModel();
  const out = writeRoutes(k, new KernelView(k), [write('198.18.0.0/24'), write('0.0.0.0/0'), write('10.99.1.0/24')], new Set());
  assert.deepEqual([...out.held], [['198.18.0.0/24', KERNEL], ['0.0.0.0/0', STATIC]]);
  assert.deepEqual(out.installed, ['10.99.1.0/24']);
  assert.deepEqual(k.at('198.18.0.0/24'), ['proto 2']);
  assert.deepEqual(k.at('0.0.0.0/0'), ['proto 4 via 198.18.0.254']);
  assert.deepEqual(k.at('10.99.1.0/24'), ['proto 88 via 198.18.0.254']);
});

test('writeRoutes: a route another protocol put there after the look is not replaced (EXCL add, then a fresh look)', () => {
  const k = new KernelModel();
  const view = new KernelView(k);
  k.put({ dst: parseCidr('10.99.2.0/24'), gateway: parseIPv4('198.18.0.9'), oif: ETH0, protocol: STATIC });
  const out = writeRoutes(k, view, [write('10.99.2.0/24')], new Set());
  assert.deepEqual([...out.held], [['10.99.2.0/24', STATIC]]);
  assert.deepEqual(k.at('10.99.2.0/24'), ['proto 4 via 198.18.0.9']);
});

test('writeRoutes: our own route is replaced in place; one we believe ours but an operator took over is left alone', () => {
  const k = new KernelModel();
  k.put({ dst: parseCidr('10.244.3.0/24'), gateway: parseIPv4('198.18.0.3'), oif: ETH0, protocol: WEFT_BGP_ROUTE_PROTOCOL });
  k.put({ dst: parseCidr('10.244.4.0/24'), gateway: parseIPv4('198.18.0.9'), oif: ETH0, protocol: STATIC });
  const out = writeRoutes(k, new KernelView(k), [write('10.244.3.0/24'), write('10.244.4.0/24')], new Set(['10.244.3.0/24', '10.244.4.0/24']));
  assert.deepEqual(out.installed, ['10.244.3.0/24']);
  assert.deepEqual(k.at('10.244.3.0/24'), ['proto 88 via 198.18.0.254']);
  assert.deepEqual(k.at('10.244.4.0/24'), ['proto 4 via 198.18.0.9']);
});

test('syncBgpRoutes: wanted prefixes held by other protocols stay theirs, and removal touches only proto 88', () => {
  const k = new KernelModel();
  k.put({ dst: parseCidr('10.99.3.0/24'), gateway: parseIPv4('198.18.0.9'), oif: ETH0, protocol: STATIC });
  k.put({ dst: parseCidr('10.99.4.0/24'), gateway: BIRD, oif: ETH0, protocol: WEFT_BGP_ROUTE_PROTOCOL });
  const want = ['0.0.0.0/0', '198.18.0.0/24', '10.99.3.0/24', '10.99.5.0/24'].map((p) => ({ prefix: parseCidr(p), nextHop: BIRD }));
  const r = syncBgpRoutes(k, want, { keepUnknown: false });
  assert.equal(r.written, 1);
  assert.equal(r.removed, 1);
  assert.deepEqual([...r.held.keys()].sort(), ['0.0.0.0/0', '10.99.3.0/24', '198.18.0.0/24']);
  assert.ok(r.problems.some((p) => p === 'bgp: 0.0.0.0/0 is held by another route in the kernel (proto static (4)); not replaced'), r.problems.join('\n'));
  assert.deepEqual(k.at('0.0.0.0/0'), ['proto 4 via 198.18.0.254']);
  assert.deepEqual(k.at('198.18.0.0/24'), ['proto 2']);
  assert.deepEqual(k.at('10.99.3.0/24'), ['proto 4 via 198.18.0.9']);
  assert.deepEqual(k.at('10.99.4.0/24'), [], 'our route nobody wants any more is gone');
  assert.deepEqual(k.at('10.99.5.0/24'), ['proto 88 via 198.18.0.254']);
  // Shutting the backend down removes its own routes and nothing else.
  assert.equal(removeBgpRoutes(k), 1);
  assert.deepEqual(k.routes.map((x) => `${formatCidr(x.dst)} proto ${x.protocol}`).sort(), ['0.0.0.0/0 proto 4', '10.99.3.0/24 proto 4', '198.18.0.0/24 proto 2']);
});

test('KernelView: connected subnets for the import policy, and next hops resolved past our own routes', () => {
  const k = new KernelModel();
  k.put({ dst: parseCidr('198.19.0.0/16'), gateway: parseIPv4('198.18.0.7'), oif: ETH0, protocol: WEFT_BGP_ROUTE_PROTOCOL });
  const v = new KernelView(k);
  assert.deepEqual(v.connectedSubnets().map(formatCidr), ['198.18.0.0/24']);
  assert.deepEqual(v.resolve(parseIPv4('198.18.0.2')), { gateway: parseIPv4('198.18.0.2'), oif: ETH0 });
  // 198.19.0.5 is inside a proto-88 route: it resolves through the default route instead.
  const far = v.resolve(parseIPv4('198.19.0.5'));
  assert.equal(far && formatIP(far.gateway), '198.18.0.254');
  assert.equal(v.ownerOf(parseCidr('0.0.0.0/0')), STATIC);
  assert.equal(v.ownerOf(parseCidr('198.19.0.0/16')), undefined, 'our own routes have no other owner');
});

// weft-routed on the real kernel: containers behind one host namespace, each on its own veth with
// a /32 and 169.254.1.1 as next hop; the host routes each /32. Checked against ip -json, sysctls
// and the IPAM dataDir.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ipIn, ipJson, type TestNetns } from '../../src/netns/testing.js';
import { readSysctl } from '../../src/netns/index.js';
import { hostVethName } from '../../src/plugins/routed/routed.js';
import { ROUTED_ROUTE_PROTO } from '../../src/dataplane/protocols.js';
import { addrs, allocations, asCniError, hostVeths, link, links, ping, runPlugin, WEFT_CNI_DIR, type CniCall, type PluginRun, cniSuite } from './cni-harness.js';

const WEFT_ROUTED = join(WEFT_CNI_DIR, 'weft-routed');
const NET = 'wrtnet';
const HOST_ADDR = '198.18.60.1';
const { pool, dir: scratch } = cniSuite('wrt', 'wrt');

interface WireResult {
  cniVersion: string;
  interfaces: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips: Array<{ address: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst: string; gw?: string }>;
}
interface IpRoute { dst: string; dev?: string; gateway?: string; protocol?: string; scope?: string; flags?: string[] }

/** A host namespace with one address of its own (on lo) for containers to reach. */
function makeHost(): TestNetns {
  const h = pool.make();
  ipIn(h.name, ['link', 'set', 'lo', 'up']);
  ipIn(h.name, ['addr', 'add', `${HOST_ADDR}/32`, 'dev', 'lo']);
  return h;
}

function conf(version: string, dataDir: string, extra: Record<string, unknown> = {}, ipamExtra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cniVersion: version,
    name: NET,
    type: 'weft-routed',
    ...extra,
    ipam: { type: 'weft-ipam', dataDir, ranges: [[{ subnet: '10.62.0.0/24' }]], ...ipamExtra },
  };
}

function routed(host: TestNetns, call: CniCall, c: unknown): Promise<PluginRun> {
  return runPlugin(host.path, WEFT_ROUTED, call, c);
}

async function addOk(host: TestNetns, containerId: string, netns: TestNetns, c: unknown): Promise<WireResult> {
  const r = await routed(host, { command: 'ADD', containerId, netns: netns.path }, c);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json as unknown as WireResult;
}

const ipOf = (r: WireResult) => r.ips[0]!.address.split('/')[0]!;

/** The host's weft-routed routes (proto 200), as the kernel reports them. */
function hostRoutes(h: TestNetns): IpRoute[] {
  return ipJson<IpRoute[]>(h.name, ['route', 'show', 'proto', String(ROUTED_ROUTE_PROTO)]);
}

describe('weft-routed', () => {
  for (const version of ['0.4.0', '1.1.0']) {
    it(`${version}: two containers reach each other and the host through /32 routes; CHECK; DEL removes the route`, async () => {
      const h = makeHost();
      const c1 = pool.make();
      const c2 = pool.make();
      const dataDir = join(scratch(), version);
      const cf = conf(version, dataDir);
      const r1 = await addOk(h, 'ctr1', c1, cf);
      const r2 = await addOk(h, 'ctr2', c2, cf);

      const hostName = hostVethName('ctr1', 'eth0');
      assert.equal(r1.cniVersion, version);
      assert.deepEqual(r1.interfaces.map((i) => i.name), [hostName, 'eth0']);
      assert.equal(r1.interfaces[1]?.sandbox, c1.path);
      assert.deepEqual(r1.ips.map((i) => [i.address, i.gateway, i.interface]), [['10.62.0.2/32', '169.254.1.1', 1]]);
      assert.deepEqual(r1.routes, [{ dst: '0.0.0.0/0', gw: '169.254.1.1' }]);

      // Container side: the /32, the link route to the gateway, the default via it.
      assert.deepEqual(addrs(c1.name, 'eth0').filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.62.0.2/32']);
      const cRoutes = ipJson<IpRoute[]>(c1.name, ['route', 'show']);
      assert.ok(cRoutes.some((r) => r.dst === '169.254.1.1' && r.dev === 'eth0' && r.scope === 'link'), JSON.stringify(cRoutes));
      assert.ok(cRoutes.some((r) => r.dst === 'default' && r.gateway === '169.254.1.1' && r.dev === 'eth0'), JSON.stringify(cRoutes));
      const neigh = ipJson<Array<{ dst: string; lladdr?: string; state?: string[] }>>(c1.name, ['neigh', 'show', 'dev', 'eth0']);
      assert.deepEqual(neigh.map((n) => [n.dst, n.lladdr, n.state]), [['169.254.1.1', r1.interfaces[0]?.mac, ['PERMANENT']]]);

      // Host side: no address on the veth, proxy_arp and forwarding on, a /32 per container.
      const hv = link(h.name, hostName);
      assert.equal(hv?.linkinfo?.info_kind, 'veth');
      assert.equal(hv?.address, r1.interfaces[0]?.mac);
      assert.deepEqual(addrs(h.name, hostName).filter((a) => a.family === 'inet'), []);
      assert.equal(readSysctl(`net/ipv4/conf/${hostName}/proxy_arp`, h.path), '1');
      assert.equal(readSysctl('net.ipv4.ip_forward', h.path), '1');
      assert.deepEqual(
        hostRoutes(h).map((r) => [r.dst, r.dev, r.scope]).sort(),
        [['10.62.0.2', hostName, 'link'], ['10.62.0.3', hostVethName('ctr2', 'eth0'), 'link']],
      );
      assert.deepEqual(links(h.name).filter((l) => l.linkinfo?.info_kind === 'bridge'), [], 'no bridge');

      assert.ok(await ping(c1.path, ipOf(r2)), 'container 1 → container 2');
      assert.ok(await ping(c2.path, ipOf(r1)), 'container 2 → container 1');
      assert.ok(await ping(c1.path, HOST_ADDR), 'container → host');
      assert.ok(await ping(h.path, ipOf(r1)), 'host → container');

      const withPrev = { ...cf, prevResult: r1 };
      const check = await routed(h, { command: 'CHECK', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      // Remove the host route behind the plugin's back: CHECK names it.
      ipIn(h.name, ['route', 'del', '10.62.0.2/32', 'dev', hostName]);
      const broken = await routed(h, { command: 'CHECK', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(broken.code, 1);
      assert.match(asCniError(broken)?.msg ?? '', /host route 10\.62\.0\.2\/32 .* is missing/);
      ipIn(h.name, ['route', 'add', '10.62.0.2/32', 'dev', hostName, 'proto', String(ROUTED_ROUTE_PROTO), 'scope', 'link']);

      const del1 = await routed(h, { command: 'DEL', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(del1.code, 0, del1.stdout + del1.stderr);
      assert.deepEqual(hostRoutes(h).map((r) => r.dst), ['10.62.0.3'], 'the /32 of container 1 is gone');
      assert.ok(!hostVeths(h.name).some((l) => l.ifname === hostName));
      assert.deepEqual(links(c1.name).map((l) => l.ifname), ['lo']);
      assert.deepEqual(allocations(dataDir, NET), ['10.62.0.3']);
      const again = await routed(h, { command: 'DEL', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(again.code, 0, again.stdout + again.stderr);

      // Namespace first, then DEL: the address is released and the host side is gone too.
      const c2path = c2.path;
      c2.remove();
      const del2 = await routed(h, { command: 'DEL', containerId: 'ctr2', netns: c2path }, { ...cf, prevResult: r2 });
      assert.equal(del2.code, 0, del2.stdout + del2.stderr);
      assert.deepEqual(allocations(dataDir, NET), []);
      for (let i = 0; i < 50 && hostVeths(h.name).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(hostVeths(h.name), []);
      assert.deepEqual(hostRoutes(h), []);
    });
  }

  it('dual-stack: a /32 and a /128, fe80::1 as the IPv6 next hop (the host end\'s one link-local address), both families routed; CHECK; DEL clears both', async () => {
    const h = makeHost();
    ipIn(h.name, ['addr', 'add', 'fd62:ffff::1/128', 'dev', 'lo']);
    const c1 = pool.make();
    const c2 = pool.make();
    const dataDir = join(scratch(), 'dual');
    const cf = conf('1.1.0', dataDir, {}, { ranges: [[{ subnet: '10.62.0.0/24' }], [{ subnet: 'fd62::/64' }]] });
    const r1 = await addOk(h, 'd1', c1, cf);
    const r2 = await addOk(h, 'd2', c2, cf);
    assert.deepEqual(r1.ips.map((i) => [i.address, i.gateway]), [['10.62.0.2/32', '169.254.1.1'], ['fd62::2/128', 'fe80::1']]);
    assert.deepEqual(r1.routes, [{ dst: '0.0.0.0/0', gw: '169.254.1.1' }, { dst: '::/0', gw: 'fe80::1' }]);
    const v6 = ipJson<IpRoute[]>(c1.name, ['-6', 'route', 'show', 'default']);
    assert.equal(v6[0]?.gateway, 'fe80::1');
    const neigh6 = ipJson<Array<{ dst: string; lladdr?: string; state?: string[] }>>(c1.name, ['-6', 'neigh', 'show', 'dev', 'eth0']);
    assert.deepEqual(neigh6.map((n) => [n.dst, n.lladdr, n.state]), [['fe80::1', r1.interfaces[0]?.mac, ['PERMANENT']]]);
    const hostName = hostVethName('d1', 'eth0');
    assert.ok(addrs(h.name, hostName).some((a) => a.family === 'inet6' && a.local === 'fe80::1'), 'fe80::1 on the host end');
    assert.equal(readSysctl('net.ipv6.conf.all.forwarding', h.path), '1');
    const host6 = ipJson<IpRoute[]>(h.name, ['-6', 'route', 'show', 'proto', String(ROUTED_ROUTE_PROTO)]);
    assert.deepEqual(host6.map((r) => [r.dst, r.dev]).sort(), [['fd62::2', hostName], ['fd62::3', hostVethName('d2', 'eth0')]]);
    const ip6 = (r: WireResult) => r.ips[1]!.address.split('/')[0]!;
    assert.ok(await ping(c1.path, ip6(r2)), 'container 1 → container 2 over IPv6');
    assert.ok(await ping(c2.path, 'fd62:ffff::1'), 'container → host over IPv6');
    assert.ok(await ping(c1.path, ipOf(r2)), 'and over IPv4');
    const withPrev = { ...cf, prevResult: r1 };
    const check = await routed(h, { command: 'CHECK', containerId: 'd1', netns: c1.path }, withPrev);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    ipIn(c1.name, ['-6', 'neigh', 'del', 'fe80::1', 'dev', 'eth0']);
    const broken = await routed(h, { command: 'CHECK', containerId: 'd1', netns: c1.path }, withPrev);
    assert.equal(broken.code, 1);
    assert.match(asCniError(broken)?.msg ?? '', /neighbour entry of fe80::1 is missing/);
    for (const [id, c, r] of [['d1', c1, r1], ['d2', c2, r2]] as const) {
      const del = await routed(h, { command: 'DEL', containerId: id, netns: c.path }, { ...cf, prevResult: r });
      assert.equal(del.code, 0, del.stdout + del.stderr);
    }
    assert.deepEqual(ipJson<IpRoute[]>(h.name, ['-6', 'route', 'show', 'proto', String(ROUTED_ROUTE_PROTO)]), []);
    assert.deepEqual(hostVeths(h.name), []);
    assert.deepEqual(allocations(dataDir, NET), []);
  });

  it('DEL with a config that has no ipam section still removes both veth ends and the /32', async () => {
    const h = makeHost();
    const c = pool.make();
    const dataDir = join(scratch(), 'del-no-ipam');
    const cf = conf('1.1.0', dataDir);
    const r = await addOk(h, 'noipam', c, cf);
    assert.deepEqual(hostRoutes(h).map((x) => x.dst), [ipOf(r)]);
    const { ipam: _ipam, ...withoutIpam } = cf;
    const del = await routed(h, { command: 'DEL', containerId: 'noipam', netns: c.path }, withoutIpam);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.deepEqual(hostVeths(h.name), [], 'host end gone');
    assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo'], 'container end gone');
    assert.deepEqual(hostRoutes(h), [], 'host /32 gone');
    // Without ipam there was nothing to release with; a DEL with it releases the address.
    assert.deepEqual(allocations(dataDir, NET), [ipOf(r)]);
    const full = await routed(h, { command: 'DEL', containerId: 'noipam', netns: c.path }, cf);
    assert.equal(full.code, 0, full.stdout + full.stderr);
    assert.deepEqual(allocations(dataDir, NET), []);
  });

  it('bad input: spec error JSON, nothing left behind; STATUS and GC', async () => {
    const h = makeHost();
    const c = pool.make();
    const dataDir = join(scratch(), 'bad');
    const nothingLeft = (what: string) => {
      assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo'], `${what}: container`);
      assert.deepEqual(hostVeths(h.name), [], `${what}: host veths`);
      assert.deepEqual(hostRoutes(h), [], `${what}: host routes`);
      assert.deepEqual(allocations(dataDir, NET), [], `${what}: allocations`);
    };
    const cases: Array<[string, unknown, number, RegExp]> = [
      ['no ipam', { cniVersion: '1.1.0', name: NET, type: 'weft-routed' }, 7, /needs an ipam section/],
      ['mtu not a number', conf('1.1.0', dataDir, { mtu: 'big' }), 7, /mtu/],
      ['mtu out of range', conf('1.1.0', dataDir, { mtu: 100000 }), 7, /mtu/],
    ];
    for (const [what, cf, code, msg] of cases) {
      const r = await routed(h, { command: 'ADD', containerId: 'bad', netns: c.path }, cf);
      assert.equal(r.code, 1, `${what}: ${r.stdout}`);
      assert.equal(asCniError(r)?.code, code, `${what}: ${r.stdout}`);
      assert.match(asCniError(r)?.msg ?? '', msg, what);
      nothingLeft(what);
    }
    // A MAC the kernel refuses (multicast) fails after IPAM, on the veth create: undo releases it.
    const badMac = await routed(h, { command: 'ADD', containerId: 'bad', netns: c.path, args: 'MAC=01:00:5e:00:00:01' }, conf('1.1.0', dataDir));
    assert.equal(badMac.code, 1, badMac.stdout);
    nothingLeft('multicast MAC');
    // A host device already holds this attachment's host-end name (a crashed ADD's leftover): the
    // ADD fails after IPAM, releases the address and leaves that device alone.
    const squatter = hostVethName('bad', 'eth0');
    ipIn(h.name, ['link', 'add', squatter, 'type', 'veth', 'peer', 'name', 'wrtpeer']);
    const taken = await routed(h, { command: 'ADD', containerId: 'bad', netns: c.path }, conf('1.1.0', dataDir));
    assert.equal(asCniError(taken)?.code, 7, taken.stdout);
    assert.match(asCniError(taken)?.msg ?? '', /already exists \(DEL it first\)/);
    assert.deepEqual(allocations(dataDir, NET), []);
    assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo']);
    assert.ok(link(h.name, squatter), 'the existing device is not touched');
    ipIn(h.name, ['link', 'del', squatter]);
    // The container interface name is taken.
    ipIn(c.name, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1']);
    const clash = await routed(h, { command: 'ADD', containerId: 'bad', netns: c.path }, conf('1.1.0', dataDir));
    assert.equal(asCniError(clash)?.code, 7);
    assert.match(asCniError(clash)?.msg ?? '', /eth0 already exists/);
    assert.deepEqual(hostVeths(h.name), []);
    assert.deepEqual(allocations(dataDir, NET), []);
    const noNetns = await routed(h, { command: 'ADD', containerId: 'bad', netns: '/run/netns/wrt-does-not-exist' }, conf('1.1.0', dataDir));
    assert.equal(asCniError(noNetns)?.code, 4);

    const status = await routed(h, { command: 'STATUS' }, conf('1.1.0', dataDir));
    assert.equal(status.code, 0, status.stdout + status.stderr);
    const gc = await routed(h, { command: 'GC' }, { ...conf('1.1.0', dataDir), 'cni.dev/valid-attachments': [] });
    assert.equal(gc.code, 0, gc.stdout + gc.stderr);
  });
});

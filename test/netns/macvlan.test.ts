// weft-macvlan on the real kernel: hosts are namespaces whose masters are veths into an underlay
// bridge (its own namespace), containers are namespaces under them. Checked against ip -json,
// the underlay bridge's FDB and the IPAM dataDir.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { bridgeJson, ipIn, ipJson, type TestNetns } from '../../src/netns/testing.js';
import { Netlink } from '../../src/netlink/index.js';
import { parseCidr } from '../../src/net/ip.js';
import { ensureMacvlanShim, removeMacvlanShim } from '../../src/plugins/macvlan/shim.js';
import { addrs, allocations, asCniError, link, links, ping, runPlugin, WEFT_CNI_DIR, type CniCall, type PluginRun, cniSuite } from './cni-harness.js';

const WEFT_MACVLAN = join(WEFT_CNI_DIR, 'weft-macvlan');
const NET = 'wmvnet';
const { pool, dir: scratch } = cniSuite('wmv', 'wmv');

interface WireResult { cniVersion: string; interfaces: Array<{ name: string; mac?: string; sandbox?: string }>; ips: Array<{ address: string; interface?: number }> }
interface FdbRow { mac: string; ifname?: string; flags?: string[]; state?: string }

/** The L2 segment: a bridge in its own namespace. */
function makeUnderlay(): TestNetns {
  const u = pool.make();
  ipIn(u.name, ['link', 'add', 'ubr', 'type', 'bridge']);
  ipIn(u.name, ['link', 'set', 'ubr', 'up']);
  return u;
}

/** A host namespace whose `up0` is a veth into the underlay bridge (port `port`), with an address. */
function makeHost(u: TestNetns, port: string, address: string): TestNetns {
  const h = pool.make();
  ipIn(h.name, ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', port, 'netns', u.name]);
  ipIn(u.name, ['link', 'set', port, 'master', 'ubr', 'up']);
  ipIn(h.name, ['addr', 'add', address, 'dev', 'up0']);
  ipIn(h.name, ['link', 'set', 'up0', 'up']);
  return h;
}

function conf(o: { version?: string; dataDir: string; rangeStart?: string; rangeEnd?: string; extra?: Record<string, unknown>; routes?: unknown[] }): Record<string, unknown> {
  return {
    cniVersion: o.version ?? '1.1.0',
    name: NET,
    type: 'weft-macvlan',
    master: 'up0',
    ...o.extra,
    ipam: {
      type: 'weft-ipam',
      dataDir: o.dataDir,
      ranges: [[{ subnet: '10.61.0.0/24', ...(o.rangeStart && { rangeStart: o.rangeStart }), ...(o.rangeEnd && { rangeEnd: o.rangeEnd }) }]],
      ...(o.routes && { routes: o.routes }),
    },
  };
}

function macvlan(host: TestNetns, call: CniCall, c: unknown): Promise<PluginRun> {
  return runPlugin(host.path, WEFT_MACVLAN, call, c);
}

async function addOk(host: TestNetns, containerId: string, netns: TestNetns, c: unknown): Promise<WireResult> {
  const r = await macvlan(host, { command: 'ADD', containerId, netns: netns.path }, c);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json as unknown as WireResult;
}

const ipOf = (r: WireResult) => r.ips[0]!.address.split('/')[0]!;

function assertNothingLeft(c: TestNetns, dataDir: string): void {
  assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo'], 'no interface left in the container');
  assert.deepEqual(allocations(dataDir, NET), [], 'no address left allocated');
}

describe('weft-macvlan', () => {
  for (const version of ['0.4.0', '1.1.0']) {
    it(`${version}: containers on two hosts reach each other over the underlay, own MACs in its FDB; CHECK; DEL`, async () => {
      const u = makeUnderlay();
      const h1 = makeHost(u, 'hp1', '198.18.0.1/24');
      const h2 = makeHost(u, 'hp2', '198.18.0.2/24');
      const c1 = pool.make();
      const c2 = pool.make();
      const dataDir = join(scratch(), `two-${version}`);
      // One segment, one subnet: each host allocates from its own slice.
      const conf1 = conf({ version, dataDir, rangeStart: '10.61.0.10', rangeEnd: '10.61.0.19' });
      const conf2 = conf({ version, dataDir: `${dataDir}-h2`, rangeStart: '10.61.0.20', rangeEnd: '10.61.0.29' });
      const r1 = await addOk(h1, 'ctr1', c1, conf1);
      const r2 = await addOk(h2, 'ctr2', c2, conf2);

      assert.equal(r1.cniVersion, version);
      assert.equal(r1.interfaces.length, 1);
      assert.equal(r1.interfaces[0]?.name, 'eth0');
      assert.equal(r1.interfaces[0]?.sandbox, c1.path);
      assert.equal(r1.ips[0]?.address, '10.61.0.10/24');
      assert.equal(r1.ips[0]?.interface, 0);
      assert.equal(r2.ips[0]?.address, '10.61.0.20/24');

      // The kernel's view: a bridge-mode macvlan whose MAC is the reported one, with the address.
      const eth0 = link(c1.name, 'eth0');
      assert.equal(eth0?.linkinfo?.info_kind, 'macvlan');
      assert.equal(eth0?.linkinfo?.info_data?.mode, 'bridge');
      assert.equal(eth0?.address, r1.interfaces[0]?.mac);
      assert.ok(eth0?.flags.includes('UP'));
      assert.deepEqual(addrs(c1.name, 'eth0').filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.61.0.10/24']);
      assert.deepEqual(links(h1.name).map((l) => l.ifname).sort(), ['lo', 'up0'], 'nothing added to the host namespace');

      assert.ok(await ping(c1.path, ipOf(r2)), 'container on host 1 → container on host 2');

      const fdb = bridgeJson<FdbRow[]>(u.name, ['fdb', 'show', 'br', 'ubr']);
      const learnedOn = (mac: string | undefined) => fdb.find((e) => e.mac === mac && !(e.flags ?? []).includes('self'))?.ifname;
      assert.equal(learnedOn(r1.interfaces[0]?.mac), 'hp1', 'container 1 MAC learned on host 1 port');
      assert.equal(learnedOn(r2.interfaces[0]?.mac), 'hp2', 'container 2 MAC learned on host 2 port');

      const withPrev = { ...conf1, prevResult: r1 };
      const check = await macvlan(h1, { command: 'CHECK', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      const wrongMode = await macvlan(h1, { command: 'CHECK', containerId: 'ctr1', netns: c1.path }, { ...withPrev, mode: 'private' });
      assert.equal(wrongMode.code, 1);
      assert.match(asCniError(wrongMode)?.msg ?? '', /mode bridge, not private/);
      ipIn(c1.name, ['addr', 'del', '10.61.0.10/24', 'dev', 'eth0']);
      const broken = await macvlan(h1, { command: 'CHECK', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(broken.code, 1);
      assert.match(asCniError(broken)?.msg ?? '', /10\.61\.0\.10\/24 is missing/);

      const del1 = await macvlan(h1, { command: 'DEL', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(del1.code, 0, del1.stdout + del1.stderr);
      assertNothingLeft(c1, dataDir);
      const again = await macvlan(h1, { command: 'DEL', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(again.code, 0, again.stdout + again.stderr);
      // The namespace went first: DEL still releases the address.
      const c2path = c2.path;
      c2.remove();
      const del2 = await macvlan(h2, { command: 'DEL', containerId: 'ctr2', netns: c2path }, conf2);
      assert.equal(del2.code, 0, del2.stdout + del2.stderr);
      assert.deepEqual(allocations(`${dataDir}-h2`, NET), []);
      assert.deepEqual(links(h2.name).map((l) => l.ifname).sort(), ['lo', 'up0']);
    });
  }

  it('private mode isolates containers on one master; bridge mode lets them talk', async () => {
    const u = makeUnderlay();
    const h = makeHost(u, 'hp1', '198.18.0.1/24');
    for (const [i, mode] of (['private', 'bridge'] as const).entries()) {
      const a = pool.make();
      const b = pool.make();
      const c = conf({ dataDir: join(scratch(), `mode-${mode}`), extra: { mode } });
      const ra = await addOk(h, `a${i}`, a, c);
      const rb = await addOk(h, `b${i}`, b, c);
      assert.equal(link(a.name, 'eth0')?.linkinfo?.info_data?.mode, mode);
      assert.equal(await ping(a.path, ipOf(rb), 1), mode === 'bridge', `${mode}: a → b`);
      for (const [id, ns, r] of [[`a${i}`, a, ra], [`b${i}`, b, rb]] as const) {
        const del = await macvlan(h, { command: 'DEL', containerId: id, netns: ns.path }, { ...c, prevResult: r });
        assert.equal(del.code, 0, del.stdout + del.stderr);
      }
    }
  });

  it('master defaults to the default route interface; linkInContainer finds it inside the container', async () => {
    const u = makeUnderlay();
    const h = makeHost(u, 'hp1', '198.18.0.1/24');
    ipIn(h.name, ['route', 'add', 'default', 'via', '198.18.0.254', 'dev', 'up0']);
    const c1 = pool.make();
    const dataDir = join(scratch(), 'default-master');
    const { master: _unused, ...noMaster } = conf({ dataDir });
    const r = await addOk(h, 'dflt', c1, noMaster);
    const hostUp0 = link(h.name, 'up0');
    const eth0 = link(c1.name, 'eth0');
    assert.equal(eth0?.linkinfo?.info_kind, 'macvlan');
    assert.equal((eth0 as { link_index?: number } | undefined)?.link_index, hostUp0?.ifindex, 'parent is the default route interface');
    const check = await macvlan(h, { command: 'CHECK', containerId: 'dflt', netns: c1.path }, { ...noMaster, prevResult: r });
    assert.equal(check.code, 0, check.stdout + check.stderr);

    // A master that lives in the container: a veth pair entirely inside it.
    const c2 = pool.make();
    ipIn(c2.name, ['link', 'add', 'cm0', 'type', 'veth', 'peer', 'name', 'cm1']);
    ipIn(c2.name, ['link', 'set', 'cm0', 'up']);
    const inside = conf({ dataDir, extra: { master: 'cm0', linkInContainer: true } });
    const r2 = await addOk(h, 'inside', c2, inside);
    const eth = link(c2.name, 'eth0');
    assert.equal((eth as { link?: string } | undefined)?.link, 'cm0');
    const check2 = await macvlan(h, { command: 'CHECK', containerId: 'inside', netns: c2.path }, { ...inside, prevResult: r2 });
    assert.equal(check2.code, 0, check2.stdout + check2.stderr);
    for (const [id, ns, c] of [['dflt', c1, noMaster], ['inside', c2, inside]] as const) {
      const del = await macvlan(h, { command: 'DEL', containerId: id, netns: ns.path }, c);
      assert.equal(del.code, 0, del.stdout + del.stderr);
    }
    assert.deepEqual(allocations(dataDir, NET), []);
  });

  it('bad input: spec error JSON and nothing left behind', async () => {
    const u = makeUnderlay();
    const h = makeHost(u, 'hp1', '198.18.0.1/24');
    const c = pool.make();
    const dataDir = join(scratch(), 'bad');
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['missing master', conf({ dataDir, extra: { master: 'nosuch0' } }), /master nosuch0 does not exist/],
      ['MTU above the master', conf({ dataDir, extra: { mtu: 9000 } }), /mtu 9000 is larger than master up0's MTU 1500/],
      ['invalid mode', conf({ dataDir, extra: { mode: 'loud' } }), /mode/],
      // Fails after IPAM and the macvlan exist: the undo must take both back.
      ['unreachable IPAM route gateway', conf({ dataDir, routes: [{ dst: '10.99.0.0/16', gw: '10.200.0.1' }] }), /route 10\.99\.0\.0\/16 via 10\.200\.0\.1/],
    ];
    for (const [what, cf, msg] of cases) {
      const r = await macvlan(h, { command: 'ADD', containerId: 'bad', netns: c.path }, cf);
      assert.equal(r.code, 1, `${what}: ${r.stdout}`);
      const err = asCniError(r);
      assert.ok(err, `${what}: error JSON on stdout: ${r.stdout}`);
      assert.equal(err.cniVersion, '1.1.0');
      assert.equal(err.code, what === 'unreachable IPAM route gateway' ? 101 : 7, `${what}: code`);
      assert.match(err.msg, msg, what);
      assertNothingLeft(c, dataDir);
    }
    // An interface name already taken in the container is refused before anything is allocated.
    ipIn(c.name, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth1']);
    const clash = await macvlan(h, { command: 'ADD', containerId: 'bad', netns: c.path }, conf({ dataDir }));
    assert.equal(asCniError(clash)?.code, 7);
    assert.match(asCniError(clash)?.msg ?? '', /eth0 already exists/);
    assert.deepEqual(allocations(dataDir, NET), []);
    assert.deepEqual(links(h.name).map((l) => l.ifname).sort(), ['lo', 'up0']);
  });

  it('STATUS reports a missing master as code 50; GC runs', async () => {
    const u = makeUnderlay();
    const h = makeHost(u, 'hp1', '198.18.0.1/24');
    const dataDir = join(scratch(), 'status');
    const ok = await macvlan(h, { command: 'STATUS' }, conf({ dataDir }));
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const missing = await macvlan(h, { command: 'STATUS' }, conf({ dataDir, extra: { master: 'gone0' } }));
    assert.equal(missing.code, 1);
    assert.equal(asCniError(missing)?.code, 50);
    assert.match(asCniError(missing)?.msg ?? '', /gone0/);
    const noDefault = await macvlan(h, { command: 'STATUS' }, { ...conf({ dataDir }), master: undefined });
    assert.equal(asCniError(noDefault)?.code, 50, 'no master and no default route');
    const gc = await macvlan(h, { command: 'GC' }, { ...conf({ dataDir }), 'cni.dev/valid-attachments': [] });
    assert.equal(gc.code, 0, gc.stdout + gc.stderr);
  });

  it('a shim macvlan on the host reaches its own macvlan container, which the master cannot', async () => {
    const u = makeUnderlay();
    const h = makeHost(u, 'hp1', '198.18.0.1/24');
    const c = pool.make();
    const r = await addOk(h, 'shimmed', c, conf({ dataDir: join(scratch(), 'shim'), rangeStart: '10.61.0.10', rangeEnd: '10.61.0.19' }));
    const target = ipOf(r);

    // The problem: through the master itself the host never reaches its own macvlans.
    ipIn(h.name, ['route', 'add', '10.61.0.0/24', 'dev', 'up0']);
    assert.equal(await ping(h.path, target, 1), false, 'host → container through the master');
    ipIn(h.name, ['route', 'del', '10.61.0.0/24', 'dev', 'up0']);

    const nl = Netlink.open(h.path);
    try {
      const opts = { name: 'wmvshim', master: 'up0', address: parseCidr('10.61.0.254/32'), routes: [parseCidr('10.61.0.0/24')] };
      ensureMacvlanShim(nl, opts);
      ensureMacvlanShim(nl, opts); // idempotent
      const shim = link(h.name, 'wmvshim');
      assert.equal(shim?.linkinfo?.info_kind, 'macvlan');
      assert.equal(shim?.linkinfo?.info_data?.mode, 'bridge');
      const routes = ipJson<Array<{ dst: string; dev: string; prefsrc?: string }>>(h.name, ['route', 'show', '10.61.0.0/24']);
      assert.deepEqual(routes.map((x) => [x.dst, x.dev, x.prefsrc]), [['10.61.0.0/24', 'wmvshim', '10.61.0.254']]);
      assert.ok(await ping(h.path, target), 'host → container through the shim');
      assert.ok(await ping(c.path, '10.61.0.254'), 'container → host shim address');

      assert.equal(removeMacvlanShim(nl, 'wmvshim'), true);
      assert.equal(removeMacvlanShim(nl, 'wmvshim'), false);
      assert.deepEqual(ipJson(h.name, ['route', 'show', '10.61.0.0/24']), []);
    } finally {
      nl.close();
    }
    const del = await macvlan(h, { command: 'DEL', containerId: 'shimmed', netns: c.path }, conf({ dataDir: join(scratch(), 'shim') }));
    assert.equal(del.code, 0, del.stdout + del.stderr);
  });
});

// weft-bridge's config keys, each checked where it shows: the kernel's view (ip -json -d),
// nftables, and traffic between namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ipIn, ipJson, NetnsPool, type TestNetns } from '../../src/netns/testing.js';
import {
  addrs,
  allocations,
  asCniError,
  bridgeConf,
  cniRules,
  hostVeths,
  link,
  links,
  peerEchoServer,
  ping,
  runBridge,
  tcpFetch,
  type BridgeConfOptions,
} from './cni-harness.js';

const pool = new NetnsPool('wbt');
let dataRoot = '';
let seq = 0;
before(() => { dataRoot = mkdtempSync(join(tmpdir(), 'wbt-opt-')); });
after(() => {
  pool.cleanup();
  rmSync(dataRoot, { recursive: true, force: true });
});

interface WireResult { interfaces: Array<{ name: string; mac?: string }>; ips: Array<{ address: string; gateway?: string }> }

function freshDataDir(): string {
  return join(dataRoot, `d${seq++}`);
}

async function add(host: TestNetns, ctr: TestNetns, id: string, conf: Record<string, unknown>): Promise<WireResult> {
  const r = await runBridge(host.path, { command: 'ADD', containerId: id, netns: ctr.path }, conf);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.json as unknown as WireResult;
}

function conf(o: Omit<BridgeConfOptions, 'dataDir'> & { dataDir?: string }): Record<string, unknown> {
  return bridgeConf({ dataDir: freshDataDir(), ...o });
}

const ipOf = (r: WireResult, i = 0) => r.ips[i]!.address.split('/')[0]!;

describe('weft-bridge options', () => {
  it('isDefaultGateway: the container has a default route via the gateway, the bridge holds it', async () => {
    const host = pool.make();
    const ctr = pool.make();
    await add(host, ctr, 'dg', conf({ ranges: [[{ subnet: '10.78.1.0/24' }]], extra: { isDefaultGateway: true } }));
    const routes = ipJson<Array<{ dst: string; gateway?: string; dev: string }>>(ctr.name, ['route', 'show', 'default']);
    assert.deepEqual(routes.map((r) => ({ dst: r.dst, gateway: r.gateway, dev: r.dev })), [{ dst: 'default', gateway: '10.78.1.1', dev: 'eth0' }]);
    assert.deepEqual(addrs(host.name, 'wbr0').filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.78.1.1/24']);
  });

  it('the bridge keeps its own MAC while containers come and go (their gateway neighbour stays valid)', async () => {
    const host = pool.make();
    const c = conf({ ranges: [[{ subnet: '10.78.9.0/24' }]], extra: { isDefaultGateway: true } });
    const macOf = () => ipJson<Array<{ address: string; addr_assign_type?: number }>>(host.name, ['-d', 'link', 'show', 'wbr0'])[0]!;
    const ctrs = [pool.make(), pool.make(), pool.make(), pool.make()];
    await add(host, ctrs[0]!, 'mac0', c);
    const first = macOf().address;
    for (const [i, ctr] of ctrs.slice(1).entries()) {
      // A container whose host end has the lowest MAC possible: a bridge following its ports would take it.
      const before = new Set(hostVeths(host.name).map((l) => l.ifname));
      await add(host, ctr, `mac${i + 1}`, c);
      const veth = hostVeths(host.name).find((l) => !before.has(l.ifname))!.ifname;
      ipIn(host.name, ['link', 'set', veth, 'address', `02:00:00:00:00:0${i + 1}`]);
      assert.equal(macOf().address, first, `after container ${i + 1}`);
    }
    const r = await runBridge(host.path, { command: 'DEL', containerId: 'mac1', netns: ctrs[1]!.path }, c);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(macOf().address, first, 'after a DEL');
    assert.equal(parseInt(first.slice(0, 2), 16) & 0x03, 0x02, 'unicast, locally administered');
  });

  it('isGateway false: no address on the bridge, no default route', async () => {
    const host = pool.make();
    const ctr = pool.make();
    await add(host, ctr, 'nogw', conf({ ranges: [[{ subnet: '10.78.2.0/24' }]] }));
    assert.deepEqual(addrs(host.name, 'wbr0').filter((a) => a.family === 'inet'), []);
    assert.deepEqual(ipJson(ctr.name, ['route', 'show', 'default']), []);
  });

  it('ipMasq: a container reaches an outside namespace through the host, seen as the host address', async () => {
    const host = pool.make();
    const outside = pool.make();
    // host ↔ outside underlay; outside has no route to the pod subnet, so only masqueraded
    // traffic can be answered.
    ipIn(host.name, ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1', 'netns', outside.name]);
    ipIn(host.name, ['addr', 'add', '198.18.7.1/24', 'dev', 'up0']);
    ipIn(host.name, ['link', 'set', 'up0', 'up']);
    ipIn(outside.name, ['addr', 'add', '198.18.7.2/24', 'dev', 'up1']);
    ipIn(outside.name, ['link', 'set', 'up1', 'up']);
    const server = await peerEchoServer(outside.path, '198.18.7.2', 7070);
    try {
      const masq = pool.make();
      const masqConf = conf({ name: 'wbtmasq', ranges: [[{ subnet: '10.78.3.0/24' }]], extra: { isDefaultGateway: true, ipMasq: true } });
      const r = await add(host, masq, 'masq', masqConf);
      assert.ok(await ping(masq.path, '198.18.7.2'), 'masqueraded ping reaches outside');
      assert.equal(await tcpFetch(masq.path, '198.18.7.2', 7070), '198.18.7.1', 'outside sees the host address');
      const rules = (await cniRules(host.name)).filter((x) => x.chain === 'postrouting');
      assert.equal(rules.length, 1);
      assert.ok(JSON.stringify(rules[0]?.expr).includes(ipOf(r)), 'the rule matches the container address');

      // Without ipMasq on another network the same path is not answered.
      const plain = pool.make();
      await add(host, plain, 'plain', conf({ name: 'wbtplain', bridge: 'wbr1', ranges: [[{ subnet: '10.78.4.0/24' }]], extra: { isDefaultGateway: true } }));
      assert.equal(await ping(plain.path, '198.18.7.2', 1), false, 'no masquerade, no answer');

      // ipMasqExclude (weft's own key; the weft plugin passes the cluster network): those
      // destinations keep the pod's address, everything else is still masqueraded.
      ipIn(outside.name, ['route', 'add', '10.78.6.0/24', 'via', '198.18.7.1']);
      const excl = pool.make();
      const exclConf = conf({ name: 'wbtexcl', bridge: 'wbr2', ranges: [[{ subnet: '10.78.6.0/24' }]], extra: { isDefaultGateway: true, ipMasq: true, ipMasqExclude: ['198.18.7.0/24'] } });
      const re = await add(host, excl, 'excl', exclConf);
      assert.equal(await tcpFetch(excl.path, '198.18.7.2', 7070), ipOf(re), 'an excluded destination sees the pod address');
      const delExcl = await runBridge(host.path, { command: 'DEL', containerId: 'excl', netns: excl.path }, exclConf);
      assert.equal(delExcl.code, 0, delExcl.stdout + delExcl.stderr);

      const del = await runBridge(host.path, { command: 'DEL', containerId: 'masq', netns: masq.path }, masqConf);
      assert.equal(del.code, 0, del.stdout + del.stderr);
      assert.deepEqual(await cniRules(host.name), [], 'DEL removed the masquerade rule');
    } finally {
      await server.stop();
    }
  });

  it('hairpinMode and promiscMode show in ip -d link; mtu is on the bridge and both veth ends', async () => {
    const host = pool.make();
    const ctr = pool.make();
    const r = await add(host, ctr, 'hp', conf({ ranges: [[{ subnet: '10.78.5.0/24' }]], extra: { hairpinMode: true, promiscMode: true, mtu: 1400 } }));
    const br = link(host.name, 'wbr0');
    const hostEnd = link(host.name, r.interfaces[1]!.name);
    const ctrEnd = link(ctr.name, 'eth0');
    assert.ok(br && hostEnd && ctrEnd);
    assert.equal(hostEnd.linkinfo?.info_slave_kind, 'bridge');
    assert.equal(hostEnd.linkinfo?.info_slave_data?.hairpin, true);
    assert.ok(br.flags.includes('PROMISC') && (br.promiscuity ?? 0) > 0, 'bridge is promiscuous');
    assert.equal(br.mtu, 1400);
    assert.equal(hostEnd.mtu, 1400);
    assert.equal(ctrEnd.mtu, 1400);

    const plainHost = pool.make();
    const plainCtr = pool.make();
    const p = await add(plainHost, plainCtr, 'nohp', conf({ ranges: [[{ subnet: '10.78.6.0/24' }]] }));
    assert.equal(link(plainHost.name, p.interfaces[1]!.name)?.linkinfo?.info_slave_data?.hairpin, false);
    assert.ok(!link(plainHost.name, 'wbr0')?.flags.includes('PROMISC'));
  });

  it('macspoofchk: a container that changes its MAC can no longer reach the other one', async () => {
    const host = pool.make();
    const a = pool.make();
    const b = pool.make();
    const c = conf({ ranges: [[{ subnet: '10.78.8.0/24' }]], extra: { isGateway: true, macspoofchk: true } });
    const ra = await add(host, a, 'spoofa', c);
    const rb = await add(host, b, 'spoofb', c);
    const rules = (await cniRules(host.name)).filter((x) => x.family === 'bridge');
    assert.equal(rules.length, 2, 'one rule per container');
    assert.ok(await ping(a.path, ipOf(rb)), 'before: a reaches b');
    ipIn(a.name, ['link', 'set', 'eth0', 'address', '02:00:00:00:be:ef']);
    ipIn(b.name, ['neigh', 'flush', 'dev', 'eth0']);
    assert.equal(await ping(a.path, ipOf(rb), 1), false, 'after: frames with a foreign source MAC are dropped');
    // Restoring the MAC restores connectivity: it is the MAC check, not something else.
    ipIn(a.name, ['link', 'set', 'eth0', 'address', ra.interfaces[2]!.mac!]);
    ipIn(b.name, ['neigh', 'flush', 'dev', 'eth0']);
    assert.ok(await ping(a.path, ipOf(rb)), 'restored MAC: a reaches b again');

    // CHECK holds the rule and the bridge's gateway address to what ADD promised.
    const check = () => runBridge(host.path, { command: 'CHECK', containerId: 'spoofa', netns: a.path }, { ...c, prevResult: ra });
    assert.equal((await check()).code, 0, 'CHECK passes as added');
    const nft = spawnSync('ip', ['netns', 'exec', host.name, 'nft', 'flush', 'chain', 'bridge', 'weft-cni', 'prerouting']);
    assert.equal(nft.status, 0, nft.stderr?.toString());
    const noRule = asCniError(await check());
    assert.match(noRule?.msg ?? '', /MAC spoof check rule .* is missing/);
    ipIn(host.name, ['addr', 'del', '10.78.8.1/24', 'dev', 'wbr0']);
    const noGw = asCniError(await runBridge(host.path, { command: 'CHECK', containerId: 'spoofa', netns: a.path }, { ...c, macspoofchk: false, prevResult: ra }));
    assert.match(noGw?.msg ?? '', /lacks its gateway address 10\.78\.8\.1\/24/);
  });

  it('forceAddress: a different address on the bridge fails the ADD (code 7, nothing left) unless forced, which replaces it', async () => {
    const host = pool.make();
    const ctr = pool.make();
    ipIn(host.name, ['link', 'add', 'wbr0', 'type', 'bridge']);
    ipIn(host.name, ['addr', 'add', '10.78.9.254/24', 'dev', 'wbr0']);
    const dataDir = freshDataDir();
    const base = { dataDir, ranges: [[{ subnet: '10.78.10.0/24' }]] };
    const refused = await runBridge(host.path, { command: 'ADD', containerId: 'fa', netns: ctr.path }, bridgeConf({ ...base, extra: { isGateway: true } }));
    assert.equal(refused.code, 1);
    const err = asCniError(refused);
    assert.equal(err?.code, 7);
    assert.match(err?.msg ?? '', /10\.78\.9\.254\/24.*forceAddress/);
    assert.deepEqual(hostVeths(host.name), [], 'veth undone');
    assert.deepEqual(links(ctr.name).map((l) => l.ifname), ['lo']);
    assert.deepEqual(allocations(dataDir, 'wbtnet'), [], 'allocation undone');

    await add(host, ctr, 'fa', bridgeConf({ ...base, extra: { isGateway: true, forceAddress: true } }));
    assert.deepEqual(addrs(host.name, 'wbr0').filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), ['10.78.10.1/24']);
  });

  it('IPv6: address and gateway on the bridge, ping6 gateway and the second container', async () => {
    const host = pool.make();
    const a = pool.make();
    const b = pool.make();
    const c = conf({ version: '0.4.0', ranges: [[{ subnet: 'fd77:0:0:1::/64' }]], extra: { isDefaultGateway: true } });
    const ra = await add(host, a, 'v6a', c);
    const rb = await add(host, b, 'v6b', c);
    assert.equal((ra as unknown as { ips: Array<{ version: string }> }).ips[0]?.version, '6');
    assert.equal(ra.ips[0]?.gateway, 'fd77:0:0:1::1');
    assert.ok(addrs(host.name, 'wbr0').some((x) => x.family === 'inet6' && x.local === 'fd77:0:0:1::1' && x.prefixlen === 64));
    const routes = ipJson<Array<{ dst: string; gateway?: string }>>(a.name, ['-6', 'route', 'show', 'default']);
    assert.equal(routes[0]?.gateway, 'fd77:0:0:1::1');
    assert.ok(await ping(a.path, 'fd77:0:0:1::1'), 'ping6 gateway');
    assert.ok(await ping(a.path, ipOf(rb)), 'ping6 second container');
  });

  it('dual-stack: one address per family, default routes for both, traffic over both', async () => {
    const host = pool.make();
    const a = pool.make();
    const b = pool.make();
    const dataDir = freshDataDir();
    const c = bridgeConf({ dataDir, ranges: [[{ subnet: '10.78.11.0/24' }], [{ subnet: 'fd77:0:0:2::/64' }]], extra: { isDefaultGateway: true } });
    const ra = await add(host, a, 'dsa', c);
    const rb = await add(host, b, 'dsb', c);
    assert.deepEqual(ra.ips.map((i) => i.gateway), ['10.78.11.1', 'fd77:0:0:2::1']);
    const got = addrs(a.name, 'eth0').filter((x) => x.scope === 'global').map((x) => `${x.local}/${x.prefixlen}`).sort();
    assert.deepEqual(got, ra.ips.map((i) => i.address).sort());
    assert.equal(ipJson<unknown[]>(a.name, ['-4', 'route', 'show', 'default']).length, 1);
    assert.equal(ipJson<unknown[]>(a.name, ['-6', 'route', 'show', 'default']).length, 1);
    assert.ok(await ping(a.path, ipOf(rb, 0)), 'v4 to b');
    assert.ok(await ping(a.path, ipOf(rb, 1)), 'v6 to b');
    assert.equal(allocations(dataDir, 'wbtnet').length, 4);
    for (const [id, ns] of [['dsa', a], ['dsb', b]] as const) {
      const d = await runBridge(host.path, { command: 'DEL', containerId: id, netns: ns.path }, c);
      assert.equal(d.code, 0, d.stdout + d.stderr);
    }
    assert.deepEqual(allocations(dataDir, 'wbtnet'), []);
    assert.deepEqual(hostVeths(host.name), []);
  });
});

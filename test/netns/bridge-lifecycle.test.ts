// weft-bridge through its whole life, for every CNI spec version, checked against the kernel
// (ip -json) and the IPAM dataDir: ADD → result shape → ping → CHECK → DEL → gone → DEL again,
// and DEL after the container's namespace is already deleted.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { type TestNetns } from '../../src/netns/testing.js';
import {
  ALL_VERSIONS,
  allocations,
  asCniError,
  bridgeConf,
  bridgePorts,
  hostVeths,
  links,
  ping,
  runBridge,
  type SpecVersion,
  cniSuite,
} from './cni-harness.js';

const { pool, dir: scratch } = cniSuite('wbt', 'wbt-life');

interface WireIP { address: string; gateway?: string; interface?: number; version?: string }
interface WireResult { cniVersion: string; interfaces: Array<{ name: string; mac?: string; sandbox?: string }>; ips: WireIP[]; routes?: Array<{ dst: string; gw?: string }> }

const legacy = (v: SpecVersion) => v.startsWith('0.');
const hasCheck = (v: SpecVersion) => v !== '0.3.0' && v !== '0.3.1';

function assertResultShape(v: SpecVersion, r: WireResult, netns: TestNetns, subnetPrefix: string): void {
  assert.equal(r.cniVersion, v);
  assert.equal(r.interfaces.length, 3, 'bridge, host veth, container veth');
  assert.equal(r.interfaces[0]?.name, 'wbr0');
  assert.match(r.interfaces[1]?.name ?? '', /^veth[0-9a-f]{8}$/);
  assert.equal(r.interfaces[2]?.name, 'eth0');
  assert.equal(r.interfaces[2]?.sandbox, netns.path);
  for (const i of r.interfaces) assert.match(i.mac ?? '', /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  assert.equal(r.ips.length, 1);
  const ip = r.ips[0]!;
  assert.equal(ip.interface, 2);
  assert.ok(ip.address.startsWith(subnetPrefix) && ip.address.endsWith('/24'), ip.address);
  assert.equal(ip.gateway, `${subnetPrefix}1`);
  if (legacy(v)) assert.equal(ip.version, '4', `${v} ips carry "version"`);
  else assert.equal(ip.version, undefined, `${v} ips have no "version"`);
  assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: `${subnetPrefix}1` }]);
}

describe('weft-bridge lifecycle, every spec version', () => {
  ALL_VERSIONS.forEach((v, vi) => {
    it(`${v}: ADD, result shape, ping, CHECK, DEL, gone, DEL again, DEL without netns`, async () => {
      const host = pool.make();
      const c1 = pool.make();
      const c2 = pool.make();
      const dataDir = join(scratch(), `v${vi}`);
      const subnetPrefix = `10.77.${vi}.`;
      const conf = bridgeConf({
        version: v,
        dataDir,
        ranges: [[{ subnet: `${subnetPrefix}0/24` }]],
        extra: { isDefaultGateway: true },
      });
      const add1 = await runBridge(host.path, { command: 'ADD', containerId: 'ctr1', netns: c1.path }, conf);
      assert.equal(add1.code, 0, add1.stdout + add1.stderr);
      const add2 = await runBridge(host.path, { command: 'ADD', containerId: 'ctr2', netns: c2.path }, conf);
      assert.equal(add2.code, 0, add2.stdout + add2.stderr);
      const r1 = add1.json as unknown as WireResult;
      const r2 = add2.json as unknown as WireResult;
      assertResultShape(v, r1, c1, subnetPrefix);
      assertResultShape(v, r2, c2, subnetPrefix);

      // The kernel agrees with the result: both host veths on the bridge, eth0 with the address.
      assert.deepEqual(
        bridgePorts(host.name, 'wbr0').map((l) => l.ifname).sort(),
        [r1.interfaces[1]!.name, r2.interfaces[1]!.name].sort(),
      );
      const eth0 = links(c1.name).find((l) => l.ifname === 'eth0');
      assert.equal(eth0?.address, r1.interfaces[2]?.mac);
      assert.equal(allocations(dataDir, 'wbtnet').length, 2);

      const ip2 = r2.ips[0]!.address.split('/')[0]!;
      assert.ok(await ping(c1.path, `${subnetPrefix}1`), 'container → gateway');
      assert.ok(await ping(c1.path, ip2), 'container → second container');

      const withPrev = { ...conf, prevResult: r1 };
      const check = await runBridge(host.path, { command: 'CHECK', containerId: 'ctr1', netns: c1.path }, withPrev);
      if (hasCheck(v)) {
        assert.equal(check.code, 0, check.stdout + check.stderr);
        assert.equal(check.stdout, '');
      } else {
        assert.equal(check.code, 1);
        assert.equal(asCniError(check)?.code, 1, `${v} has no CHECK: incompatible version`);
      }

      const hostVeth1 = r1.interfaces[1]!.name;
      const del1 = await runBridge(host.path, { command: 'DEL', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(del1.code, 0, del1.stdout + del1.stderr);
      assert.equal(del1.stdout, '');
      assert.ok(!hostVeths(host.name).some((l) => l.ifname === hostVeth1), 'host veth removed');
      assert.deepEqual(links(c1.name).map((l) => l.ifname), ['lo'], 'container link removed');
      assert.deepEqual(allocations(dataDir, 'wbtnet'), [ip2], 'only the second allocation is left');

      const again = await runBridge(host.path, { command: 'DEL', containerId: 'ctr1', netns: c1.path }, withPrev);
      assert.equal(again.code, 0, again.stdout + again.stderr);

      // The runtime deleted the namespace before DEL: the kernel took the veth with it, DEL still
      // releases the address and succeeds.
      const c2path = c2.path;
      c2.remove();
      const del2 = await runBridge(host.path, { command: 'DEL', containerId: 'ctr2', netns: c2path }, { ...conf, prevResult: r2 });
      assert.equal(del2.code, 0, del2.stdout + del2.stderr);
      const del2NoNetns = await runBridge(host.path, { command: 'DEL', containerId: 'ctr2' }, conf);
      assert.equal(del2NoNetns.code, 0, del2NoNetns.stdout + del2NoNetns.stderr);
      assert.deepEqual(allocations(dataDir, 'wbtnet'), []);
      // veth teardown after a namespace dies is asynchronous in the kernel; allow it a moment.
      for (let i = 0; i < 50 && hostVeths(host.name).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(hostVeths(host.name), [], 'no veth left in the host');
      assert.deepEqual(bridgePorts(host.name, 'wbr0'), []);
    });
  });
});

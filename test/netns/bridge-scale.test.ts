// 100 containers at once into one /24: 100 plugin processes started together, each with its own
// container namespace, all racing for the bridge, the IPAM lock and nftables. Then GC and
// STATUS on what is left.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type TestNetns } from '../../src/netns/testing.js';
import { allocations, asCniError, bridgeConf, bridgePorts, cniRules, hostVeths, links, runBridge, cniSuite } from './cni-harness.js';

const { pool, dir: scratch } = cniSuite('wbt', 'wbt-scale');

interface WireResult { ips: Array<{ address: string }>; interfaces: Array<{ name: string }> }

describe('weft-bridge at scale', () => {
  it('100 concurrent ADDs → 100 unique addresses and links; 100 concurrent DELs → nothing left', async () => {
    const host = pool.make();
    const ctrs: TestNetns[] = Array.from({ length: 100 }, () => pool.make());
    const dataDir = join(scratch(), 'hundred');
    const conf = bridgeConf({ dataDir, ranges: [[{ subnet: '10.80.0.0/24' }]], extra: { isGateway: true, ipMasq: true } });
    const t0 = Date.now();
    const adds = await Promise.all(ctrs.map((c, i) => runBridge(host.path, { command: 'ADD', containerId: `c${i}`, netns: c.path }, conf)));
    const addMs = Date.now() - t0;
    adds.forEach((r, i) => assert.equal(r.code, 0, `c${i}: ${r.stdout}${r.stderr}`));
    const results = adds.map((r) => r.json as unknown as WireResult);
    const ips = results.map((r) => r.ips[0]!.address);
    assert.equal(new Set(ips).size, 100, 'unique addresses');
    for (const a of ips) assert.match(a, /^10\.80\.0\.\d+\/24$/);
    assert.equal(allocations(dataDir, 'wbtnet').length, 100);
    const ports = bridgePorts(host.name, 'wbr0').map((l) => l.ifname).sort();
    assert.deepEqual(ports, results.map((r) => r.interfaces[1]!.name).sort(), 'every host veth is on the bridge');
    ctrs.forEach((c, i) => {
      assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo', 'eth0'], `c${i} has eth0`);
    });
    assert.equal((await cniRules(host.name)).length, 100, 'one masquerade rule each');

    const t1 = Date.now();
    const dels = await Promise.all(ctrs.map((c, i) => runBridge(host.path, { command: 'DEL', containerId: `c${i}`, netns: c.path }, conf)));
    const delMs = Date.now() - t1;
    dels.forEach((r, i) => assert.equal(r.code, 0, `c${i}: ${r.stdout}${r.stderr}`));
    assert.deepEqual(allocations(dataDir, 'wbtnet'), []);
    // What remains on disk is the store's bookkeeping (the lock and the last-reserved marker), no allocation.
    for (const f of readdirSync(join(dataDir, 'wbtnet'))) assert.match(f, /^(last_reserved_ip\.\d+|lock)$/);
    assert.deepEqual(hostVeths(host.name), []);
    assert.deepEqual(bridgePorts(host.name, 'wbr0'), []);
    for (const c of ctrs) assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo']);
    assert.deepEqual(await cniRules(host.name), []);
    process.stderr.write(`# 100 concurrent weft-bridge ADD: ${addMs} ms, DEL: ${delMs} ms\n`);
  });

  it('GC with valid-attachments listing one of two containers removes the other\'s allocation and rules; STATUS reports', async () => {
    const host = pool.make();
    const a = pool.make();
    const b = pool.make();
    const dataDir = join(scratch(), 'gc');
    // A /29 holds .2–.6 (5 addresses, .1 is the gateway).
    const conf = bridgeConf({ dataDir, ranges: [[{ subnet: '10.80.1.0/29' }]], extra: { isGateway: true, ipMasq: true, macspoofchk: true } });
    const ra = await runBridge(host.path, { command: 'ADD', containerId: 'keep', netns: a.path }, conf);
    const rb = await runBridge(host.path, { command: 'ADD', containerId: 'crashed', netns: b.path }, conf);
    assert.equal(ra.code, 0, ra.stdout + ra.stderr);
    assert.equal(rb.code, 0, rb.stdout + rb.stderr);
    const ipA = (ra.json as unknown as WireResult).ips[0]!.address.split('/')[0]!;
    assert.equal((await cniRules(host.name)).length, 4, 'masquerade + macspoofchk per container');

    const status = await runBridge(host.path, { command: 'STATUS' }, conf);
    assert.equal(status.code, 0, status.stdout + status.stderr);
    assert.equal(status.stdout, '');

    const noList = await runBridge(host.path, { command: 'GC' }, conf);
    assert.equal(asCniError(noList)?.code, 7, 'GC without valid-attachments refuses rather than wiping everything');
    assert.equal(allocations(dataDir, 'wbtnet').length, 2);

    const gc = await runBridge(host.path, { command: 'GC' }, { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'keep', ifname: 'eth0' }] });
    assert.equal(gc.code, 0, gc.stdout + gc.stderr);
    assert.deepEqual(allocations(dataDir, 'wbtnet'), [ipA], "only the valid container's address is left");
    const rules = await cniRules(host.name);
    assert.equal(rules.length, 2, "only the valid container's two rules are left");
    assert.ok(rules.every((r) => JSON.stringify(r.expr).includes(ipA) || r.family === 'bridge'));

    // STATUS on a full range: the spec's 51 ("no IPs left"), not an ADD failure later.
    for (let i = 0; i < 4; i++) {
      const extra = pool.make();
      const r = await runBridge(host.path, { command: 'ADD', containerId: `fill${i}`, netns: extra.path }, conf);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    }
    const full = await runBridge(host.path, { command: 'STATUS' }, conf);
    assert.equal(full.code, 1);
    const err = asCniError(full);
    assert.ok(err && (err.code === 50 || err.code === 51), full.stdout);
  });
});

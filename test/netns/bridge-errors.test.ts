// weft-bridge on bad input and on failures half way: the spec's error JSON on stdout, the right
// code, exit 1, and nothing left behind (no link, no allocation, no nftables rule).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ipIn, NetnsPool, type TestNetns } from '../../src/netns/testing.js';
import {
  allocations,
  asCniError,
  bridgeConf,
  cniRules,
  hostVeths,
  links,
  runBridge,
  type CniCall,
  type CniErrorJson,
  type PluginRun,
} from './cni-harness.js';

const pool = new NetnsPool('wbt');
let dataRoot = '';
let host: TestNetns;
let ctr: TestNetns;
before(() => {
  dataRoot = mkdtempSync(join(tmpdir(), 'wbt-err-'));
  host = pool.make();
  ctr = pool.make();
});
after(() => {
  pool.cleanup();
  rmSync(dataRoot, { recursive: true, force: true });
});

let seq = 0;
function freshConf(extra: Record<string, unknown> = {}, subnet = '10.79.0.0/24'): { conf: Record<string, unknown>; dataDir: string } {
  const n = seq++;
  const dataDir = join(dataRoot, `d${n}`);
  // ipMasq + macspoofchk so that a leaked rule would show; a bridge per conf so gateway
  // addresses of different subnets never meet.
  return { dataDir, conf: bridgeConf({ dataDir, bridge: `wbr${n}`, ranges: [[{ subnet }]], extra: { isGateway: true, ipMasq: true, macspoofchk: true, ...extra } }) };
}

function expectError(r: PluginRun, code: number, msg?: RegExp): CniErrorJson {
  assert.equal(r.code, 1, `exit 1: ${r.stdout}${r.stderr}`);
  const err = asCniError(r);
  assert.ok(err, `stdout is the spec's error JSON: ${r.stdout}`);
  assert.deepEqual(Object.keys(err).sort(), ['cniVersion', 'code', 'details', 'msg']);
  assert.equal(err.code, code, err.msg);
  if (msg) assert.match(err.msg + ' ' + (err.details ?? ''), msg);
  return err;
}

/** Nothing of this attempt is anywhere: host veths, the container's links, allocations, rules. */
async function assertNothingLeft(dataDir: string): Promise<void> {
  assert.deepEqual(hostVeths(host.name).map((l) => l.ifname), [], 'no host veth');
  assert.deepEqual(links(ctr.name).map((l) => l.ifname), ['lo'], 'no container link');
  assert.deepEqual(allocations(dataDir, 'wbtnet'), [], 'no allocation');
  assert.deepEqual(await cniRules(host.name), [], 'no nftables rule');
}

const addCall = (over: Partial<CniCall> = {}): CniCall => ({ command: 'ADD', containerId: 'bad', netns: ctr.path, ...over });

describe('weft-bridge bad input', () => {
  it('malformed JSON → 6', async () => {
    const { dataDir } = freshConf();
    expectError(await runBridge(host.path, addCall(), '{"cniVersion":"1.0.0", "name": '), 6, /decod/);
    await assertNothingLeft(dataDir);
  });

  it('missing CNI_* variables → 4, naming them', async () => {
    const { conf, dataDir } = freshConf();
    const r = await runBridge(host.path, addCall({ envOverride: { CNI_NETNS: undefined, CNI_CONTAINERID: undefined } }), conf);
    expectError(r, 4, /CNI_CONTAINERID.*CNI_NETNS|CNI_NETNS.*CNI_CONTAINERID/);
    expectError(await runBridge(host.path, addCall({ envOverride: { CNI_COMMAND: undefined } }), conf), 4, /CNI_COMMAND/);
    await assertNothingLeft(dataDir);
  });

  it('unsupported cniVersion → 1', async () => {
    const { conf, dataDir } = freshConf();
    for (const v of ['0.2.0', '2.0.0']) {
      const err = expectError(await runBridge(host.path, addCall(), { ...conf, cniVersion: v }), 1, /incompatible/);
      assert.match(err.details ?? '', new RegExp(v.replaceAll('.', '\\.')));
    }
    await assertNothingLeft(dataDir);
  });

  it('a plugin key of the wrong type → 7, naming the key', async () => {
    for (const [key, value] of [['mtu', 'big'], ['isGateway', 'yes'], ['hairpinMode', 1], ['bridge', 42]] as const) {
      const { conf, dataDir } = freshConf();
      expectError(await runBridge(host.path, addCall(), { ...conf, [key]: value }), 7, new RegExp(key));
      await assertNothingLeft(dataDir);
    }
  });

  it('an invalid subnet → 7', async () => {
    const { conf, dataDir } = freshConf({}, '10.79.300.0/24');
    expectError(await runBridge(host.path, addCall(), conf), 7, /10\.79\.300\.0\/24|subnet/);
    await assertNothingLeft(dataDir);
  });

  // 4 (InvalidEnvironment): CNI_NETNS is part of the environment the runtime passed, and it
  // names no namespace — the same class as a bad CNI_IFNAME. The reference plugins answer
  // with a generic error here; a runtime gains more from "your env is wrong".
  it('a non-existent netns → 4, naming it', async () => {
    const { conf, dataDir } = freshConf();
    expectError(await runBridge(host.path, addCall({ netns: '/run/netns/wbt-does-not-exist' }), conf), 4, /wbt-does-not-exist/);
    expectError(await runBridge(host.path, addCall({ netns: '/tmp' }), conf), 4, /not a network namespace/);
    await assertNothingLeft(dataDir);
  });

  it('an ifname that is too long → 4', async () => {
    const { conf, dataDir } = freshConf();
    expectError(await runBridge(host.path, addCall({ ifname: 'a-very-long-ifname0' }), conf), 4, /too long/);
    await assertNothingLeft(dataDir);
  });

  it('CHECK with a prevResult that does not match the container → error naming what differs', async () => {
    const { conf, dataDir } = freshConf({}, '10.79.1.0/24');
    const add = await runBridge(host.path, addCall({ containerId: 'chk' }), conf);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    try {
    const good = add.json as { ips: Array<{ address: string }>; interfaces: Array<{ mac?: string }> };
    const ok = await runBridge(host.path, { command: 'CHECK', containerId: 'chk', netns: ctr.path }, { ...conf, prevResult: good });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);

    const wrongMac = structuredClone(good);
    wrongMac.interfaces[2]!.mac = '02:00:00:00:00:01';
    expectError(await runBridge(host.path, { command: 'CHECK', containerId: 'chk', netns: ctr.path }, { ...conf, prevResult: wrongMac }), 100, /MAC/);
    // CHECK asks the IPAM plugin first (as the reference does): it knows no eth1 → 3.
    const wrongIfname = await runBridge(host.path, { command: 'CHECK', containerId: 'chk', netns: ctr.path, ifname: 'eth1' }, { ...conf, prevResult: good });
    expectError(wrongIfname, 3, /eth1/);
    // An address the container does not have: the IPAM store disagrees first (it was never
    // allocated to this container) → 3, naming the address.
    const wrongIp = structuredClone(good);
    wrongIp.ips[0]!.address = '10.79.1.77/24';
    expectError(await runBridge(host.path, { command: 'CHECK', containerId: 'chk', netns: ctr.path }, { ...conf, prevResult: wrongIp }), 3, /10\.79\.1\.77/);
    // The bridge's own view: remove the address in the container behind the plugin's back.
    ipIn(ctr.name, ['addr', 'flush', 'dev', 'eth0']);
    expectError(await runBridge(host.path, { command: 'CHECK', containerId: 'chk', netns: ctr.path }, { ...conf, prevResult: good }), 100, new RegExp(good.ips[0]!.address.replace(/\./g, '\\.')));
    } finally {
      await runBridge(host.path, { command: 'DEL', containerId: 'chk', netns: ctr.path }, conf);
    }
    const del = await runBridge(host.path, { command: 'DEL', containerId: 'chk', netns: ctr.path }, conf);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    await assertNothingLeft(dataDir);
  });
});

describe('weft-bridge failing half way undoes its work', () => {
  it('the container ifname already exists: error, veth and allocation undone, the existing link untouched', async () => {
    const { conf, dataDir } = freshConf({}, '10.79.2.0/24');
    ipIn(ctr.name, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    try {
      expectError(await runBridge(host.path, addCall({ containerId: 'dup' }), conf), 7, /eth0 already exists/);
      assert.deepEqual(links(ctr.name).map((l) => l.ifname), ['lo', 'eth0peer', 'eth0'], 'the existing eth0 is still there');
      assert.deepEqual(hostVeths(host.name), []);
      assert.deepEqual(allocations(dataDir, 'wbtnet'), []);
      assert.deepEqual(await cniRules(host.name), []);
    } finally {
      ipIn(ctr.name, ['link', 'del', 'eth0']);
    }
  });

  it('the range is exhausted: a clear error, no veth, no allocation, no rule', async () => {
    // A /30: .1 is the gateway, .3 broadcast → one address.
    const { conf, dataDir } = freshConf({}, '10.79.3.0/30');
    const other = pool.make();
    const first = await runBridge(host.path, { command: 'ADD', containerId: 'only', netns: other.path }, conf);
    assert.equal(first.code, 0, first.stdout + first.stderr);
    const rulesBefore = await cniRules(host.name);
    const err = expectError(await runBridge(host.path, addCall({ containerId: 'full' }), conf), 103, /no IP addresses available/);
    assert.match(err.msg, /10\.79\.3\.1-10\.79\.3\.2/, 'the message names the range');
    assert.equal(hostVeths(host.name).length, 1, "only the first container's veth");
    assert.deepEqual(links(ctr.name).map((l) => l.ifname), ['lo']);
    assert.deepEqual(allocations(dataDir, 'wbtnet'), ['10.79.3.2']);
    assert.deepEqual(await cniRules(host.name), rulesBefore, 'no rule added');
    const del = await runBridge(host.path, { command: 'DEL', containerId: 'only', netns: other.path }, conf);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    await assertNothingLeft(dataDir);
  });
});

// The CNI plugins against bad input and hostile surroundings (issue 16, items 7, 8, 9, 10, 14 and
// 15's /dev/zero), on the real kernel: every refusal is the spec's error JSON with the right code,
// and leaves nothing behind in the host or container namespace (links, addresses, routes,
// nftables tables, forwarding sysctl: `ip -json`, `nft -j`, /proc/sys) or on disk (IPAM
// allocations, lock files, saved delegate configs). DEL succeeds for what an ADD never made.
// Full and read-only filesystems are a small tmpfs and a read-only bind mount made here under
// /tmp/weftch-* and unmounted in finally.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetnsPool, ipIn, ipJson, type TestNetns } from '../../src/netns/testing.js';
import { asCniError, link, links, runInNs, runPlugin, WEFT_CNI_DIR, type CniCall, type CniErrorJson, type PluginRun } from './cni-harness.js';

const WEFT = join(WEFT_CNI_DIR, 'weft');
const BRIDGE = join(WEFT_CNI_DIR, 'weft-bridge');
const ROUTED = join(WEFT_CNI_DIR, 'weft-routed');
const MACVLAN = join(WEFT_CNI_DIR, 'weft-macvlan');
const NET = 'wchnet';

const pool = new NetnsPool('weftch');
let root = '';
before(() => { root = mkdtempSync('/tmp/weftch-'); });
after(() => {
  pool.cleanup();
  rmSync(root, { recursive: true, force: true });
});

/** One test's host and container namespaces and its directories. */
interface World {
  host: TestNetns;
  ctr: TestNetns;
  dir: string;
  ipamDir: string;
  stateDir: string;
  subnetFile: string;
}

let seq = 0;
function world(): World {
  const dir = join(root, `w${seq++}`);
  mkdirSync(dir);
  return { host: pool.make(), ctr: pool.make(), dir, ipamDir: join(dir, 'ipam'), stateDir: join(dir, 'state'), subnetFile: join(dir, 'subnet.env') };
}

/** ipam: keys over the default weft-ipam section, or null for a config without one. */
function bridgeConf(w: World, extra: Record<string, unknown> = {}, ipam: Record<string, unknown> | null = {}): Record<string, unknown> {
  return {
    cniVersion: '1.1.0',
    name: NET,
    type: 'weft-bridge',
    bridge: 'wchbr0',
    isGateway: true,
    ipMasq: true,
    ...extra,
    ...(ipam && { ipam: { type: 'weft-ipam', dataDir: w.ipamDir, ranges: [[{ subnet: '10.77.0.0/24' }]], ...ipam } }),
  };
}

function weftConf(w: World, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cniVersion: '1.1.0',
    name: NET,
    type: 'weft',
    subnetFile: w.subnetFile,
    dataDir: w.stateDir,
    fastPath: false,
    ipam: { type: 'weft-ipam', dataDir: w.ipamDir },
    delegate: { bridge: 'wchbr0' },
    ...extra,
  };
}

function writeSubnetEnv(w: World): void {
  writeFileSync(w.subnetFile, 'FLANNEL_NETWORK=10.76.0.0/16\nFLANNEL_SUBNET=10.76.4.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n');
}

function call(w: World, command: CniCall['command'], over: Partial<CniCall> = {}): CniCall {
  return { command, containerId: 'wch-ctr', netns: w.ctr.path, ...over };
}

function expectError(r: PluginRun, code: number, msg?: RegExp): CniErrorJson {
  assert.equal(r.code, 1, `exit 1: ${r.stdout}${r.stderr}`);
  const err = asCniError(r);
  assert.ok(err, `stdout is the spec's error JSON: ${r.stdout}${r.stderr}`);
  assert.equal(err.code, code, `${err.msg} ${err.details ?? ''}`);
  if (msg) assert.match(`${err.msg} ${err.details ?? ''}`, msg);
  return err;
}

function ok(r: PluginRun, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
}

/** Everything a plugin could have left in a namespace, as the kernel reports it. */
interface NsView {
  links: string[];
  addrs: string[];
  routes: string[];
  nftTables: string[];
  ipForward: string;
}

async function nsView(ns: TestNetns): Promise<NsView> {
  const addrs = ipJson<Array<{ ifname: string; addr_info: Array<{ local: string; prefixlen: number }> }>>(ns.name, ['addr', 'show']);
  const routes = [4, 6].flatMap((f) => ipJson<unknown[]>(ns.name, [`-${f}`, 'route', 'show', 'table', 'all']));
  const nft = await runInNs(ns.path, ['nft', '-j', 'list', 'tables'], {});
  assert.equal(nft.code, 0, nft.stderr);
  const tables = (JSON.parse(nft.stdout) as { nftables: Array<{ table?: { family: string; name: string } }> }).nftables;
  const fwd = await runInNs(ns.path, ['cat', '/proc/sys/net/ipv4/ip_forward'], {});
  return {
    links: links(ns.name).map((l) => l.ifname).sort(),
    addrs: addrs.flatMap((l) => l.addr_info.map((a) => `${l.ifname} ${a.local}/${a.prefixlen}`)).sort(),
    routes: routes.map((r) => JSON.stringify(r)).sort(),
    nftTables: tables.flatMap((t) => (t.table ? [`${t.table.family} ${t.table.name}`] : [])).sort(),
    ipForward: fwd.stdout.trim(),
  };
}

/** A namespace as it was made: lo (down), no address, no route, no nftables table, no forwarding. */
const PRISTINE: NsView = { links: ['lo'], addrs: [], routes: [], nftTables: [], ipForward: '0' };

/** Every file below dir (relative paths; directories themselves are not listed). */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  walk('');
  return out.sort();
}

/** Nothing in either namespace, no IPAM file, no saved delegate config. */
async function assertNothingLeft(w: World): Promise<void> {
  assert.deepEqual(await nsView(w.host), PRISTINE, 'host namespace untouched');
  assert.deepEqual(await nsView(w.ctr), PRISTINE, 'container namespace untouched');
  assert.deepEqual(filesUnder(w.ipamDir), [], 'no IPAM file (allocation, lock, last_reserved)');
  assert.deepEqual(filesUnder(w.stateDir), [], 'no saved delegate config');
}

function sh(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

/** A directory under /tmp/weftch-* with something mounted on it for the duration of fn. */
async function withMount<T>(label: string, mount: (dir: string) => void, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(`/tmp/weftch-${label}-`);
  let mounted = false;
  try {
    mount(dir);
    mounted = true;
    return await fn(dir);
  } finally {
    if (mounted) sh('umount', [dir]);
    rmdirSync(dir);
  }
}

describe('item 7: a refused ADD leaves nothing behind, and DEL of it succeeds', () => {
  // Each config is refused before the kernel is touched: today weft-bridge made its bridge first.
  const refused: Array<[string, (w: World) => Record<string, unknown>, RegExp]> = [
    ['no ipam section', (w) => bridgeConf(w, {}, null), /ipam/],
    ['an unknown ipam type', (w) => bridgeConf(w, {}, { type: 'weft-nope' }), /weft-nope/],
    ['an ipam section without type', (w) => ({ ...bridgeConf(w), ipam: { dataDir: w.ipamDir, ranges: [[{ subnet: '10.77.0.0/24' }]] } }), /ipam\.type/],
    ['an invalid weft-ipam subnet', (w) => bridgeConf(w, {}, { ranges: [[{ subnet: '10.77.300.0/24' }]] }), /10\.77\.300\.0\/24/],
  ];
  for (const [what, conf, msg] of refused) {
    it(`weft-bridge with ${what}: code 7, no bridge, nothing on disk; DEL succeeds`, async () => {
      const w = world();
      const c = conf(w);
      expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD'), c), 7, msg);
      await assertNothingLeft(w);
      ok(await runPlugin(w.host.path, BRIDGE, call(w, 'DEL'), c), 'DEL after the refused ADD');
      await assertNothingLeft(w);
    });
  }

  it('weft-routed with an unknown ipam type: code 7, nothing left; DEL succeeds', async () => {
    const w = world();
    const c = { cniVersion: '1.1.0', name: NET, type: 'weft-routed', ipam: { type: 'weft-nope', dataDir: w.ipamDir } };
    expectError(await runPlugin(w.host.path, ROUTED, call(w, 'ADD'), c), 7, /weft-nope/);
    await assertNothingLeft(w);
    ok(await runPlugin(w.host.path, ROUTED, call(w, 'DEL'), c), 'DEL after the refused ADD');
    await assertNothingLeft(w);
  });

  it('weft-macvlan with an unknown ipam type: code 7, nothing left; DEL succeeds', async () => {
    const w = world();
    // This kernel has no dummy driver: one end of a veth pair is the master.
    ipIn(w.host.name, ['link', 'add', 'wchm0', 'type', 'veth', 'peer', 'name', 'wchm1']);
    const before = await nsView(w.host);
    const c = { cniVersion: '1.1.0', name: NET, type: 'weft-macvlan', master: 'wchm0', ipam: { type: 'weft-nope', dataDir: w.ipamDir } };
    expectError(await runPlugin(w.host.path, MACVLAN, call(w, 'ADD'), c), 7, /weft-nope/);
    assert.deepEqual(await nsView(w.host), before);
    assert.deepEqual(await nsView(w.ctr), PRISTINE);
    ok(await runPlugin(w.host.path, MACVLAN, call(w, 'DEL'), c), 'DEL after the refused ADD');
    assert.deepEqual(await nsView(w.host), before);
    assert.deepEqual(filesUnder(w.ipamDir), []);
  });

  // The weft meta plugin saved the delegate config before its delegate refused it; the runtime's
  // DEL then ran the same refused config and failed with code 7 on every retry.
  const refusedByWeft: Array<[string, (w: World) => Record<string, unknown>, RegExp]> = [
    ['an unknown ipam type', (w) => weftConf(w, { ipam: { type: 'weft-nope', dataDir: w.ipamDir } }), /weft-nope/],
    ['an unknown delegate type', (w) => weftConf(w, { delegate: { type: 'weft-nope-delegate' } }), /weft-nope-delegate/],
    ['a delegate key of the wrong type', (w) => weftConf(w, { delegate: { bridge: 'wchbr0', mtu: 'big' } }), /mtu/],
    ['an invalid ipam route', (w) => weftConf(w, { ipam: { type: 'weft-ipam', dataDir: w.ipamDir, routes: [{ dst: 'nowhere' }] } }), /routes/],
  ];
  for (const [what, conf, msg] of refusedByWeft) {
    it(`weft with ${what}: code 7, no saved config, nothing left; DEL succeeds`, async () => {
      const w = world();
      writeSubnetEnv(w);
      const c = conf(w);
      expectError(await runPlugin(w.host.path, WEFT, call(w, 'ADD'), c), 7, msg);
      await assertNothingLeft(w);
      ok(await runPlugin(w.host.path, WEFT, call(w, 'DEL'), c), 'DEL after the refused ADD');
      await assertNothingLeft(w);
    });
  }

  it('weft: DEL of a saved config whose ipam type does not exist (left by an older weft) succeeds and forgets it', async () => {
    const w = world();
    writeSubnetEnv(w);
    mkdirSync(w.stateDir);
    const delegate = {
      cniVersion: '1.1.0', name: NET, type: 'weft-bridge', bridge: 'wchbr0', ipMasq: true, mtu: 1400, isGateway: true, isDefaultGateway: true,
      ipam: { type: 'weft-nope', dataDir: w.ipamDir, ranges: [[{ subnet: '10.76.4.0/24' }]], routes: [{ dst: '10.76.0.0/16' }] },
    };
    writeFileSync(join(w.stateDir, 'wch-ctr-eth0'), JSON.stringify({ containerID: 'wch-ctr', ifname: 'eth0', netns: w.ctr.path, delegate }));
    ok(await runPlugin(w.host.path, WEFT, call(w, 'DEL'), weftConf(w)), 'DEL');
    await assertNothingLeft(w);
  });
});

describe('item 8: flannel-style ipam without type', () => {
  it('weft defaults ipam.type to weft-ipam: ADD works from the node subnet, DEL removes it', async () => {
    const w = world();
    writeSubnetEnv(w);
    const c = weftConf(w, { ipam: { dataDir: w.ipamDir } });
    const add = await runPlugin(w.host.path, WEFT, call(w, 'ADD'), c);
    ok(add, 'ADD');
    const res = add.json as { ips: Array<{ address: string }> };
    assert.match(res.ips[0]?.address ?? '', /^10\.76\.4\.\d+\/24$/);
    const saved = JSON.parse(readFileSync(join(w.stateDir, 'wch-ctr-eth0'), 'utf8')) as { delegate: { ipam: { type: string; dataDir: string } } };
    assert.deepEqual([saved.delegate.ipam.type, saved.delegate.ipam.dataDir], ['weft-ipam', w.ipamDir]);
    assert.deepEqual(filesUnder(w.ipamDir).filter((f) => /^wchnet\/10\./.test(f)), [`wchnet/${res.ips[0]!.address.split('/')[0]!}`]);
    assert.ok(link(w.ctr.name, 'eth0'), 'eth0 in the container');
    ok(await runPlugin(w.host.path, WEFT, call(w, 'DEL'), c), 'DEL');
    assert.deepEqual(await nsView(w.ctr), PRISTINE);
    assert.deepEqual(filesUnder(w.ipamDir).filter((f) => !f.endsWith('last_reserved_ip.0')), []);
    assert.deepEqual(filesUnder(w.stateDir), []);
  });
});

describe("item 9: the plugin's own namespace is refused as the container's", () => {
  it('weft-bridge ADD with CNI_NETNS=/proc/self/ns/net or the host namespace path: code 4, host untouched', async () => {
    const w = world();
    for (const netns of ['/proc/self/ns/net', w.host.path]) {
      expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD', { netns }), bridgeConf(w)), 4, /CNI_NETNS/);
      await assertNothingLeft(w);
    }
  });

  it('weft-routed ADD with the host namespace: code 4, no default route, no forwarding turned on', async () => {
    const w = world();
    const c = { cniVersion: '1.1.0', name: NET, type: 'weft-routed', ipam: { type: 'weft-ipam', dataDir: w.ipamDir, ranges: [[{ subnet: '10.75.0.0/24' }]] } };
    expectError(await runPlugin(w.host.path, ROUTED, call(w, 'ADD', { netns: w.host.path }), c), 4, /CNI_NETNS/);
    await assertNothingLeft(w);
  });

  it('weft ADD with CNI_NETNS=/proc/self/ns/net: code 4, no saved config', async () => {
    const w = world();
    writeSubnetEnv(w);
    expectError(await runPlugin(w.host.path, WEFT, call(w, 'ADD', { netns: '/proc/self/ns/net' }), weftConf(w)), 4, /CNI_NETNS/);
    await assertNothingLeft(w);
  });

  it("weft-bridge DEL with the host namespace: code 4, the host's own eth0 stays", async () => {
    const w = world();
    ipIn(w.host.name, ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
    const before = await nsView(w.host);
    expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'DEL', { netns: w.host.path }), bridgeConf(w)), 4, /CNI_NETNS/);
    assert.deepEqual(await nsView(w.host), before, "the host's eth0 is still there");
  });
});

describe('item 10: IPAM on a full or read-only filesystem', () => {
  it('ENOSPC: code 5 naming the path and the cause, no lock left; ADD works once there is space', async () => {
    await withMount('enospc', (dir) => sh('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'weftch', dir]), async (fs) => {
      const w = world();
      w.ipamDir = fs;
      // Fill the filesystem: files can still be created (inodes are free), not written.
      spawnSync('dd', ['if=/dev/zero', `of=${join(fs, 'fill')}`, 'bs=4k'], { encoding: 'utf8' });
      assert.equal(spawnSync('df', ['--output=avail', fs], { encoding: 'utf8' }).stdout.split('\n')[1]?.trim(), '0', 'the tmpfs is full');
      const c = bridgeConf(w);
      const err = expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD'), c), 5, /no space left on device/i);
      assert.ok(err.msg.includes(fs), `the message names the path: ${err.msg}`);
      assert.deepEqual(filesUnder(fs), ['fill'], 'no lock file, no allocation');
      assert.deepEqual(await nsView(w.host), PRISTINE, 'no bridge');
      assert.deepEqual(await nsView(w.ctr), PRISTINE);
      rmSync(join(fs, 'fill'));
      ok(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD'), c), 'ADD with space');
      ok(await runPlugin(w.host.path, BRIDGE, call(w, 'DEL'), c), 'DEL');
      assert.deepEqual(filesUnder(fs), [`${NET}/last_reserved_ip.0`]);
      assert.deepEqual(await nsView(w.ctr), PRISTINE);
    });
  });

  const readOnly = (src: string) => (dir: string): void => {
    sh('mount', ['--bind', src, dir]);
    sh('mount', ['-o', 'remount,bind,ro', dir]);
  };

  it('EROFS, network directory still to be made: code 5 naming the path and "read-only", not ENOENT', async () => {
    const src = mkdtempSync(join(root, 'ro-src-'));
    await withMount('erofs', readOnly(src), async (fs) => {
      const w = world();
      w.ipamDir = fs;
      const err = expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD'), bridgeConf(w)), 5, /read-only file system/i);
      assert.doesNotMatch(err.msg, /ENOENT|no such file/i);
      assert.ok(err.msg.includes(join(fs, NET)), `the message names the directory: ${err.msg}`);
      assert.deepEqual(filesUnder(src), []);
      assert.deepEqual(await nsView(w.host), PRISTINE, 'no bridge');
      assert.deepEqual(await nsView(w.ctr), PRISTINE);
      ok(await runPlugin(w.host.path, BRIDGE, call(w, 'DEL'), bridgeConf(w)), 'DEL of nothing');
    });
  });

  it('EROFS, network directory present: code 5 naming the lock file, nothing written', async () => {
    const src = mkdtempSync(join(root, 'ro-src-'));
    mkdirSync(join(src, NET));
    await withMount('erofs', readOnly(src), async (fs) => {
      const w = world();
      w.ipamDir = fs;
      const err = expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD'), bridgeConf(w)), 5, /read-only file system/i);
      assert.ok(err.msg.includes(join(fs, NET)), `the message names the path: ${err.msg}`);
      assert.deepEqual(filesUnder(src), []);
      assert.deepEqual(await nsView(w.host), PRISTINE, 'no bridge');
    });
  });

  it("EROFS under the weft plugin's state directory: code 5 naming it and the cause, nothing made", async () => {
    const src = mkdtempSync(join(root, 'ro-src-'));
    await withMount('erofs', readOnly(src), async (fs) => {
      const w = world();
      writeSubnetEnv(w);
      w.stateDir = join(fs, 'state');
      const err = expectError(await runPlugin(w.host.path, WEFT, call(w, 'ADD'), weftConf(w)), 5, /read-only file system/i);
      assert.ok(err.msg.includes(w.stateDir), `the message names the directory: ${err.msg}`);
      await assertNothingLeft(w);
    });
  });
});

describe('item 14: CNI_IFNAME and device names are counted in bytes', () => {
  it('a 15-character, 27-byte CNI_IFNAME is code 4 before IPAM; a 15-byte one works', async () => {
    const w = world();
    const long = `eth${'é'.repeat(12)}`;
    assert.equal(long.length, 15);
    expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD', { ifname: long }), bridgeConf(w)), 4, /too long/);
    await assertNothingLeft(w);

    const fits = `eth${'é'.repeat(6)}`;
    assert.equal(Buffer.byteLength(fits), 15);
    const c = bridgeConf(w);
    ok(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD', { ifname: fits }), c), 'ADD with a 15-byte name');
    assert.ok(link(w.ctr.name, fits), `${fits} in the container: ${links(w.ctr.name).map((l) => l.ifname).join(' ')}`);
    ok(await runPlugin(w.host.path, BRIDGE, call(w, 'DEL', { ifname: fits }), c), 'DEL');
    assert.deepEqual(await nsView(w.ctr), PRISTINE);
    assert.deepEqual(filesUnder(w.ipamDir).filter((f) => !f.endsWith('last_reserved_ip.0')), []);
  });

  it('a bridge name of 9 characters and 16 bytes is code 7 naming the key, before anything is made', async () => {
    const w = world();
    expectError(await runPlugin(w.host.path, BRIDGE, call(w, 'ADD'), bridgeConf(w, { bridge: `br${'é'.repeat(7)}` })), 7, /bridge/);
    await assertNothingLeft(w);
  });
});

describe('item 15: a subnet file that never ends', () => {
  // Through bin/cni/weft with the fast path on, so the native front and the fast-path client
  // read the file too (each looks for WEFT_CNI_SOCKET in it).
  it('subnetFile /dev/zero: code 7 naming it instead of reading without end; nothing left', async () => {
    const w = world();
    const c = { ...weftConf(w, { subnetFile: '/dev/zero' }), fastPath: true };
    expectError(await runPlugin(w.host.path, WEFT, call(w, 'ADD'), c), 7, /\/dev\/zero.*not a regular file/);
    await assertNothingLeft(w);
  });

  it('subnetFile a FIFO nobody writes: code 7, no hang', async () => {
    const w = world();
    const fifo = join(w.dir, 'subnet.fifo');
    sh('mkfifo', [fifo]);
    assert.ok(statSync(fifo).isFIFO());
    const c = { ...weftConf(w, { subnetFile: fifo }), fastPath: true };
    expectError(await runPlugin(w.host.path, WEFT, call(w, 'ADD'), c), 7, /not a regular file/);
    await assertNothingLeft(w);
  });
});

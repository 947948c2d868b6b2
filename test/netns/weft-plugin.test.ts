// bin/cni/weft on the real kernel, run inside a throwaway "host" namespace the way a runtime on
// that host would: subnet.env written by the test (no weftd), ADD/CHECK/DEL of two pods with ping
// between them, checked against ip -json, the IPAM dataDir and the saved delegate configs; the
// missing-subnet.env error (code 11, nothing left); DEL after subnet.env vanished or changed;
// and the same lifecycle through weftd's CNI fast path (startCniServer in a child process in the
// host namespace), with a failing weftd (request taken, no answer) and a latency comparison.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type TestNetns } from '../../src/netns/testing.js';
import {
  REPO,
  WEFT_CNI_DIR,
  addrs,
  allocations,
  asCniError,
  bridgePorts,
  cniRules,
  hostVeths,
  link,
  links,
  ping,
  runPlugin,
  startInNs,
  type CniCall,
  type PluginRun,
  type Server,
  cniSuite,
} from './cni-harness.js';

const WEFT = join(WEFT_CNI_DIR, 'weft');
const NETWORK = 'wmpnet';
const BRIDGE = 'wmpbr0';

const { pool, dir: scratch } = cniSuite('wmp', 'wmp');

interface WireResult {
  cniVersion: string;
  interfaces: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips: Array<{ address: string; gateway?: string; interface?: number }>;
  routes?: Array<{ dst: string; gw?: string }>;
}

/** One test's world: a host namespace, its files, and the plugin's conf pointing at them. */
interface World {
  host: TestNetns;
  dir: string;
  subnetFile: string;
  stateDir: string;
  ipamDir: string;
  socket: string;
  conf: Record<string, unknown>;
}

function makeWorld(label: string, opts: { fastPath: boolean }): World {
  const host = pool.make();
  const dir = join(scratch(), label);
  mkdirSync(dir, { recursive: true });
  const w: World = {
    host,
    dir,
    subnetFile: join(dir, 'subnet.env'),
    stateDir: join(dir, 'state'),
    ipamDir: join(dir, 'ipam'),
    socket: join(dir, 'cni.sock'),
    conf: {},
  };
  w.conf = {
    cniVersion: '1.1.0',
    name: NETWORK,
    type: 'weft',
    subnetFile: w.subnetFile,
    dataDir: w.stateDir,
    // Standalone runs must not find some other weftd on the default socket.
    ...(opts.fastPath ? {} : { fastPath: false }),
    ipam: { type: 'weft-ipam', dataDir: w.ipamDir },
    delegate: { bridge: BRIDGE, hairpinMode: true },
  };
  return w;
}

function writeSubnetEnv(w: World, third: number, extra = ''): void {
  // weftd does not masquerade here (FLANNEL_IPMASQ=false), so the bridge must: ipMasq true.
  writeFileSync(w.subnetFile, `FLANNEL_NETWORK=10.78.0.0/16\nFLANNEL_SUBNET=10.78.${third}.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n${extra}`);
}

function weft(w: World, call: CniCall, conf: Record<string, unknown> = w.conf): Promise<PluginRun> {
  return runPlugin(w.host.path, WEFT, call, conf);
}

function savedAttachments(w: World): string[] {
  return existsSync(w.stateDir) ? readdirSync(w.stateDir).sort() : [];
}

function ok(r: PluginRun, what: string): void {
  assert.equal(r.code, 0, `${what}: ${r.stdout}${r.stderr}`);
}

async function untilNoVeths(w: World): Promise<void> {
  // veth teardown after a namespace dies is asynchronous in the kernel; allow it a moment.
  for (let i = 0; i < 50 && hostVeths(w.host.name).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
}

/**
 * The lifecycle both modes must pass identically: ADD two pods from the node's subnet, the
 * kernel's view, ping, CHECK, DEL after subnet.env vanished (c1) and after it changed (c2), DEL
 * again, nothing left.
 */
async function lifecycle(w: World): Promise<void> {
  const c1 = pool.make();
  const c2 = pool.make();
  const add1 = await weft(w, { command: 'ADD', containerId: 'wmp-ctr1', netns: c1.path });
  ok(add1, 'ADD ctr1');
  const add2 = await weft(w, { command: 'ADD', containerId: 'wmp-ctr2', netns: c2.path });
  ok(add2, 'ADD ctr2');
  const r1 = add1.json as unknown as WireResult;
  const r2 = add2.json as unknown as WireResult;
  for (const [r, ns] of [[r1, c1], [r2, c2]] as const) {
    assert.equal(r.cniVersion, '1.1.0');
    assert.deepEqual(r.interfaces.map((i) => i.name).filter((n) => !n.startsWith('veth')), [BRIDGE, 'eth0']);
    assert.equal(r.interfaces[2]?.sandbox, ns.path);
    assert.equal(r.ips.length, 1);
    assert.match(r.ips[0]!.address, /^10\.78\.5\.\d+\/24$/);
    assert.equal(r.ips[0]!.gateway, '10.78.5.1');
    assert.deepEqual(r.routes, [{ dst: '10.78.0.0/16' }, { dst: '0.0.0.0/0', gw: '10.78.5.1' }], 'network route from subnet.env, default route as isDefaultGateway');
  }

  // The kernel agrees: MTU from FLANNEL_MTU, gateway on the bridge, hairpin from the delegate section.
  const eth0 = link(c1.name, 'eth0')!;
  assert.equal(eth0.mtu, 1400);
  assert.deepEqual(addrs(c1.name, 'eth0').filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`), [r1.ips[0]!.address]);
  assert.ok(addrs(w.host.name, BRIDGE).some((a) => a.local === '10.78.5.1' && a.prefixlen === 24), 'gateway address on the bridge');
  const ports = bridgePorts(w.host.name, BRIDGE);
  assert.deepEqual(ports.map((l) => l.ifname).sort(), [r1.interfaces[1]!.name, r2.interfaces[1]!.name].sort());
  const port = link(w.host.name, r1.interfaces[1]!.name)!;
  assert.equal(port.linkinfo?.info_slave_data?.hairpin, true);
  assert.equal(allocations(w.ipamDir, NETWORK).length, 2);
  assert.deepEqual(savedAttachments(w), ['wmp-ctr1-eth0', 'wmp-ctr2-eth0']);
  const saved = JSON.parse(readFileSync(join(w.stateDir, 'wmp-ctr1-eth0'), 'utf8')) as { delegate: Record<string, unknown> };
  assert.equal(saved.delegate.type, 'weft-bridge');
  assert.equal(saved.delegate.ipMasq, true, 'FLANNEL_IPMASQ=false → the bridge masquerades');
  assert.ok((await cniRules(w.host.path)).length > 0, 'masquerade rules in the host namespace');

  assert.ok(await ping(c1.path, '10.78.5.1'), 'pod → gateway');
  assert.ok(await ping(c1.path, r2.ips[0]!.address.split('/')[0]!), 'pod → pod');

  ok(await weft(w, { command: 'CHECK', containerId: 'wmp-ctr1', netns: c1.path }, { ...w.conf, prevResult: r1 }), 'CHECK ctr1');

  // weftd gone (subnet.env removed): DEL works from the saved delegate config.
  rmSync(w.subnetFile);
  const del1 = await weft(w, { command: 'DEL', containerId: 'wmp-ctr1', netns: c1.path }, { ...w.conf, prevResult: r1 });
  ok(del1, 'DEL ctr1 without subnet.env');
  assert.deepEqual(links(c1.name).map((l) => l.ifname), ['lo']);
  assert.ok(!hostVeths(w.host.name).some((l) => l.ifname === r1.interfaces[1]!.name), 'host veth removed');
  assert.deepEqual(allocations(w.ipamDir, NETWORK), [r2.ips[0]!.address.split('/')[0]!]);
  assert.deepEqual(savedAttachments(w), ['wmp-ctr2-eth0']);

  // The node now holds another subnet: CHECK of the old pod fails, DEL still undoes what ADD did.
  writeSubnetEnv(w, 9, w.conf.fastPath === false ? '' : `WEFT_CNI_SOCKET=${w.socket}\n`);
  const staleCheck = await weft(w, { command: 'CHECK', containerId: 'wmp-ctr2', netns: c2.path }, { ...w.conf, prevResult: r2 });
  assert.equal(staleCheck.code, 1);
  assert.match(asCniError(staleCheck)?.msg ?? '', /this node's subnet is now/);
  ok(await weft(w, { command: 'DEL', containerId: 'wmp-ctr2', netns: c2.path }, w.conf), 'DEL ctr2 after subnet change');
  ok(await weft(w, { command: 'DEL', containerId: 'wmp-ctr2', netns: c2.path }, w.conf), 'DEL ctr2 again');
  ok(await weft(w, { command: 'DEL', containerId: 'wmp-never' }, w.conf), 'DEL of a container never added');
  await untilNoVeths(w);
  assert.deepEqual(hostVeths(w.host.name), []);
  assert.deepEqual(links(c2.name).map((l) => l.ifname), ['lo']);
  assert.deepEqual(allocations(w.ipamDir, NETWORK), []);
  assert.deepEqual(savedAttachments(w), []);
  assert.deepEqual(await cniRules(w.host.path), [], 'masquerade rules removed');
  c1.remove();
  c2.remove();
}

/** A script that runs weftd's CNI server in its own process, logging to a file. */
function serverScript(dir: string): string {
  const file = join(dir, 'cni-server.mjs');
  const dist = (p: string) => JSON.stringify(pathToFileURL(join(REPO, 'dist/src', p)).href);
  writeFileSync(file, [
    `import { appendFileSync } from 'node:fs';`,
    `const { startCniServer } = await import(${dist('agent/cni-server.js')});`,
    `const { createLogger } = await import(${dist('log.js')});`,
    `const [socketPath, logFile] = process.argv.slice(2);`,
    `const log = createLogger({ component: 'cni-server' }, { level: 'debug', write: (l) => appendFileSync(logFile, l) });`,
    `await startCniServer({ socketPath, log });`,
    `console.log('ready');`,
  ].join('\n'));
  return file;
}

function servedCommands(logFile: string): string[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as { msg: string; cmd?: string; exitCode?: number })
    .filter((r) => r.msg === 'cni request')
    .map((r) => `${r.cmd ?? '?'}:${r.exitCode ?? '?'}`);
}

async function withServer<T>(w: World, fn: (logFile: string) => Promise<T>): Promise<T> {
  const logFile = join(w.dir, 'server.log');
  const server = await startInNs(w.host.path, ['node', serverScript(w.dir), w.socket, logFile], 'ready');
  try {
    return await fn(logFile);
  } finally {
    await server.stop();
  }
}

describe('bin/cni/weft standalone (subnet.env from the test, no weftd)', () => {
  it('ADD, kernel view, ping, CHECK, DEL after subnet.env vanished or changed, nothing left', async () => {
    const w = makeWorld('standalone', { fastPath: false });
    writeSubnetEnv(w, 5);
    await lifecycle(w);
  });

  it('subnet.env missing: ADD is code 11 and leaves nothing; STATUS is code 50', async () => {
    const w = makeWorld('missing', { fastPath: false });
    const c = pool.make();
    const add = await weft(w, { command: 'ADD', containerId: 'wmp-ctr1', netns: c.path });
    assert.equal(add.code, 1);
    const err = asCniError(add);
    assert.equal(err?.code, 11);
    assert.match(err?.msg ?? '', /weftd is not ready yet/);
    assert.match(err?.msg ?? '', /subnet\.env does not exist/);
    assert.deepEqual(links(w.host.name).map((l) => l.ifname), ['lo'], 'no bridge or veth in the host');
    assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo']);
    assert.deepEqual(savedAttachments(w), []);
    assert.deepEqual(allocations(w.ipamDir, NETWORK), []);
    const status = await weft(w, { command: 'STATUS' });
    assert.equal(asCniError(status)?.code, 50);
    writeSubnetEnv(w, 5);
    ok(await weft(w, { command: 'STATUS' }), 'STATUS once subnet.env is there');
    ok(await weft(w, { command: 'DEL', containerId: 'wmp-ctr1', netns: c.path }), 'DEL after the failed ADD');
  });

  it('GC undoes attachments the runtime no longer lists and keeps the rest', async () => {
    const w = makeWorld('gc', { fastPath: false });
    writeSubnetEnv(w, 5);
    const c1 = pool.make();
    const c2 = pool.make();
    const add1 = await weft(w, { command: 'ADD', containerId: 'wmp-ctr1', netns: c1.path });
    ok(add1, 'ADD ctr1');
    ok(await weft(w, { command: 'ADD', containerId: 'wmp-ctr2', netns: c2.path }), 'ADD ctr2');
    const tags = async () => new Set((await cniRules(w.host.path)).map((r) => r.comment)).size;
    assert.equal(await tags(), 2, 'one masquerade tag per attachment');
    const gc = await weft(w, { command: 'GC' }, { ...w.conf, 'cni.dev/valid-attachments': [{ containerID: 'wmp-ctr1', ifname: 'eth0' }] });
    ok(gc, 'GC');
    assert.deepEqual(savedAttachments(w), ['wmp-ctr1-eth0']);
    const ip1 = (add1.json as unknown as WireResult).ips[0]!.address.split('/')[0]!;
    assert.deepEqual(allocations(w.ipamDir, NETWORK), [ip1]);
    assert.deepEqual(links(c2.name).map((l) => l.ifname), ['lo'], "ctr2's interface removed from its leftover namespace");
    assert.equal(bridgePorts(w.host.name, BRIDGE).length, 1, "ctr2's host veth gone with it");
    assert.equal(await tags(), 1, "ctr2's masquerade rules removed");
    assert.deepEqual(links(c1.name).map((l) => l.ifname).sort(), ['eth0', 'lo'], 'ctr1 untouched');
    ok(await weft(w, { command: 'DEL', containerId: 'wmp-ctr1', netns: c1.path }), 'DEL ctr1');
    assert.deepEqual(allocations(w.ipamDir, NETWORK), []);
    assert.equal(await tags(), 0);
  });
});

describe('bin/cni/weft through weftd\'s CNI fast path', () => {
  it('same lifecycle, every call answered by the server', async () => {
    const w = makeWorld('fastpath', { fastPath: true });
    writeSubnetEnv(w, 5, `WEFT_CNI_SOCKET=${w.socket}\n`);
    await withServer(w, async (logFile) => {
      assert.equal(statSync(w.socket).mode & 0o777, 0o600, 'socket only for scratch()');
      await lifecycle(w);
      // Even while subnet.env was gone the plugin found the socket (cni.sock next to subnet.env).
      assert.deepEqual(servedCommands(logFile), ['ADD:0', 'ADD:0', 'CHECK:0', 'DEL:0', 'CHECK:1', 'DEL:0', 'DEL:0', 'DEL:0']);
    });
  });

  it('weftd takes a request and dies without answering: ADD is code 11, DEL is done locally', async () => {
    const w = makeWorld('lost', { fastPath: true });
    writeSubnetEnv(w, 5, `WEFT_CNI_SOCKET=${w.socket}\n`);
    const c = pool.make();
    // Reads the request, then drops the connection: what a crash mid-request looks like.
    const js = `require('net').createServer((s)=>s.on('data',()=>s.destroy())).listen(${JSON.stringify(w.socket)},()=>console.log('ready'))`;
    const broken: Server = await startInNs(w.host.path, ['node', '-e', js], 'ready');
    try {
      const add = await weft(w, { command: 'ADD', containerId: 'wmp-ctr1', netns: c.path });
      assert.equal(add.code, 1);
      assert.equal(asCniError(add)?.code, 11);
      assert.match(asCniError(add)?.msg ?? '', /weftd took the ADD request but gave no answer/);
      assert.deepEqual(links(c.name).map((l) => l.ifname), ['lo'], 'not redone locally');
      ok(await weft(w, { command: 'DEL', containerId: 'wmp-ctr1', netns: c.path }), 'DEL falls back to local');
    } finally {
      await broken.stop();
    }
    // The dead server left its socket file behind: connection refused → standalone, which works.
    assert.ok(existsSync(w.socket));
    const add = await weft(w, { command: 'ADD', containerId: 'wmp-ctr1', netns: c.path });
    ok(add, 'ADD with a stale socket');
    ok(await weft(w, { command: 'DEL', containerId: 'wmp-ctr1', netns: c.path }), 'DEL');
    assert.deepEqual(allocations(w.ipamDir, NETWORK), []);
  });

  it('latency: ADD and DEL via the fast path vs standalone (printed, not asserted)', async () => {
    const rounds = 5;
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const measure = async (w: World): Promise<{ add: number; del: number }> => {
      const add: number[] = [];
      const del: number[] = [];
      for (let i = 0; i < rounds; i++) {
        const c = pool.make();
        let t = performance.now();
        ok(await weft(w, { command: 'ADD', containerId: `wmp-lat${i}`, netns: c.path }), 'ADD');
        add.push(performance.now() - t);
        t = performance.now();
        ok(await weft(w, { command: 'DEL', containerId: `wmp-lat${i}`, netns: c.path }), 'DEL');
        del.push(performance.now() - t);
        c.remove();
      }
      return { add: median(add), del: median(del) };
    };
    const standaloneWorld = makeWorld('lat-standalone', { fastPath: false });
    writeSubnetEnv(standaloneWorld, 5);
    const standalone = await measure(standaloneWorld);
    const fastWorld = makeWorld('lat-fast', { fastPath: true });
    writeSubnetEnv(fastWorld, 5, `WEFT_CNI_SOCKET=${fastWorld.socket}\n`);
    const fast = await withServer(fastWorld, async (logFile) => {
      const m = await measure(fastWorld);
      assert.equal(servedCommands(logFile).length, rounds * 2, 'every call went through the server');
      return m;
    });
    const f = (ms: number) => `${ms.toFixed(1)} ms`;
    process.stdout.write(
      `# weft plugin latency, median of ${rounds} (includes nsenter + plugin process start):\n` +
        `#   standalone: ADD ${f(standalone.add)}  DEL ${f(standalone.del)}\n` +
        `#   fast path:  ADD ${f(fast.add)}  DEL ${f(fast.del)}\n`,
    );
  });
});

// The installed plugins driven the way a runtime drives them: weft installed into a temporary
// root, every plugin exec'd from the installed CNI bin dir (CNI_PATH = that dir only, portmap
// linked there by the installer), from a current directory outside the checkout with
// PATH=/usr/sbin:/usr/bin:/sbin:/bin and nothing else in the environment. What runtimes pass and
// the lab does not: CNI_ARGS with IgnoreUnknown=1 and K8S_POD_* keys, /run/netns/cni-<uuid> and
// /proc/<pid>/ns/net, runtimeConfig.portMappings, cached results on CHECK/DEL, DEL after the
// namespace is gone, a second network on eth1. The subnet.env is written by hand (weftd's part
// is covered by test/cluster/install-runtime.test.ts).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { cidrContains, parseCidr, parseIP } from '../../src/net/ip.js';
import { createNamedNetns, deleteNamedNetns } from '../../src/netns/index.js';
import { ipIn, NetnsPool } from '../../src/netns/testing.js';
import { hostVeths, peerEchoServer, runInNs, tcpFetch } from './cni-harness.js';
import { execIn, installInto, MiniRuntime, REPO, uninstallFrom, type Attachment, type Installed } from './install-harness.js';

interface AddrInfo { ifname: string; mtu: number; addr_info: Array<{ family: string; local: string; prefixlen: number }> }
interface CniResultJson { ips: Array<{ address: string; gateway?: string }>; interfaces: Array<{ name: string; sandbox?: string }> }

const pool = new NetnsPool('win');
const namedCni: string[] = [];
const sleepers: ChildProcess[] = [];
let root = '';
let cwd = '';
let inst: Installed;
let host: { name: string; path: string };
let client: { name: string; path: string };
let weft: MiniRuntime;

const SUBNET = parseCidr('10.77.5.0/24');

/** Addresses inside a container, read through its netns path (either form) like the kernel sees them. */
async function containerAddrs(netns: string): Promise<AddrInfo[]> {
  const r = await execIn(netns, ['ip', '-json', 'addr', 'show'], {}, cwd);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as AddrInfo[];
}

function v4(addrs: AddrInfo[], ifname: string): string | undefined {
  return addrs.find((a) => a.ifname === ifname)?.addr_info.find((i) => i.family === 'inet')?.local;
}

function k8sArgs(containerId: string, pod: string): string {
  return `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=${containerId};K8S_POD_UID=${randomUUID()}`;
}

async function natRules(): Promise<string> {
  return (await runInNs(host.path, ['iptables-save', '-t', 'nat'], {})).stdout;
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && e.name !== 'lock' && !e.name.startsWith('last_reserved_ip')).map((e) => e.name);
}

/**
 * CHECK through weft and portmap with the cached result. Debian's portmap (1.1.1) also checks an
 * IPv4-only container's rules with ip6tables and fails (containernetworking/plugins#819, fixed
 * upstream later): that failure — portmap's, after weft's CHECK passed — is accepted, and the
 * chain is CHECKed again without mappings, which must pass; the DNAT itself is verified by
 * traffic and by the nat table.
 */
async function checkChain(a: Attachment): Promise<void> {
  const full = await weft.check(a);
  if (full.ok) return;
  assert.equal(full.failedPlugin, 'portmap', `CHECK failed in ${full.failedPlugin}: ${full.last.stdout}${full.last.stderr}`);
  assert.match(full.last.stdout, /could not check ipv6 dnat/, 'only portmap\'s known IPv6 CHECK bug is tolerated');
  const { runtimeConfig: _mappings, ...withoutMappings } = a;
  const again = await weft.check(withoutMappings);
  assert.ok(again.ok, `CHECK without mappings failed in ${again.failedPlugin}: ${again.last.stdout}${again.last.stderr}`);
}

/** A process in a fresh network namespace, the way a runtime's pause/infra process holds one. */
async function sleeperInNewNetns(): Promise<{ pid: number; netns: string; stop(): Promise<void> }> {
  const child = spawn('unshare', ['--net', 'sleep', '120'], { stdio: 'ignore' });
  sleepers.push(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error('unshare did not start');
  const mine = readlinkSync('/proc/self/ns/net');
  for (let i = 0; i < 100; i++) {
    try {
      // unshare execs sleep in the new namespace: same PID, another net namespace.
      if (readlinkSync(`/proc/${pid}/ns/net`) !== mine) break;
    } catch { /* not there yet */ }
    await sleep(20);
  }
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    pid,
    netns: `/proc/${pid}/ns/net`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
      await exited;
    },
  };
}

before(() => {
  root = mkdtempSync(join(tmpdir(), 'win-root-'));
  cwd = mkdtempSync(join(tmpdir(), 'win-cwd-'));
  inst = installInto(root);
  host = pool.make();
  client = pool.make();
  // The client reaches the host over an underlay veth; hostPorts are on the host's address.
  ipIn(host.name, ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1', 'netns', client.name]);
  ipIn(host.name, ['addr', 'add', '198.18.77.1/24', 'dev', 'up0']);
  ipIn(host.name, ['link', 'set', 'up0', 'up']);
  ipIn(client.name, ['addr', 'add', '198.18.77.2/24', 'dev', 'up1']);
  ipIn(client.name, ['link', 'set', 'up1', 'up']);
  // What weftd would have written for this node (no weftd here: no socket, so standalone).
  mkdirSync(join(root, 'run/weft'), { recursive: true });
  writeFileSync(inst.subnetFile, 'FLANNEL_NETWORK=10.77.0.0/16\nFLANNEL_SUBNET=10.77.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  weft = new MiniRuntime(host.path, inst.conflist, inst.cniBinDir, join(root, 'var/lib/cni/results'), cwd);
});

after(async () => {
  for (const s of sleepers) {
    if (s.pid !== undefined && s.exitCode === null && s.signalCode === null) {
      try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  for (const n of namedCni) deleteNamedNetns(n);
  pool.cleanup();
  try {
    uninstallFrom(root);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(cwd, { recursive: true, force: true });
  }
});

describe('installed plugins driven like a runtime (outside the checkout, minimal PATH)', { timeout: 120_000 }, () => {
  it('the installed files do not refer to the checkout', () => {
    assert.deepEqual(readdirSync(inst.cniBinDir).sort(), ['portmap', 'weft', 'weft-bridge', 'weft-ipam', 'weft-macvlan', 'weft-routed']);
    const naming = filesNaming(REPO.replace(/\/$/, ''), [inst.cniBinDir, inst.libDir, join(root, 'etc')]);
    assert.equal(naming, '', `installed files naming the checkout:\n${naming}`);
  });

  it('the installed weft starts the installed native front; with no weftd it hands the call to the installed Node plugin', async () => {
    const native = join(inst.libDir, 'dist/cni/weft.native');
    const launcher = readFileSync(join(inst.cniBinDir, 'weft'), 'utf8');
    assert.ok(launcher.includes(`exec '${native}' '${process.execPath}' '${join(inst.libDir, 'dist/cni/weft.cjs')}'`), launcher);
    assert.equal(spawnSync('test', ['-x', native]).status, 0, 'weft.native installed and executable');
    // No weftd here, so no socket: the native front relays "unavailable" to Node, which then
    // logs the reason without trying the socket itself (a `socket` field means Node tried it).
    const conf = JSON.stringify({ ...weft.list.plugins[0], cniVersion: weft.list.cniVersion, name: weft.list.name });
    const del = await execIn(host.path, [join(inst.cniBinDir, 'weft')], {
      CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'wfx-nofastpath', CNI_NETNS: '', CNI_IFNAME: 'eth0', CNI_PATH: inst.cniBinDir, WEFT_LOG_LEVEL: 'debug',
    }, cwd, conf);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    const lines = del.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const fallback = lines.find((l) => l.msg === 'fast path unavailable, working standalone');
    assert.ok(fallback, del.stderr);
    assert.equal(fallback.reason, `${join(root, 'run/weft/cni.sock')}: ENOENT`);
    assert.equal(fallback.socket, undefined, 'the outcome came from the native front');
  });

  it('/run/netns/cni-<uuid>, K8S_POD_* args, hostPort through portmap: ADD, CHECK, DEL with the cached result', async () => {
    const nsName = `cni-win-${randomUUID()}`;
    const nsPath = createNamedNetns(nsName);
    namedCni.push(nsName);
    const containerId = randomBytes(32).toString('hex');
    const a: Attachment = {
      containerId, netns: nsPath, ifname: 'eth0', args: k8sArgs(containerId, 'web-0'),
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 7070, protocol: 'tcp' }] },
    };

    const add = await weft.add(a);
    assert.ok(add.ok, `ADD failed in ${add.failedPlugin}: ${add.last.stdout}${add.last.stderr}`);
    const result = add.result as unknown as CniResultJson;
    const ip = result.ips[0]!.address;
    assert.ok(cidrContains(SUBNET, parseCidr(ip).ip), `${ip} is in the node's subnet`);
    assert.ok(result.interfaces.some((i) => i.name === 'eth0' && i.sandbox === nsPath), 'result names the sandbox as given');
    const inside = await containerAddrs(nsPath);
    assert.equal(v4(inside, 'eth0'), ip.split('/')[0], 'the kernel shows the result\'s address on eth0');
    assert.equal(inside.find((l) => l.ifname === 'eth0')?.mtu, 1450, 'MTU from subnet.env');

    const server = await peerEchoServer(nsPath, '0.0.0.0', 7070);
    try {
      const seen = await tcpFetch(client.path, '198.18.77.1', 8080);
      assert.ok(seen !== undefined, 'hostPort 8080 reaches the container\'s 7070');
      parseIP(seen);
    } finally {
      await server.stop();
    }
    assert.match(await natRules(), new RegExp(`${ip.split('/')[0]!.replace(/\./g, '\\.')}:7070`), 'portmap\'s DNAT is in the host\'s nat table');

    await checkChain(a);

    assert.ok(weft.cachedResult(a), 'the runtime cached the ADD result');
    const del = await weft.del(a);
    assert.ok(del.ok, `DEL failed in ${del.failedPlugin}: ${del.last.stdout}${del.last.stderr}`);
    assert.deepEqual((await containerAddrs(nsPath)).map((l) => l.ifname), ['lo']);
    assert.deepEqual(hostVeths(host.name).map((l) => l.ifname), ['up0'], 'only the underlay veth is left on the host');
    assert.doesNotMatch(await natRules(), /:7070/, 'portmap removed its DNAT');
    assert.equal(await tcpFetch(client.path, '198.18.77.1', 8080, 1000), undefined);
    assert.deepEqual(filesUnder(join(root, 'var/lib/cni/networks')), [], 'address released');
    assert.deepEqual(filesUnder(join(root, 'var/lib/cni/weft')), [], 'weft dropped its per-attachment state');

    // A runtime that lost its cache (or retries) DELs again without a prevResult.
    const again = await weft.del(a);
    assert.ok(again.ok, `second DEL: ${again.last.stdout}${again.last.stderr}`);
  });

  it('/proc/<pid>/ns/net with a second network on eth1; DEL after the namespace is gone', async () => {
    const sandbox = await sleeperInNewNetns();
    const containerId = randomBytes(32).toString('hex');
    const args = k8sArgs(containerId, 'db-0');
    const eth0: Attachment = { containerId, netns: sandbox.netns, ifname: 'eth0', args, runtimeConfig: { portMappings: [{ hostPort: 8081, containerPort: 7071, protocol: 'tcp' }] } };
    const eth1: Attachment = { containerId, netns: sandbox.netns, ifname: 'eth1', args };
    // A second network from the same installed plugins (as Multus or podman --network a,b do).
    const secondList = join(cwd, '20-winsecond.conflist');
    writeFileSync(secondList, JSON.stringify({
      cniVersion: '1.0.0',
      name: 'winsecond',
      plugins: [{ type: 'weft-bridge', bridge: 'winsec0', isGateway: true, ipMasq: false, ipam: { type: 'weft-ipam', dataDir: join(root, 'var/lib/cni/networks'), ranges: [[{ subnet: '10.78.9.0/24' }]] } }],
    }));
    const second = new MiniRuntime(host.path, secondList, inst.cniBinDir, join(root, 'var/lib/cni/results'), cwd);

    const add0 = await weft.add(eth0);
    assert.ok(add0.ok, `ADD eth0 failed in ${add0.failedPlugin}: ${add0.last.stdout}${add0.last.stderr}`);
    const add1 = await second.add(eth1);
    assert.ok(add1.ok, `ADD eth1 failed: ${add1.last.stdout}${add1.last.stderr}`);
    const ip0 = (add0.result as unknown as CniResultJson).ips[0]!.address.split('/')[0]!;
    const ip1 = (add1.result as unknown as CniResultJson).ips[0]!.address.split('/')[0]!;
    let inside = await containerAddrs(sandbox.netns);
    assert.equal(v4(inside, 'eth0'), ip0);
    assert.equal(v4(inside, 'eth1'), ip1);
    assert.ok(cidrContains(parseCidr('10.78.9.0/24'), parseIP(ip1)));
    await checkChain(eth0);
    const check1 = await second.check(eth1);
    assert.ok(check1.ok, `CHECK eth1: ${check1.last.stdout}${check1.last.stderr}`);

    // Removing one network leaves the other alone.
    const del1 = await second.del(eth1);
    assert.ok(del1.ok, `DEL eth1: ${del1.last.stdout}${del1.last.stderr}`);
    inside = await containerAddrs(sandbox.netns);
    assert.deepEqual(inside.map((l) => l.ifname).sort(), ['eth0', 'lo']);
    assert.equal(v4(inside, 'eth0'), ip0);
    const server = await peerEchoServer(sandbox.netns, '0.0.0.0', 7071);
    try {
      assert.ok(await tcpFetch(client.path, '198.18.77.1', 8081) !== undefined, 'eth0 and its hostPort still work');
    } finally {
      await server.stop();
    }

    // The pod's infra process dies and takes the namespace (and the veth) with it; the runtime
    // still DELs, with the path it had and the cached result.
    await sandbox.stop();
    assert.ok(!existsSync(sandbox.netns), 'the namespace is gone');
    const del0 = await weft.del(eth0);
    assert.ok(del0.ok, `DEL after the netns is gone failed in ${del0.failedPlugin}: ${del0.last.stdout}${del0.last.stderr}`);
    assert.deepEqual(hostVeths(host.name).map((l) => l.ifname), ['up0']);
    assert.doesNotMatch(await natRules(), /:7071/, 'portmap removed its DNAT without the namespace');
    assert.deepEqual(filesUnder(join(root, 'var/lib/cni/networks')), [], 'both addresses released');
    assert.deepEqual(filesUnder(join(root, 'var/lib/cni/weft')), []);
    // And a DEL with no netns at all (CNI_NETNS empty, allowed for DEL) is still fine.
    const del0b = await weft.del({ ...eth0, netns: '' });
    assert.ok(del0b.ok, `DEL without CNI_NETNS: ${del0b.last.stdout}${del0b.last.stderr}`);
  });
});

/** Files under `dirs` containing `needle` (grep -rlF), code caches and source maps aside. */
function filesNaming(needle: string, dirs: string[]): string {
  const r = spawnSync('grep', ['-rlF', '--exclude=*.cache', '--exclude=*.map', needle, ...dirs], { encoding: 'utf8' });
  return r.stdout.trim();
}

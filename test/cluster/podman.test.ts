// A real runtime against installed weft: Debian's podman 4.3 (CNI backend, runc) inside a host
// namespace, with the conflist and plugins `weftctl install` wrote and weftd started as its unit
// would. A container reaches its own published port (hairpin, on by default), 20 containers
// started at once each get their own address from the node's subnet and answer, and after
// `podman rm -f` nothing is left: no veth, address allocation, portmap rule or namespace.
//
// podman runs as root here, so it is entered into the host namespace with nsenter (ip netns exec
// would remount /sys and hide the cgroup mounts), with runc (crun refuses this VM's cgroup
// layout), cgroupfs, file events, nofile/nproc limits under the sandbox's hard limits (it cannot
// raise them), its own root/runroot/tmpdir, and an image imported from busybox-static: nothing
// is pulled.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, copyFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deleteNamedNetns, netnsPath } from '../../src/netns/index.js';
import { cidrContains, formatCidr, formatIP, networkOf, parseCidr, parseIP, type Cidr } from '../../src/net/ip.js';
import { Topology } from '../../src/lab/topology.js';
import { waitFor } from '../netns/agent-harness.js';
import { execIn, installInto, MINIMAL_PATH, stopProcess, uninstallFrom, unitService, type Installed } from '../netns/install-harness.js';

const HAVE_PODMAN = existsSync('/usr/bin/podman') && existsSync('/usr/sbin/runc') && existsSync('/bin/busybox');
const id = randomBytes(3).toString('hex');
let topo: Topology | undefined;
/** The host's namespace name and its underlay address (the lab Topology's host 0). */
let HOST_NS = '';
let HOST_IP = '';
const IMAGE = `localhost/wpd-busybox:${id}`;
let work = '';
let inst: Installed | undefined;
let weftd: ChildProcess | undefined;
const weftdLog: string[] = [];
let subnet: Cidr | undefined;
let nsBefore = new Set<string>();

function podmanArgs(): string[] {
  return [
    '--root', join(work, 'podman/root'), '--runroot', join(work, 'podman/runroot'), '--tmpdir', join(work, 'podman/tmp'),
    '--storage-driver', 'vfs', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file', '--runtime', 'runc',
  ];
}

function podmanEnv(): Record<string, string> {
  return { PATH: MINIMAL_PATH, CONTAINERS_CONF: join(work, 'containers.conf'), HOME: work };
}

/** podman inside the host namespace. */
function podman(args: readonly string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return execIn(netnsPath(HOST_NS), ['podman', ...podmanArgs(), ...args], podmanEnv(), work, '', timeoutMs);
}

function hostVethCount(): number {
  const links = JSON.parse(spawnSync('ip', ['-n', HOST_NS, '-j', 'link', 'show', 'type', 'veth'], { encoding: 'utf8' }).stdout || '[]') as Array<{ ifname: string }>;
  return links.filter((l) => l.ifname !== 'eth0').length; // eth0: the host's own underlay veth
}

function allocations(): string[] {
  const dir = join(inst!.root, 'var/lib/cni/networks/weft');
  return existsSync(dir) ? readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
}

function portmapRules(): string[] {
  const r = spawnSync('ip', ['netns', 'exec', HOST_NS, 'iptables-save', '-t', 'nat'], { encoding: 'utf8' });
  return r.stdout.split('\n').filter((l) => l.startsWith('-A CNI-DN-') || l.startsWith('-A CNI-HOSTPORT-DNAT') && l.includes('CNI-DN-'));
}

/**
 * An HTTP GET as a shell line for busybox (whose wget crashes here with -T): the body after the
 * headers, or undefined when nothing answered.
 */
const HTTP_GET = (ip: string, port: number) => `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} ${port}`;
function httpBody(r: { code: number; stdout: string }): string | undefined {
  if (r.code !== 0) return undefined;
  const i = r.stdout.indexOf('\r\n\r\n');
  return i < 0 ? undefined : r.stdout.slice(i + 4).trim();
}

function newNamespaces(): string[] {
  return readdirSync('/run/netns').filter((n) => !nsBefore.has(n) && n !== HOST_NS);
}

before(async () => {
  if (!HAVE_PODMAN) return;
  work = mkdtempSync(join(tmpdir(), 'wpd-'));
  // The host: the lab's topology with one host (eth0 on an underlay switch, a default route).
  topo = Topology.create({ prefix: 'wpd', hosts: 1 });
  HOST_NS = topo.host(0).ns;
  HOST_IP = formatIP(topo.host(0).ip);
  nsBefore = new Set(readdirSync('/run/netns'));
  inst = installInto(join(work, 'root'), [
    '--store', 'file', '--store-dir', join(work, 'store'), '--iface', 'eth0', '--node-name', 'podhost',
    '--backend', 'host-gw', '--pod-network', '10.77.0.0/16', '--subnet-len', '24',
  ]);
  // weftd as systemd would start the installed unit.
  const unit = unitService(join(inst.root, 'etc/systemd/system/weftd.service'));
  const env = { ...unit.env, PATH: MINIMAL_PATH };
  for (const argv of unit.pre) assert.equal((await execIn(netnsPath(HOST_NS), argv, env, '/')).code, 0, argv.join(' '));
  weftd = spawn('/usr/bin/nsenter', [`--net=${netnsPath(HOST_NS)}`, '--', ...unit.start], { env, cwd: '/', stdio: ['ignore', 'ignore', 'pipe'] });
  weftd.stderr?.setEncoding('utf8');
  weftd.stderr?.on('data', (c: string) => { weftdLog.push(c); if (weftdLog.length > 100) weftdLog.shift(); });
  const text = await waitFor(`subnet.env (weftd: ${weftdLog.join('').slice(-800)})`, () => (existsSync(inst!.subnetFile) ? readFileSync(inst!.subnetFile, 'utf8') : undefined), 30_000, 100);
  subnet = networkOf(parseCidr(/^FLANNEL_SUBNET=(\S+)$/m.exec(text)?.[1] ?? ''));

  writeFileSync(join(work, 'containers.conf'), [
    '[containers]',
    'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]',
    '[network]',
    'network_backend = "cni"',
    `cni_plugin_dirs = ["${inst.cniBinDir}"]`,
    `network_config_dir = "${join(inst.root, 'etc/cni/net.d')}"`,
    '[engine]',
    'runtime = "runc"',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    '',
  ].join('\n'));
  const rootfs = join(work, 'rootfs');
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  for (const applet of ['sh', 'httpd', 'nc', 'printf', 'mkdir', 'sleep']) symlinkSync('busybox', join(rootfs, 'bin', applet));
  assert.equal(spawnSync('tar', ['-C', rootfs, '-cf', join(work, 'rootfs.tar'), '.']).status, 0);
  const imported = await podman(['import', join(work, 'rootfs.tar'), IMAGE]);
  assert.equal(imported.code, 0, imported.stderr);
});

after(async () => {
  if (!HAVE_PODMAN) return;
  await podman(['rm', '-af', '-t', '0']).catch(() => undefined);
  await podman(['rmi', '-af']).catch(() => undefined);
  await stopProcess(weftd);
  // podman's own mounts (its shm, the vfs layers) under our work dir, if a test died mid-way.
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n').reverse()) {
    const mnt = line.split(' ')[4];
    if (mnt && work && mnt.startsWith(work)) spawnSync('umount', ['-l', mnt]);
  }
  for (const n of newNamespaces()) if (n.startsWith('cni-')) deleteNamedNetns(n);
  topo?.destroy();
  if (inst) {
    try { uninstallFrom(inst.root); } catch { /* removed with the work dir */ }
  }
  rmSync(work, { recursive: true, force: true });
});

describe('podman 4.3 (CNI backend) with the installed weft conflist', { skip: !HAVE_PODMAN && 'podman, runc or busybox-static missing (scripts/setup.sh installs them)', timeout: 300_000 }, () => {
  it('the conflist is the installed one; a container reaches its own published port (hairpin)', async () => {
    const conf = JSON.parse(readFileSync(inst!.conflist, 'utf8')) as { cniVersion: string; plugins: Array<{ type: string }> };
    assert.deepEqual(conf.plugins.map((p) => p.type), ['weft', 'portmap']);
    const run = await podman(['run', '-d', '--name', `wpd${id}-self`, '--network', 'weft', '-p', '8080:7070', IMAGE,
      '/bin/sh', '-c', 'mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 7070 -h /www']);
    assert.equal(run.code, 0, run.stderr);
    // From inside the container to the host's address and the published port: DNAT sends it back
    // out of the bridge port it came in on.
    const got = await waitFor('the container fetching its own hostPort', async () =>
      httpBody(await podman(['exec', `wpd${id}-self`, '/bin/sh', '-c', HTTP_GET(HOST_IP, 8080)])), 20_000, 300);
    assert.equal(got, 'pong');
    const rm = await podman(['rm', '-f', '-t', '0', `wpd${id}-self`]);
    assert.equal(rm.code, 0, rm.stderr);
  });

  it('20 containers at once: each its own address in the node\'s subnet, each answering; nothing left after podman rm -f', async () => {
    const names = Array.from({ length: 20 }, (_, i) => `wpd${id}-c${i}`);
    const runs = await Promise.all(names.map((n, i) => podman(['run', '-d', '--name', n, '--network', 'weft', '-p', `${9100 + i}:7070`, IMAGE,
      '/bin/sh', '-c', `mkdir -p /www && echo ${n} > /www/index.html && exec httpd -f -p 7070 -h /www`], 120_000)));
    runs.forEach((r, i) => assert.equal(r.code, 0, `${names[i]}: ${r.stderr}`));
    const ips = await Promise.all(names.map(async (n) => {
      const r = await podman(['inspect', n, '--format', '{{.NetworkSettings.Networks.weft.IPAddress}}']);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    }));
    assert.equal(new Set(ips).size, 20, `20 distinct addresses: ${ips.join(' ')}`);
    for (const ip of ips) assert.ok(cidrContains(subnet!, parseIP(ip)), `${ip} in ${formatCidr(subnet!)}`);
    assert.equal(allocations().length, 20);
    assert.equal(hostVethCount(), 20);
    // Each answers on its published port from the host.
    for (const [i, n] of names.entries()) {
      const body = await waitFor(`${n} on hostPort ${9100 + i}`, async () =>
        httpBody(await execIn(netnsPath(HOST_NS), ['/bin/busybox', 'sh', '-c', HTTP_GET(HOST_IP, 9100 + i)], {}, work)), 20_000, 200);
      assert.equal(body, n);
    }
    const rm = await podman(['rm', '-f', '-t', '0', ...names], 120_000);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual(allocations(), [], 'no address allocation left');
    assert.equal(hostVethCount(), 0, 'no veth left on the host');
    assert.deepEqual(portmapRules(), [], 'no portmap DNAT chain left');
    assert.deepEqual(newNamespaces(), [], 'no container namespace left');
  });
});

// Named namespaces, per-namespace sysctls, TUN devices and sockets opened through /proc/PID/ns/net,
// checked with iproute2 and /proc from inside the namespaces.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, readlinkSync, statSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  createNamedNetns,
  deleteNamedNetns,
  listNamedNetns,
  netnsExists,
  netnsPath,
  readSysctl,
  runInNetns,
  writeSysctl,
  sysctlKeyPath,
} from '../../src/netns/index.js';
import { NetnsPool, ipJson } from '../../src/netns/testing.js';
import { Netlink, openTun } from '../../src/netlink/index.js';
import { CniCode, WeftError } from '../../src/errors.js';

const pool = new NetnsPool('wdp');
const ownNs = (): string => readlinkSync('/proc/thread-self/ns/net');

describe('named network namespaces', () => {
  const home = ownNs();
  after(() => {
    pool.cleanup();
    assert.equal(ownNs(), home);
  });

  it('creates, lists, checks and deletes a namespace that iproute2 also sees', () => {
    const name = `wdp-${randomBytes(4).toString('hex')}`;
    const path = createNamedNetns(name);
    try {
      assert.equal(path, netnsPath(name));
      assert.equal(netnsExists(path), true);
      assert.ok(listNamedNetns().includes(name));
      const ipList = spawnSync('ip', ['-json', 'netns', 'list'], { encoding: 'utf8' });
      assert.ok((JSON.parse(ipList.stdout) as { name: string }[]).some((n) => n.name === name), 'ip netns list shows it');
      // A fresh namespace: only a down loopback, seen from inside by ip itself.
      const inside = runInNetns(name, ['ip', '-json', 'link', 'show']);
      assert.equal(inside.status, 0, inside.stderr);
      assert.deepEqual((JSON.parse(inside.stdout) as { ifname: string }[]).map((l) => l.ifname), ['lo']);
      assert.notEqual(statSync(path).ino, statSync('/proc/self/ns/net').ino, 'a namespace of its own');
      assert.throws(() => createNamedNetns(name), (e: unknown) => e instanceof WeftError && e.code === CniCode.Namespace && /already exists/.test(e.message));
    } finally {
      assert.equal(deleteNamedNetns(name), true);
    }
    assert.equal(existsSync(path), false);
    assert.equal(netnsExists(path), false);
    assert.equal(listNamedNetns().includes(name), false);
    assert.equal(deleteNamedNetns(name), false, 'second delete reports it was gone');
  });

  it('deletes a namespace made by ip netns add', () => {
    const name = `wdp-${randomBytes(4).toString('hex')}`;
    const r = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    try {
      assert.ok(listNamedNetns().includes(name));
    } finally {
      assert.equal(deleteNamedNetns(name), true);
    }
    assert.equal(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(name), false);
  });

  it('rejects names that could escape /run/netns', () => {
    for (const bad of ['', '..', 'a/b', '-x', 'x'.repeat(64)]) {
      assert.throws(() => netnsPath(bad), /invalid network namespace name/);
    }
    assert.equal(netnsExists('/etc/hostname'), false);
    assert.equal(netnsExists('/proc/self/ns/net'), true);
  });

  it('reads and writes sysctls per namespace without touching ours', () => {
    const a = pool.make();
    const b = pool.make();
    const ours = readSysctl('net.ipv4.ip_forward');
    writeSysctl('net.ipv4.ip_forward', 1, a.path);
    writeSysctl('net.ipv4.ip_forward', 0, b.path);
    assert.equal(readSysctl('net.ipv4.ip_forward', a.path), '1');
    assert.equal(readSysctl('net.ipv4.ip_forward', b.path), '0');
    assert.equal(readSysctl('net.ipv4.ip_forward'), ours, 'the root namespace is unchanged');
    const seen = runInNetns(a.name, ['cat', '/proc/sys/net/ipv4/ip_forward']);
    assert.equal(seen.stdout.trim(), '1', 'the value is what the namespace itself sees');

    // Interface names may contain dots: the slash form addresses them.
    Netlink.with(a.path, (nl) => nl.createVeth({ name: 'wv.10', peerName: 'wv.10p' }));
    writeSysctl('net/ipv4/conf/wv.10/rp_filter', 2, a.path);
    assert.equal(runInNetns(a.name, ['cat', '/proc/sys/net/ipv4/conf/wv.10/rp_filter']).stdout.trim(), '2');
    assert.equal(sysctlKeyPath('net.ipv4.conf.all.forwarding'), 'net/ipv4/conf/all/forwarding');
    assert.throws(() => sysctlKeyPath('net/../kernel/hostname'), /invalid sysctl key/);
    assert.throws(() => readSysctl('net.ipv4.no_such_key', a.path), (e: unknown) => e instanceof WeftError && /ENOENT|no such file/i.test(e.message));
    assert.throws(() => writeSysctl('net.ipv4.ip_forward', 1, '/run/netns/wdp-missing'), (e: unknown) => e instanceof WeftError && /wdp-missing/.test(e.message));
    assert.equal(ownNs(), home);
  });

  it('opens a TUN device inside a namespace; closing the fd removes it', () => {
    const ns = pool.make();
    const tun = openTun('wtun0', { nsPath: ns.path });
    try {
      assert.equal(tun.name, 'wtun0');
      assert.ok(tun.fd > 2);
      const [l] = ipJson<{ ifname: string; linkinfo?: { info_kind?: string; info_data?: { type?: string; pi?: boolean; multi_queue?: boolean } } }[]>(ns.name, ['-d', 'link', 'show', 'wtun0']);
      assert.equal(l?.linkinfo?.info_kind, 'tun');
      assert.equal(l?.linkinfo?.info_data?.type, 'tun');
      assert.equal(l?.linkinfo?.info_data?.pi, false);
    } finally {
      closeSync(tun.fd);
    }
    assert.equal(Netlink.with(ns.path, (nl) => nl.getLink('wtun0')), undefined);

    // Multi-queue: a second open attaches another queue to the same device.
    const q1 = openTun('wmq%d', { nsPath: ns.path, multiQueue: true });
    try {
      assert.match(q1.name, /^wmq\d+$/);
      const q2 = openTun(q1.name, { nsPath: ns.path, multiQueue: true });
      closeSync(q2.fd);
      const [l] = ipJson<{ linkinfo?: { info_data?: { multi_queue?: boolean } } }[]>(ns.name, ['-d', 'link', 'show', q1.name]);
      assert.equal(l?.linkinfo?.info_data?.multi_queue, true);
    } finally {
      closeSync(q1.fd);
    }
    assert.equal(ownNs(), home);
  });

  it("opens a netlink socket through a process's /proc/PID/ns/net", async () => {
    const ns = pool.make();
    Netlink.with(ns.path, (nl) => nl.createVeth({ name: 'wpid0', peerName: 'wpid1' }));
    const child = spawn('ip', ['netns', 'exec', ns.name, 'sleep', '30'], { stdio: 'ignore' });
    try {
      // `ip netns exec` execs sleep in place, so the pid is in the namespace once exec is done.
      const nsFile = `/proc/${child.pid}/ns/net`;
      const deadline = Date.now() + 5000;
      while (readlinkSync(nsFile) === home && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const names = Netlink.with(nsFile, (nl) => nl.listLinks().map((l) => l.name).sort());
      assert.deepEqual(names, ['lo', 'wpid0', 'wpid1']);
    } finally {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  });
});

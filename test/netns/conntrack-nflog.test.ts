// Conntrack events and NFLOG against the real kernel: a client namespace and a server namespace
// joined by a veth, the server side with accounting and timestamps on and an nftables table that
// tracks new connections and logs-and-drops TCP to port 9 on NFLOG group 7. Everything observed
// lives in the server namespace; the root namespace is never touched.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NetnsPool, ipIn, ipJson, type TestNetns } from '../../src/netns/testing.js';
import { dumpConntrack, enableConntrackAccounting, watchConntrack, type ConntrackEvent, type ConntrackFlow, type ConntrackWatch } from '../../src/netlink/conntrack.js';
import { watchNflog, type NflogEvent, type NflogWatch } from '../../src/netlink/nflog.js';
import { formatIP } from '../../src/net/ip.js';
import { TCP_SYN } from '../../src/net/packet.js';
import { WeftError } from '../../src/errors.js';
import { cleanEnv, waitFor } from './agent-harness.js';

const pool = new NetnsPool('wct');
const children: ChildProcess[] = [];
const watches: { close(): void }[] = [];
let client: TestNetns;
let server: TestNetns;
let serverIfindex: number;

const CLIENT_IP = '10.77.0.1';
const SERVER_IP = '10.77.0.2';
const CLIENT_IP6 = 'fd77::1';
const SERVER_IP6 = 'fd77::2';
const PORT = 5001;
const PREFIX = 'weft-deny:test/p';

const RULESET = `table inet wct {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 9 log prefix "${PREFIX}" group 7 drop
    ct state new counter accept
  }
}
`;

/** Runs a Node script inside ns and resolves with its stdout once it exits 0. */
function nodeIn(ns: TestNetns, script: string, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(p);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => p.kill(), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`script in ${ns.name} exited ${code}: ${err}`));
    });
  });
}

/** A TCP sink in the server namespace: reads `expect` bytes, then closes first (so TIME_WAIT stays on the server side). */
function startSink(expect: number): Promise<void> {
  const script = `require('net').createServer((c) => {
    let n = 0;
    c.on('data', (d) => { n += d.length; if (n >= ${expect}) c.end(); });
    c.on('error', () => {});
  }).listen(${PORT}, '${SERVER_IP}', () => console.log('ready'));`;
  const p = spawn('ip', ['netns', 'exec', server.name, process.execPath, '-e', script], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(l))));
    p.once('exit', (code) => reject(new Error(`sink exited ${code}`)));
  });
}

const show = (f: ConntrackFlow) => ({
  src: formatIP(f.original.src), dst: formatIP(f.original.dst), proto: f.original.proto, srcPort: f.original.srcPort, dstPort: f.original.dstPort,
  replySrc: formatIP(f.reply.src), replyDst: formatIP(f.reply.dst), replySrcPort: f.reply.srcPort, replyDstPort: f.reply.dstPort,
});

function track<T extends { close(): void }>(w: T): T {
  watches.push(w);
  return w;
}

describe('conntrack events and NFLOG in a namespace', () => {
  before(() => {
    client = pool.make();
    server = pool.make();
    ipIn(client.name, ['link', 'add', 'wct0', 'type', 'veth', 'peer', 'name', 'wct1', 'netns', server.name]);
    ipIn(client.name, ['addr', 'add', `${CLIENT_IP}/24`, 'dev', 'wct0']);
    ipIn(server.name, ['addr', 'add', `${SERVER_IP}/24`, 'dev', 'wct1']);
    ipIn(client.name, ['addr', 'add', `${CLIENT_IP6}/64`, 'dev', 'wct0', 'nodad']);
    ipIn(server.name, ['addr', 'add', `${SERVER_IP6}/64`, 'dev', 'wct1', 'nodad']);
    for (const [ns, dev] of [[client, 'wct0'], [server, 'wct1']] as const) {
      ipIn(ns.name, ['link', 'set', 'lo', 'up']);
      ipIn(ns.name, ['link', 'set', dev, 'up']);
    }
    serverIfindex = ipJson<{ ifindex: number }[]>(server.name, ['link', 'show', 'dev', 'wct1'])[0]!.ifindex;
    // Counters and start/stop times, for connections that start from now on, in this namespace only.
    enableConntrackAccounting(server.path);
    const r = spawnSync('ip', ['netns', 'exec', server.name, 'nft', '-f', '-'], { input: RULESET, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  after(() => {
    for (const w of watches.splice(0)) w.close();
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill();
    pool.cleanup();
  });

  it('a TCP connection gives new, then destroy with counters matching what was sent; the dump sees it in between', async () => {
    const N = 100_000;
    const LOCAL_PORT = 40001;
    const events: ConntrackEvent[] = [];
    track(watchConntrack((e) => events.push(e), { nsPath: server.path }));
    await startSink(N);
    const connect = `const c = require('net').connect({ port: ${PORT}, host: '${SERVER_IP}', localPort: ${LOCAL_PORT} }, () => c.write(Buffer.alloc(${N}, 7)));
      c.on('end', () => c.end()); c.on('close', () => process.exit(0)); c.on('error', (e) => { console.error(e.message); process.exit(1); }); c.resume();`;
    await nodeIn(client, connect);

    const created = await waitFor('the new event', () => events.find((e) => e.type === 'new' && e.flow.original.dstPort === PORT));
    assert.ok(created.type === 'new');
    const id = created.flow.id;
    assert.notEqual(id, undefined);
    assert.deepEqual(show(created.flow), {
      src: CLIENT_IP, dst: SERVER_IP, proto: 6, srcPort: LOCAL_PORT, dstPort: PORT,
      replySrc: SERVER_IP, replyDst: CLIENT_IP, replySrcPort: PORT, replyDstPort: LOCAL_PORT,
    });
    assert.equal(created.flow.family, 4);
    assert.ok(events.some((e) => e.type === 'update' && e.flow.id === id && e.flow.tcpState === 'established'), 'state changes arrive as updates');

    // The closed connection lingers in TIME_WAIT; the dump shows it with its counters so far.
    const dumped = dumpConntrack({ nsPath: server.path, family: 4 }).find((f) => f.id === id);
    assert.ok(dumped, 'the dump holds the connection');
    assert.equal(dumped.tcpState, 'time-wait');
    assert.ok(dumped.counters && dumped.counters.original.bytes > N);
    assert.equal(dumpConntrack({ nsPath: server.path, family: 6 }).some((f) => f.id === id), false);

    // The kernel reports a destroy when its garbage collector finds the entry expired (seconds to a
    // minute later). A new SYN on the same tuple ends a TIME_WAIT entry at once, so reconnect from
    // the same port rather than wait for the collector.
    const reopen = `const c = require('net').connect({ port: ${PORT}, host: '${SERVER_IP}', localPort: ${LOCAL_PORT} });
      c.on('error', () => {}); c.on('connect', () => c.destroy()); setTimeout(() => process.exit(0), 300);`;
    await nodeIn(client, reopen);
    const destroyed = await waitFor('the destroy event', () => events.find((e) => e.type === 'destroy' && e.flow.id === id), 65_000);
    assert.ok(destroyed.type === 'destroy');
    assert.ok(events.indexOf(created) < events.indexOf(destroyed));
    assert.deepEqual(show(destroyed.flow), show(created.flow));

    // Layer-3 bytes: the payload plus one IP+TCP header (40–60 bytes with options) per packet.
    const c = destroyed.flow.counters;
    assert.ok(c, 'accounting was on');
    const headers = (bytes: number, payload: number, packets: number) => bytes - payload >= 40 * packets && bytes - payload <= 60 * packets;
    assert.ok(c.original.packets >= 3 && headers(c.original.bytes, N, c.original.packets), `original ${JSON.stringify(c.original)} for ${N} bytes sent`);
    assert.ok(c.reply.packets >= 2 && headers(c.reply.bytes, 0, c.reply.packets), `reply ${JSON.stringify(c.reply)} for nothing sent back`);

    const { startMs, stopMs } = destroyed.flow;
    assert.ok(startMs !== undefined && stopMs !== undefined, 'timestamps were on');
    assert.ok(startMs <= stopMs && Math.abs(Date.now() - startMs) < 60_000, `start ${startMs} stop ${stopMs} now ${Date.now()}`);
  });

  it('a dropped SYN to port 9 arrives on NFLOG group 7 with the rule\'s prefix and its addresses and ports, IPv4 and IPv6, within 2 s', async () => {
    const events: NflogEvent[] = [];
    track(watchNflog(7, (e) => events.push(e), { nsPath: server.path }));
    const started = Date.now();
    const probe = `for (const host of ['${SERVER_IP}', '${SERVER_IP6}']) { const c = require('net').connect(9, host); c.on('error', () => {}); }
      setTimeout(() => process.exit(0), 300);`;
    await nodeIn(client, probe);
    for (const [src, dst, family] of [[CLIENT_IP, SERVER_IP, 4], [CLIENT_IP6, SERVER_IP6, 6]] as const) {
      const e = await waitFor(`the IPv${family} SYN on NFLOG`, () => events.find((x) => x.type === 'packet' && x.packet.ip?.family === family), 2000);
      assert.ok(e.type === 'packet');
      const { packet } = e;
      const ip = packet.ip;
      assert.ok(ip);
      assert.ok(Date.now() - started < 2000);
      assert.equal(packet.prefix, PREFIX);
      assert.equal(packet.group, 7);
      assert.equal(packet.inIfindex, serverIfindex);
      assert.equal(packet.hook, 1, 'input hook');
      assert.equal(formatIP(ip.src), src);
      assert.equal(formatIP(ip.dst), dst);
      assert.equal(ip.proto, 6);
      assert.equal(ip.dstPort, 9);
      assert.ok(ip.srcPort !== undefined && ip.srcPort > 0);
      assert.equal((ip.tcpFlags ?? 0) & TCP_SYN, TCP_SYN);
      assert.ok(packet.payload.length <= 128);
    }
    assert.deepEqual(events.filter((e) => e.type !== 'packet'), []);
  });

  it('refuses a second listener for a group another socket holds, naming the group', () => {
    const first = track(watchNflog(8, () => {}, { nsPath: server.path }));
    assert.throws(() => track(watchNflog(8, () => {}, { nsPath: server.path })), (e: unknown) => e instanceof WeftError && /NFLOG group 8 .*another socket/.test(e.message));
    first.close();
    track(watchNflog(8, () => {}, { nsPath: server.path })).close(); // free again once the holder closed
  });

  it('reports an overrun when events outrun a small receive buffer, and keeps delivering afterwards', async () => {
    const events: ConntrackEvent[] = [];
    const watch: ConntrackWatch = track(watchConntrack((e) => events.push(e), { nsPath: server.path, events: ['new'], receiveBufferBytes: 4096 }));
    // spawnSync blocks our event loop, so nothing is read while 300 new UDP flows are created.
    const burst = `const s = require('dgram').createSocket('udp4'); let n = 0;
      for (let p = 20000; p < 20300; p++) s.send('x', p, '${SERVER_IP}', () => { if (++n === 300) s.close(); });`;
    const r = spawnSync('ip', ['netns', 'exec', client.name, process.execPath, '-e', burst], { env: cleanEnv(), encoding: 'utf8', timeout: 15_000 });
    assert.equal(r.status, 0, r.stderr);
    await waitFor('an overrun', () => events.some((e) => e.type === 'overrun'));
    const seen = events.filter((e) => e.type === 'new').length;
    assert.ok(seen < 300, `only part of the burst fitted (${seen})`);
    await nodeIn(client, `const s = require('dgram').createSocket('udp4'); s.send('x', 30000, '${SERVER_IP}', () => s.close());`);
    await waitFor('an event after the overrun', () => events.some((e) => e.type === 'new' && e.flow.original.dstPort === 30000));
    assert.equal(watch.closed, false);
    assert.deepEqual(events.filter((e) => e.type === 'error'), []);
  });
});

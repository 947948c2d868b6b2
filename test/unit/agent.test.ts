// weftd's core against an in-memory store, a recording backend and a clock that moves only when
// told: which reconcile passes run, over which peers, full or incremental, and what a stop or a
// lost lease does mid-way — without a kernel, etcd or a wait.
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentHost, type AgentOptions, type AgentService } from '../../src/agent/agent.js';
import { splitPeers } from '../../src/agent/peers.js';
import { weftdGet } from '../../src/cli/weftd-http.js';
import type { AgentRulesSpec } from '../../src/agent/traffic-rules.js';
import { FakeClock } from '../../src/clock.js';
import { createLogger } from '../../src/log.js';
import { type Cidr, formatCidr, parseCidr, parseIP } from '../../src/net/ip.js';
import type { Link, Netlink } from '../../src/netlink/index.js';
import { encodeLeaseAttrs } from '../../src/store/lease.js';
import { MemorySpace, MemoryStore } from '../../src/store/memory/memory-store.js';
import { type Gate, RecordingBackend } from '../fakes/recording-backend.js';

const REPAIR_MS = 1000;
const BATCH_MS = 5;

/** Lets every queued store event and promise continuation run; no timer is involved. */
const settle = () => new Promise<void>((r) => setImmediate(r));

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function world(extra: Partial<AgentOptions> = {}, pub: { ip: string; ip6?: string } = { ip: '198.18.0.1' }) {
  const dir = mkdtempSync(join(tmpdir(), 'weft-agent-unit-'));
  dirs.push(dir);
  const space = new MemorySpace();
  const store = new MemoryStore({ space });
  // Another node's client on the same store: its writes reach the agent only through the watch.
  const other = new MemoryStore({ space });
  const clock = new FakeClock();
  const backend = new RecordingBackend('host-gw');
  const rulesApplied: AgentRulesSpec[] = [];
  let netlinkClosed = 0;
  const host: AgentHost = {
    // The recording backend never touches netlink; the agent only hands it on and closes it.
    openNetlink: () => ({ close: () => { netlinkClosed++; } }) as unknown as Netlink,
    publicInterface: () => ({ link: { index: 2, name: 'eth0', mtu: 1500 } as Link, ip: parseIP(pub.ip), ...(pub.ip6 !== undefined && { ip6: parseIP(pub.ip6) }) }),
    createBackend: (config) => {
      assert.equal(config.type, backend.type);
      return backend;
    },
    trafficRules: { inPlace: async () => rulesApplied.length > 0, apply: async (spec) => { rulesApplied.push(spec); } },
    clock,
  };
  const subnetFile = join(dir, 'subnet.env');
  const agent = new Agent({
    store, subnetFile, ipMasq: true, host, repairIntervalMs: REPAIR_MS, batchDelayMs: BATCH_MS,
    log: createLogger({}, { write: () => {} }),
    ...extra,
  });
  let peerIP = 10;
  const addPeer = async (subnet: string) => {
    const value = encodeLeaseAttrs({ publicIP: parseIP(`198.18.0.${peerIP++}`), publicIPv6: undefined, backendType: 'host-gw', backendData: null });
    const r = await other.writeSubnet(parseCidr(subnet), value, 3600, { type: 'absent' });
    assert.equal(r.type, 'written', subnet);
  };
  const removePeer = async (subnet: string) => { assert.ok(await other.deleteSubnet(parseCidr(subnet)), subnet); };
  // The agent's own lease comes from the upper half, so it never takes a subnet a test adds as a peer.
  const configure = () => store.putConfig(JSON.stringify({ Network: '10.244.0.0/16', SubnetMin: '10.244.128.0', Backend: { Type: 'host-gw' } }));
  return { dir, store, other, clock, backend, agent, subnetFile, rulesApplied, addPeer, removePeer, configure, netlinkClosed: () => netlinkClosed };
}

type World = ReturnType<typeof world>;
const running: World[] = [];
afterEach(async () => { for (const w of running.splice(0)) await w.agent.stop(); });

async function started(prepare?: (w: World) => Promise<void>, extra: (dir: string) => Partial<AgentOptions> = () => ({})): Promise<World & { subnet: Cidr }> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-agent-unit-api-'));
  dirs.push(dir);
  const w = world(extra(dir));
  running.push(w);
  await w.configure();
  await prepare?.(w);
  const ctx = await w.agent.start();
  return { ...w, subnet: ctx.subnet };
}

/** A peer's arrival, and the incremental pass for it held open once it has begun. */
async function heldEventPass(w: World, subnet: string): Promise<Gate> {
  const gate = w.backend.hold('reconcile');
  await w.addPeer(subnet);
  await settle();
  w.clock.advance(0);
  await gate.entered;
  return gate;
}

/** An agent on a network config of its own (started; the caller stops it). */
async function startedOn(config: object, pub: { ip: string; ip6?: string }): Promise<World> {
  const w = world({}, pub);
  running.push(w);
  await w.store.putConfig(JSON.stringify(config));
  await w.agent.start();
  return w;
}

const calls = (w: World) => w.backend.reconciles.map((c) => `${c.full ? 'full' : 'incremental'} [${c.peers.join(' ')}]`);

describe('agent', () => {
  it('starts: backend prepared, lease written, subnet.env and rules in place, one full pass over the peers listed', async () => {
    const w = await started(async (w) => { await w.addPeer('10.244.7.0/24'); await w.addPeer('10.244.8.0/24'); });
    assert.deepEqual(w.backend.ops, ['prepare', `activate ${formatCidr(w.subnet)}`, 'reconcile full 2']);
    assert.deepEqual(calls(w), ['full [10.244.7.0/24 10.244.8.0/24]']);
    assert.ok((await w.store.getSubnet(w.subnet)) !== undefined, 'own lease in the store');
    assert.match(readFileSync(w.subnetFile, 'utf8'), new RegExp(`^FLANNEL_SUBNET=${formatCidr(w.subnet).replace('.0/', '.1/').replace(/\./g, '\\.')}$`, 'm'));
    assert.equal(w.rulesApplied.length, 1);
    assert.equal(w.agent.readiness().ready, true, JSON.stringify(w.agent.readiness().details));
    // The listing's events are in that pass: none follows it before the repair period.
    w.clock.advance(REPAIR_MS - 1);
    await settle();
    assert.equal(w.backend.reconciles.length, 1);
  });

  it('dual-stack: leases both families, activates the backend with both, writes flanneld\'s IPv6 lines and rules for both networks', async () => {
    const w = await startedOn({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd10:244::/56', Backend: { Type: 'host-gw' } }, { ip: '198.18.0.1', ip6: '2001:2::1' });
    const ctx = w.agent.context!;
    assert.equal(ctx.subnet.ip.family, 4);
    assert.deepEqual(ctx.subnets.map((c) => c.ip.family), [4, 6]);
    assert.deepEqual(ctx.clusterNetworks.map(formatCidr), ['10.244.0.0/16', 'fd10:244::/56']);
    const [v4, v6] = ctx.subnets;
    assert.deepEqual(w.backend.ops.slice(0, 2), ['prepare', `activate ${formatCidr(v4!)} ${formatCidr(v6!)}`]);
    const env = readFileSync(w.subnetFile, 'utf8');
    assert.deepEqual(env.split('\n').slice(0, 7), [
      'FLANNEL_NETWORK=10.244.0.0/16', `FLANNEL_SUBNET=${formatCidr(v4!).replace('.0/', '.1/')}`,
      'FLANNEL_IPV6_NETWORK=fd10:244::/56', `FLANNEL_IPV6_SUBNET=${formatCidr(v6!).replace('::/', '::1/')}`,
      'FLANNEL_MTU=1500', 'FLANNEL_IPV6_MTU=1500', 'FLANNEL_IPMASQ=true',
    ], 'flanneld\'s order, IPv4 pair first');
    assert.equal(w.rulesApplied[0]?.ipv6Network && formatCidr(w.rulesApplied[0].ipv6Network), 'fd10:244::/56');
    const own = (await w.store.listSubnets()).entries[0];
    assert.equal(own?.ipv6Subnet && formatCidr(own.ipv6Subnet), formatCidr(v6!));
    assert.match(own?.value ?? '', /"PublicIPv6":"2001:2::1"/);
  });

  it('IPv6-only: the lease and subnet.env carry the IPv6 subnet alone; EnableIPv6 without an IPv6 address is refused before leasing', async () => {
    const w = await startedOn({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd10:244::/56', Backend: { Type: 'host-gw' } }, { ip: '2001:2::1', ip6: '2001:2::1' });
    const env = readFileSync(w.subnetFile, 'utf8');
    assert.doesNotMatch(env, /^FLANNEL_(NETWORK|SUBNET)=/m);
    assert.match(env, /^FLANNEL_IPV6_SUBNET=fd10:244:0:[0-9a-f]+::1\/64$/m);
    assert.equal(w.agent.context?.subnet.ip.family, 6);
    const refused = world({}, { ip: '198.18.0.1' });
    running.push(refused);
    await refused.store.putConfig(JSON.stringify({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd10:244::/56', Backend: { Type: 'host-gw' } }));
    await assert.rejects(refused.agent.start(), /EnableIPv6, but eth0 has no global IPv6 address; pass --public-ipv6/);
    assert.deepEqual((await refused.store.listSubnets()).entries, [], 'nothing leased');
  });

  it('folds the lease events of one turn into one incremental pass, run when the batch timer fires', async () => {
    const w = await started();
    await w.addPeer('10.244.1.0/24');
    await w.addPeer('10.244.2.0/24');
    await w.addPeer('10.244.3.0/24');
    await settle();
    assert.equal(w.backend.reconciles.length, 1, 'nothing before the batch timer fires');
    w.clock.advance(0);
    await settle();
    assert.deepEqual(calls(w), ['full []', 'incremental [10.244.1.0/24 10.244.2.0/24 10.244.3.0/24]']);
  });

  it('watchPeers: the peers at once, then those of every successful pass; the undo stops it', async () => {
    const w = await started(async (w) => { await w.addPeer('10.244.7.0/24'); });
    assert.equal(formatCidr(w.rulesApplied[0]!.subnet!), formatCidr(w.subnet), 'the rules know the subnet (per-peer counters)');
    const ctx = w.agent.context;
    assert.ok(ctx);
    const seen: string[][] = [];
    const undo = ctx.watchPeers((peers) => seen.push(peers.map((p) => formatCidr(p.subnet)).sort()));
    assert.deepEqual(seen, [['10.244.7.0/24']]);
    await w.addPeer('10.244.8.0/24');
    await settle();
    w.clock.advance(0);
    await settle();
    assert.deepEqual(seen.at(-1), ['10.244.7.0/24', '10.244.8.0/24']);
    w.backend.report = new Error('kernel says no');
    await w.removePeer('10.244.7.0/24');
    await settle();
    w.clock.advance(BATCH_MS);
    await settle();
    assert.equal(seen.length, 2, 'a failed pass tells nobody');
    w.backend.report = { repairs: 0, removals: 0, problems: [], skipped: [] };
    undo();
    w.clock.advance(REPAIR_MS);
    await settle();
    assert.equal(seen.length, 2, 'nothing after the undo');
  });

  it('keeps batchDelayMs between the end of one event pass and the start of the next', async () => {
    const w = await started();
    await w.addPeer('10.244.1.0/24');
    await settle();
    w.clock.advance(0);
    await settle();
    await w.removePeer('10.244.1.0/24');
    await w.addPeer('10.244.4.0/24');
    await settle();
    w.clock.advance(BATCH_MS - 1);
    await settle();
    assert.equal(w.backend.reconciles.length, 2, 'the second batch waits for the gap');
    w.clock.advance(1);
    await settle();
    assert.deepEqual(calls(w), ['full []', 'incremental [10.244.1.0/24]', 'incremental [10.244.4.0/24]']);
  });

  it('runs exactly one more incremental pass for all events that arrive during a pass', async () => {
    const w = await started();
    const gate = await heldEventPass(w, '10.244.1.0/24');
    for (const s of ['10.244.2.0/24', '10.244.3.0/24']) {
      await w.addPeer(s);
      await settle();
      w.clock.advance(0);
      await settle();
    }
    assert.equal(w.backend.reconciles.length, 2, 'one pass at a time');
    gate.release();
    await settle();
    assert.deepEqual(calls(w), ['full []', 'incremental [10.244.1.0/24]', 'incremental [10.244.1.0/24 10.244.2.0/24 10.244.3.0/24]']);
    w.clock.advance(REPAIR_MS - 1);
    await settle();
    assert.equal(w.backend.reconciles.length, 3, 'and no pass after it until the repair period');
  });

  it('never folds a repair requested during an incremental pass into another incremental one', async () => {
    const w = await started();
    const gate = await heldEventPass(w, '10.244.1.0/24');
    // The repair period ends mid-pass, and more events come in behind it.
    w.clock.advance(REPAIR_MS);
    await w.addPeer('10.244.2.0/24');
    await settle();
    w.clock.advance(BATCH_MS);
    await settle();
    gate.release();
    await settle();
    // The events ride along in the full pass; no incremental pass trails it.
    assert.deepEqual(calls(w), ['full []', 'incremental [10.244.1.0/24]', 'full [10.244.1.0/24 10.244.2.0/24]']);
  });

  it('follows a full pass with an incremental one for events that arrived during it', async () => {
    const w = await started();
    const gate = w.backend.hold('reconcile');
    w.clock.advance(REPAIR_MS);
    await gate.entered;
    await w.addPeer('10.244.5.0/24');
    await settle();
    w.clock.advance(0);
    await settle();
    gate.release();
    await settle();
    assert.deepEqual(calls(w), ['full []', 'full []', 'incremental [10.244.5.0/24]']);
  });

  it('repairs every period with a full pass, and says so in /readyz when the store stops answering', async () => {
    const w = await started(async (w) => { await w.addPeer('10.244.9.0/24'); });
    w.clock.advance(REPAIR_MS);
    await settle();
    w.clock.advance(REPAIR_MS);
    await settle();
    assert.deepEqual(calls(w), ['full [10.244.9.0/24]', 'full [10.244.9.0/24]', 'full [10.244.9.0/24]']);
    w.store.getConfig = () => Promise.reject(new Error('connection refused'));
    w.clock.advance(REPAIR_MS);
    await settle();
    const r = w.agent.readiness();
    assert.equal(r.ready, false);
    assert.deepEqual((r.details as { store: unknown }).store, { status: 'unreachable', reason: 'connection refused' });
    assert.equal(w.backend.reconciles.length, 4, 'the dataplane is still kept while the store is away');
  });

  it('reports a failing reconcile in /readyz until a pass succeeds', async () => {
    const w = await started();
    w.backend.report = new Error('netlink: EPERM');
    await w.addPeer('10.244.1.0/24');
    await settle();
    w.clock.advance(0);
    await settle();
    const r = w.agent.readiness();
    assert.equal(r.ready, false);
    assert.equal((r.details as { reconcileError?: string }).reconcileError, 'netlink: EPERM');
    w.backend.report = { repairs: 1, removals: 0, problems: [], skipped: [] };
    w.clock.advance(REPAIR_MS);
    await settle();
    assert.equal(w.agent.readiness().ready, true);
  });

  it('calls onFatal when its own lease is removed from the store, and is no longer ready', async () => {
    const w = await started();
    const fatal: string[] = [];
    w.agent.onFatal((err) => fatal.push(err.message));
    assert.ok(await w.other.deleteSubnet(w.subnet));
    await settle();
    assert.equal(fatal.length, 1);
    assert.match(fatal[0]!, new RegExp(`own subnet lease lost: lease ${formatCidr(w.subnet).replace(/[./]/g, '\\$&')} was removed`));
    const r = w.agent.readiness();
    assert.equal(r.ready, false);
    assert.equal((r.details as { lease: { status: string } }).lease.status, 'fatal');
  });

  it('stopped while the backend prepares: start fails, no lease is taken, nothing is left armed', async () => {
    const w = world();
    await w.configure();
    const gate = w.backend.hold('prepare');
    const starting = w.agent.start();
    await gate.entered;
    await w.agent.stop();
    gate.release();
    await assert.rejects(starting, /weftd was stopped while starting/);
    assert.deepEqual((await w.store.listSubnets()).entries, []);
    assert.deepEqual(w.backend.ops, ['prepare', 'close keep']);
    assert.equal(w.netlinkClosed(), 1);
    assert.equal(w.clock.pending, 0);
  });

  it('stopped while a service starts: that service is closed too, and no repair timer is armed', async () => {
    const w = world();
    await w.configure();
    const closed: string[] = [];
    let entered!: () => void;
    let release!: () => void;
    const inStart = new Promise<void>((r) => { entered = r; });
    const released = new Promise<void>((r) => { release = r; });
    w.agent.addService('first', async (): Promise<AgentService> => ({ close: async () => { closed.push('first'); } }));
    w.agent.addService('slow', async (): Promise<AgentService> => {
      entered();
      await released;
      return { close: async () => { closed.push('slow'); } };
    });
    const starting = w.agent.start();
    await inStart;
    const stopping = w.agent.stop({ release: true });
    release();
    await Promise.all([assert.rejects(starting, /stopped while starting/), stopping]);
    assert.deepEqual(closed.sort(), ['first', 'slow']);
    assert.deepEqual((await w.store.listSubnets()).entries, [], 'released on stop');
    assert.equal(w.clock.pending, 0);
  });

  it('/peers: the last good pass\'s peers less what the backend skipped, sorted; kept while a pass fails', async () => {
    const w = await started(async (w) => { for (const p of ['10.244.10.0/24', '10.244.9.0/24', '10.244.2.0/24']) await w.addPeer(p); });
    assert.deepEqual(w.agent.peers().programmed, ['10.244.2.0/24', '10.244.9.0/24', '10.244.10.0/24']);
    w.backend.report = { repairs: 0, removals: 0, problems: ['far away'], skipped: [{ subnet: '10.244.9.0/24', reason: 'far away' }] };
    w.clock.advance(REPAIR_MS);
    await settle();
    const doc = w.agent.peers();
    assert.deepEqual(doc, {
      node: hostname(), subnet: formatCidr(w.subnet), backend: 'host-gw', ready: true, problems: ['far away'],
      programmed: ['10.244.2.0/24', '10.244.10.0/24'], skipped: [{ subnet: '10.244.9.0/24', reason: 'far away' }],
      lastReconcile: doc.lastReconcile,
    });
    assert.ok(!Number.isNaN(Date.parse(doc.lastReconcile ?? '')), doc.lastReconcile ?? 'null');
    assert.equal(w.agent.peers().programmed, doc.programmed, 'split once per pass, not per request');
    // A failing pass changes nothing programmed, and says why.
    w.backend.report = new Error('netlink: EPERM');
    w.clock.advance(REPAIR_MS);
    await settle();
    const failed = w.agent.peers();
    assert.equal(failed.ready, false);
    assert.equal(failed.reconcileError, 'netlink: EPERM');
    assert.equal(failed.why, 'last pass failed: netlink: EPERM');
    assert.deepEqual(failed.programmed, ['10.244.2.0/24', '10.244.10.0/24']);
    assert.equal(failed.lastReconcile, doc.lastReconcile);
  });

  it('serves /healthz, /readyz, /peers on --api-socket (mode 0600, a stale socket replaced) and removes it on stop', async () => {
    let socket = '';
    const w = await started(async (w) => {
      await w.addPeer('10.244.7.0/24');
      // A weftd killed -9 leaves its socket behind: bound, renamed into place, never removed.
      const stale = createServer();
      await new Promise<void>((r) => stale.listen(`${socket}.old`, () => r()));
      await rename(`${socket}.old`, socket);
      await new Promise<void>((r) => stale.close(() => r()));
      assert.ok(statSync(socket).isSocket());
    }, (dir) => {
      socket = join(dir, 'api.sock');
      return { apiSocket: socket, nodeName: 'h0' };
    });
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const at = `unix:${socket}`;
    assert.deepEqual(await weftdGet(at, '/healthz'), { status: 200, body: 'ok\n' });
    assert.equal((await weftdGet(at, '/readyz')).status, 200);
    const peers = await weftdGet(at, '/peers');
    assert.equal(peers.status, 200);
    assert.deepEqual(JSON.parse(peers.body), JSON.parse(JSON.stringify(w.agent.peers())));
    assert.deepEqual(JSON.parse(peers.body).programmed, ['10.244.7.0/24']);
    assert.equal(JSON.parse(peers.body).node, 'h0');
    const missing = await weftdGet(at, '/nope');
    assert.equal(missing.status, 404);
    assert.match(missing.body, /\/peers/);
    await w.agent.stop();
    assert.equal(existsSync(socket), false, 'removed on stop');
    await assert.rejects(weftdGet(at, '/healthz', 500), /cannot reach weftd at unix:.*\(its --api-socket\)/);
  });
});

describe('splitPeers', () => {
  const lease = (subnet: string) => ({ subnet: parseCidr(subnet), attrs: { publicIP: parseIP('198.18.0.9'), publicIPv6: undefined, backendType: 'vxlan', backendData: null }, expiresAt: undefined, revision: 1n });

  it('programmed = given less skipped, by address (not as text); skipped by subnet too', () => {
    const r = splitPeers(['10.244.100.0/24', '10.244.9.0/24', '10.244.10.0/24', '10.244.1.0/24'].map(lease), [
      { subnet: '10.244.10.0/24', reason: 'b' }, { subnet: '10.244.9.0/24', reason: 'a' },
    ]);
    assert.deepEqual(r.programmed, ['10.244.1.0/24', '10.244.100.0/24']);
    assert.deepEqual(r.skipped, [{ subnet: '10.244.9.0/24', reason: 'a' }, { subnet: '10.244.10.0/24', reason: 'b' }]);
  });

  it('nothing given, nothing programmed', () => {
    assert.deepEqual(splitPeers([], []), { programmed: [], skipped: [] });
  });
});

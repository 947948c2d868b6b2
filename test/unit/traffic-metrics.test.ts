// Per-pod and per-peer traffic metrics, the pure parts: link counters and nf_tables counters off
// the wire, record ↔ veth matching, the pod's view of its veth, the peer counters' nft batches,
// and the metrics' series as a scrape shows them (fake sources: no kernel).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Registry } from 'prom-client';
import { encodeAttrs, nla, type Attr } from '../../src/netlink/attrs.js';
import * as C from '../../src/netlink/constants.js';
import { decodeLink, decodeLinkStats, ifinfomsg, linkDumpRequest, type Link, type LinkStats } from '../../src/netlink/link.js';
import { addressDumpRequest } from '../../src/netlink/addr.js';
import { counterDumpRequest, decodeCounter, type NftCounter } from '../../src/netlink/nft-objects.js';
import type { NlMessage } from '../../src/netlink/message.js';
import { PodLinkFinder, hostVeths, matchPods, podCounters, podLabels, vethKey, type HostVeth } from '../../src/agent/pod-traffic.js';
import { parsePeerCounterName, peerCounterName, peerCountersPlan, peerSeries, type PeerHost } from '../../src/agent/peer-traffic.js';
import { agentRuleCount, agentRulesScript } from '../../src/agent/traffic-rules.js';
import { TrafficMetrics, type TrafficSources } from '../../src/agent/traffic-metrics.js';
import type { EndpointRecord } from '../../src/policy/endpoint-record.js';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { createLogger } from '../../src/log.js';
import type { Lease } from '../../src/store/lease.js';
import { scrape } from './metrics-text.js';

const STATS_FIELDS = 25;

/** An IFLA_STATS64 value with field i = base + i (so every field is told apart). */
function stats64(base: number, fields = STATS_FIELDS): Buffer {
  const b = Buffer.alloc(fields * 8);
  for (let i = 0; i < fields; i++) b.writeBigUInt64LE(BigInt(base + i), i * 8);
  return b;
}

function msg(type: number, payload: Buffer): NlMessage {
  return { type, flags: 0, seq: 1, pid: 0, payload };
}

function stats(over: Partial<LinkStats> = {}): LinkStats {
  const s = decodeLinkStats(stats64(0));
  assert.ok(s);
  const zero = Object.fromEntries(Object.keys(s).map((k) => [k, 0])) as unknown as LinkStats;
  return { ...zero, ...over };
}

const rec = (id: string, ips: string[], pod?: { namespace: string; pod: string }): EndpointRecord => ({
  containerID: id, ifname: 'eth0', labels: {}, ips, ...(pod && { namespace: pod.namespace, pod: pod.pod }),
});

const veth = (index: number, name: string, s: LinkStats = stats(), netnsId = index, peerIndex = 2): HostVeth => ({ index, name, peerIndex, netnsId, stats: s });

describe('link counters off the wire', () => {
  it('decodes every rtnl_link_stats64 field in kernel order, the two recent ones only when sent', () => {
    const s = decodeLinkStats(stats64(100));
    assert.ok(s);
    assert.equal(s.rxPackets, 100);
    assert.equal(s.txPackets, 101);
    assert.equal(s.rxBytes, 102);
    assert.equal(s.txBytes, 103);
    assert.equal(s.rxDropped, 106);
    assert.equal(s.txDropped, 107);
    assert.equal(s.rxNohandler, 123);
    assert.equal(s.rxOtherhostDropped, 124);
    const old = decodeLinkStats(stats64(0, 23));
    assert.ok(old);
    assert.equal(old.txCompressed, 22);
    assert.equal(old.rxNohandler, undefined);
    assert.equal(old.rxOtherhostDropped, undefined);
    assert.equal(decodeLinkStats(Buffer.alloc(8 * 22)), undefined, 'shorter than any kernel sends');
  });

  it('keeps u64 counters past 2^32', () => {
    const b = stats64(0);
    b.writeBigUInt64LE(5n * 2n ** 32n + 7n, 2 * 8);
    assert.equal(decodeLinkStats(b)?.rxBytes, 5 * 2 ** 32 + 7);
  });

  it('a link reply with IFLA_STATS64 carries stats; a dump asks for them only when told', () => {
    const attrs: Attr[] = [
      nla.str(C.IFLA_IFNAME, 'veth0a1b2c3d'), nla.u32(C.IFLA_LINK, 2), nla.u32(C.IFLA_LINK_NETNSID, 3),
      nla.bytes(C.IFLA_STATS64, stats64(10)), nla.nest(C.IFLA_LINKINFO, [nla.str(C.IFLA_INFO_KIND, 'veth')]),
    ];
    const l = decodeLink(msg(C.RTM_NEWLINK, Buffer.concat([ifinfomsg({ index: 7, flags: C.IFF_UP }), encodeAttrs(attrs)])));
    assert.equal(l.name, 'veth0a1b2c3d');
    assert.equal(l.parentIndex, 2);
    assert.equal(l.linkNetnsId, 3);
    assert.equal(l.stats?.rxBytes, 12);
    const without = decodeLink(msg(C.RTM_NEWLINK, Buffer.concat([ifinfomsg({ index: 7 }), encodeAttrs([nla.str(C.IFLA_IFNAME, 'x')])])));
    assert.equal('stats' in without, false);
    const mask = (spec: ReturnType<typeof linkDumpRequest>) => (spec.attrs?.find((a) => a.type === C.IFLA_EXT_MASK)?.value as Buffer).readUInt32LE(0);
    assert.equal(mask(linkDumpRequest()), C.RTEXT_FILTER_SKIP_STATS);
    assert.equal(mask(linkDumpRequest({ stats: true })), 0);
  });

  it('an address dump names another namespace by its id (IFA_TARGET_NETNSID, s32)', () => {
    const r = addressDumpRequest(undefined, 2, 5);
    const a = r.attrs?.find((x) => x.type === C.IFA_TARGET_NETNSID);
    assert.ok(a);
    assert.equal((a.value as Buffer).readInt32LE(0), 5);
    assert.equal(addressDumpRequest(undefined, 2).attrs, undefined);
  });
});

describe('nf_tables counters off the wire', () => {
  const be = (n: number, bytes: 4 | 8): Buffer => {
    const b = Buffer.alloc(bytes);
    if (bytes === 4) b.writeUInt32BE(n);
    else b.writeBigUInt64BE(BigInt(n));
    return b;
  };
  const obj = (type: number, name: string, bytes: number, packets: number, use: number) => msg((10 << 8) | 18, Buffer.concat([
    Buffer.from([1, 0, 0, 0]),
    encodeAttrs([
      nla.str(1, 'weft'), nla.str(2, name), nla.bytes(3, be(type, 4)),
      nla.nest(4, [nla.bytes(1, be(bytes, 8)), nla.bytes(2, be(packets, 8))]),
      nla.bytes(5, be(use, 4)),
    ]),
  ]));

  it('decodes a counter (big-endian values and use count); other objects are skipped', () => {
    assert.deepEqual(decodeCounter(obj(1, 'peer-tx-10.244.3.0-24', 6 * 2 ** 32 + 1, 42, 1)), { name: 'peer-tx-10.244.3.0-24', bytes: 6 * 2 ** 32 + 1, packets: 42, use: 1 });
    assert.equal(decodeCounter(obj(2, 'a-quota', 1, 1, 0)), undefined);
  });

  it('asks for one table\'s counters of one family', () => {
    const r = counterDumpRequest('inet', 'weft');
    assert.equal(r.type, (10 << 8) | 19);
    assert.equal(r.flags & C.NLM_F_DUMP, C.NLM_F_DUMP);
    assert.equal(r.fixed[0], 1, 'NFPROTO_INET');
    assert.equal((r.attrs?.find((a) => a.type === 3)?.value as Buffer).readUInt32BE(0), 1, 'NFT_OBJECT_COUNTER');
  });
});

describe('pods and their veths', () => {
  it('labels: Kubernetes namespace/pod, else the container id with namespace ""', () => {
    assert.deepEqual(podLabels(rec('c1', [], { namespace: 'prod', pod: 'web-0' })), { namespace: 'prod', pod: 'web-0', interface: 'eth0' });
    assert.deepEqual(podLabels(rec('c1', [])), { namespace: '', pod: 'c1', interface: 'eth0' });
  });

  it('host veths are veths whose peer lives in another namespace', () => {
    const base = { flags: 0, up: true, lowerUp: true, promisc: false, mtu: 1500, operState: 'up', hwType: 1 } as const;
    const links: Link[] = [
      { ...base, index: 1, name: 'lo' },
      { ...base, index: 4, name: 'cni0', kind: 'bridge' },
      { ...base, index: 5, name: 'veth1', kind: 'veth', parentIndex: 2, linkNetnsId: 0, stats: stats() },
      { ...base, index: 6, name: 'vpair', kind: 'veth', parentIndex: 7 },
    ];
    assert.deepEqual(hostVeths(links).map((v) => [v.name, v.peerIndex, v.netnsId]), [['veth1', 2, 0]]);
  });

  it('matches records to veths by the peer\'s addresses; a record with none stays unmatched', () => {
    const a = veth(5, 'vetha');
    const b = veth(6, 'vethb');
    const ips = new Map([[vethKey(a), ['10.244.1.2', 'fe80::1']], [vethKey(b), ['10.244.1.3']]]);
    const r = matchPods([rec('ca', ['10.244.1.2'], { namespace: 'n', pod: 'a' }), rec('cb', ['10.244.1.3']), rec('cc', ['10.244.1.4'])], [a, b], ips);
    assert.deepEqual(r.links.map((l) => [l.labels.pod, l.veth.name]), [['a', 'vetha'], ['cb', 'vethb']]);
    assert.deepEqual(r.unmatched.map((x) => x.containerID), ['cc']);
  });

  it('two veths claiming one address: the newer (higher index) wins; duplicate labels keep the first record', () => {
    const old = veth(5, 'vold');
    const young = veth(9, 'vnew');
    const ips = new Map([[vethKey(old), ['10.244.1.2']], [vethKey(young), ['10.244.1.2']]]);
    assert.equal(matchPods([rec('c', ['10.244.1.2'])], [young, old], ips).links[0]?.veth.name, 'vnew');
    const other = veth(6, 'vother');
    ips.set(vethKey(other), ['10.244.1.3']);
    const dup = matchPods([rec('c1', ['10.244.1.2'], { namespace: 'n', pod: 'p' }), rec('c2', ['10.244.1.3'], { namespace: 'n', pod: 'p' })], [old, other], ips);
    assert.deepEqual(dup.links.map((l) => l.record.containerID), ['c1']);
  });

  it('the pod sees its veth the other way round; drops take the pod\'s direction', () => {
    const c = podCounters(stats({ rxBytes: 100, txBytes: 200, rxPackets: 1, txPackets: 2, rxDropped: 3, txDropped: 4, rxErrors: 5, txErrors: 6, rxNohandler: 7, rxOtherhostDropped: 8 }));
    assert.deepEqual([c.rxBytes, c.txBytes, c.rxPackets, c.txPackets], [200, 100, 2, 1]);
    assert.deepEqual(c.drops.map((d) => `${d.direction} ${d.reason} ${d.value}`), [
      'rx dropped 4', 'rx errors 6', 'tx dropped 3', 'tx errors 5', 'tx nohandler 7', 'tx otherhost_dropped 8',
    ]);
    const { rxNohandler: _n, rxOtherhostDropped: _o, ...old } = stats();
    assert.equal(podCounters(old).drops.length, 4, 'a kernel without the recent counters has no series for them');
  });

  it('the finder asks about each veth once, again only for address-less ones when asked to, and forgets gone veths', () => {
    const asked: string[] = [];
    let ready = false;
    const finder = new PodLinkFinder((v) => {
      asked.push(v.name);
      if (v.name === 'vb' && !ready) return [];
      if (v.name === 'vgone') throw new Error('namespace gone');
      return [`10.0.0.${v.index}`];
    });
    const a = veth(1, 'va');
    const b = veth(2, 'vb');
    finder.peerIPs([a, b], false);
    finder.peerIPs([a, b], false);
    assert.deepEqual(asked, ['va', 'vb']);
    ready = true;
    const ips = finder.peerIPs([a, b], true);
    assert.deepEqual(asked, ['va', 'vb', 'vb']);
    assert.deepEqual(ips.get(vethKey(b)), ['10.0.0.2']);
    finder.peerIPs([a, veth(3, 'vgone')], false);
    assert.equal(finder.size, 2, 'vb forgotten, vgone remembered as address-less');
    assert.deepEqual(finder.peerIPs([a, veth(3, 'vgone')], false).get(vethKey(veth(3, 'vgone'))), []);
  });
});

describe('peer counters', () => {
  const peer = (subnet: string, ip: string): PeerHost => ({ subnet: parseCidr(subnet), publicIP: parseIP(ip) });
  const counter = (name: string, use = 1, bytes = 0): NftCounter => ({ name, bytes, packets: bytes > 0 ? 1 : 0, use });

  it('names carry direction and subnet, and parse back; anything else is not ours', () => {
    const n = peerCounterName('tx', parseCidr('10.244.3.0/24'));
    assert.equal(n, 'peer-tx-10.244.3.0-24');
    const p = parsePeerCounterName(n);
    assert.equal(p?.dir, 'tx');
    assert.equal(p && `${p.subnet.prefix}`, '24');
    assert.equal(parsePeerCounterName('policy-allow-x'), undefined);
    assert.equal(parsePeerCounterName('peer-tx-10.244.3.0-99'), undefined);
  });

  it('plans counters and elements for new peers, removes gone ones (element first), restores lost elements', () => {
    assert.equal(peerCountersPlan('weft', [], []), undefined);
    const add = peerCountersPlan('weft', [peer('10.244.3.0/24', '198.18.0.3')], []);
    assert.equal(add, [
      'add counter inet weft peer-tx-10.244.3.0-24',
      'add element inet weft peer_tx { 10.244.3.0/24 : "peer-tx-10.244.3.0-24" }',
      'add counter inet weft peer-rx-10.244.3.0-24',
      'add element inet weft peer_rx { 10.244.3.0/24 : "peer-rx-10.244.3.0-24" }',
    ].join('\n') + '\n');
    const inPlace = [counter('peer-tx-10.244.3.0-24'), counter('peer-rx-10.244.3.0-24'), counter('someone-elses')];
    assert.equal(peerCountersPlan('weft', [peer('10.244.3.0/24', '198.18.0.3')], inPlace), undefined);
    const gone = peerCountersPlan('weft', [], [counter('peer-tx-10.244.3.0-24'), counter('peer-rx-10.244.3.0-24', 0)]);
    assert.equal(gone, [
      'delete element inet weft peer_tx { 10.244.3.0/24 }',
      'delete counter inet weft peer-tx-10.244.3.0-24',
      'delete counter inet weft peer-rx-10.244.3.0-24',
    ].join('\n') + '\n');
    const lost = peerCountersPlan('weft', [peer('10.244.3.0/24', '198.18.0.3')], [counter('peer-tx-10.244.3.0-24', 0), counter('peer-rx-10.244.3.0-24')]);
    assert.equal(lost, 'add element inet weft peer_tx { 10.244.3.0/24 : "peer-tx-10.244.3.0-24" }\n');
  });

  it('a subnet moving to another peer deletes before it adds', () => {
    const plan = peerCountersPlan('weft', [peer('10.244.4.0/24', '198.18.0.4')], [counter('peer-tx-10.244.4.0-23'), counter('peer-rx-10.244.4.0-23')]);
    const lines = plan?.trim().split('\n') ?? [];
    const lastDelete = lines.map((l) => l.startsWith('delete')).lastIndexOf(true);
    assert.ok(lastDelete >= 0 && lines.findIndex((l) => l.startsWith('add')) > lastDelete, plan);
  });

  it('series for current peers with both counters, labelled by lease', () => {
    const s = peerSeries([peer('10.244.3.0/24', '198.18.0.3'), peer('10.244.5.0/24', '198.18.0.5')], [
      counter('peer-tx-10.244.3.0-24', 1, 1000), counter('peer-rx-10.244.3.0-24', 1, 10), counter('peer-tx-10.244.9.0-24', 1, 5),
    ]);
    assert.deepEqual(s, [{ labels: { peer_subnet: '10.244.3.0/24', peer_ip: '198.18.0.3' }, tx: { bytes: 1000, packets: 1 }, rx: { bytes: 10, packets: 1 } }]);
  });

  it('the agent table counts per peer once it knows its subnet: two rules, one lookup each at most', () => {
    const spec = { network: parseCidr('10.244.0.0/16'), ipMasq: true };
    assert.doesNotMatch(agentRulesScript(spec), /peer_tx/);
    const script = agentRulesScript({ ...spec, subnet: parseCidr('10.244.7.0/24') });
    assert.match(script, /add chain inet weft peers \{ type filter hook forward priority filter \+ 10; policy accept; \}/);
    assert.match(script, /ip daddr != 10\.244\.7\.0\/24 ip daddr 10\.244\.0\.0\/16 counter name ip daddr map @peer_tx/);
    assert.match(script, /ip saddr != 10\.244\.7\.0\/24 ip saddr 10\.244\.0\.0\/16 counter name ip saddr map @peer_rx/);
    assert.equal(agentRuleCount({ ...spec, subnet: parseCidr('10.244.7.0/24') }), agentRuleCount(spec) + 2);
  });
});

// ---- the metrics, through a registry as a scrape sees them

interface Fake extends TrafficSources {
  linksCalls: number;
  scripts: string[];
  linkList: Link[];
  recordList: EndpointRecord[];
  counterList: NftCounter[];
  ips: Map<number, string[]>;
  fail: boolean;
}

function fakeSources(): Fake {
  const f: Fake = {
    linksCalls: 0, scripts: [], linkList: [], recordList: [], counterList: [], ips: new Map(), fail: false,
    links() { f.linksCalls++; if (f.fail) throw new Error('netlink gone'); return f.linkList; },
    peerAddresses: (v) => f.ips.get(v.index) ?? [],
    counters: () => f.counterList,
    async applyNft(script) { f.scripts.push(script); },
    records: async () => f.recordList,
    close() {},
  };
  return f;
}

const vethLink = (index: number, s: Partial<LinkStats>): Link => ({
  index, name: `veth${index}`, flags: 0, up: true, lowerUp: true, promisc: false, mtu: 1450, operState: 'up', hwType: 1,
  kind: 'veth', parentIndex: 2, linkNetnsId: index, stats: stats(s),
});


function lease(subnet: string, ip: string): Lease {
  return { subnet: parseCidr(subnet), attrs: { publicIP: parseIP(ip), publicIPv6: undefined, backendType: 'vxlan', backendData: null }, expiresAt: undefined, revision: 1n };
}

describe('traffic metrics on /metrics', () => {
  const quiet = createLogger({}, { write: () => {} });
  const world = () => {
    const f = fakeSources();
    const registry = new Registry();
    let t = 0;
    const errors = new Counter({ name: 'weft_errors_total', help: 'e', labelNames: ['kind'] as const, registers: [registry] });
    const m = new TrafficMetrics({ sources: f, registry, log: quiet, errors, now: () => t, repairIntervalMs: 3_600_000 });
    return { f, registry, m, advance: (ms: number) => { t += ms; } };
  };

  it('one series per pod interface, from the pod\'s side; non-Kubernetes pods by container id', async () => {
    const { f, registry, m } = world();
    f.linkList = [vethLink(5, { rxBytes: 1000, txBytes: 5000, rxPackets: 10, txPackets: 50, txDropped: 2 }), vethLink(6, { rxBytes: 7 })];
    f.ips = new Map([[5, ['10.244.1.2']], [6, ['10.244.1.3']]]);
    f.recordList = [rec('c1', ['10.244.1.2'], { namespace: 'prod', pod: 'web-0' }), rec('abc123', ['10.244.1.3'])];
    const text = await registry.metrics();
    assert.deepEqual([...scrape(text, 'weft_pod_tx_bytes_total')], [
      ['{namespace="prod",pod="web-0",interface="eth0"}', 1000],
      ['{namespace="",pod="abc123",interface="eth0"}', 7],
    ]);
    assert.equal(scrape(text, 'weft_pod_rx_bytes_total').get('{namespace="prod",pod="web-0",interface="eth0"}'), 5000);
    assert.equal(scrape(text, 'weft_pod_rx_packets_total').get('{namespace="prod",pod="web-0",interface="eth0"}'), 50);
    assert.equal(scrape(text, 'weft_pod_drops_total').get('{namespace="prod",pod="web-0",interface="eth0",direction="rx",reason="dropped"}'), 2);
    assert.equal(scrape(text, 'weft_pod_drops_total').size, 12);
    await m.close();
  });

  it('a snapshot answers scrapes for a second: one kernel read per second however many scrapes', async () => {
    const { f, registry, m, advance } = world();
    await Promise.all([registry.metrics(), registry.metrics(), registry.metrics()]);
    assert.equal(f.linksCalls, 1, 'nine metrics × three concurrent scrapes, one read');
    advance(999);
    await registry.metrics();
    assert.equal(f.linksCalls, 1);
    advance(2);
    await registry.metrics();
    assert.equal(f.linksCalls, 2);
    await m.close();
  });

  it('a pod\'s series go when its record goes, and when its veth goes', async () => {
    const { f, registry, m, advance } = world();
    f.linkList = [vethLink(5, { rxBytes: 1 }), vethLink(6, { rxBytes: 2 })];
    f.ips = new Map([[5, ['10.244.1.2']], [6, ['10.244.1.3']]]);
    f.recordList = [rec('a', ['10.244.1.2']), rec('b', ['10.244.1.3'])];
    assert.equal(scrape(await registry.metrics(), 'weft_pod_tx_bytes_total').size, 2);
    f.recordList = [rec('b', ['10.244.1.3'])];
    advance(1000);
    let text = await registry.metrics();
    assert.deepEqual([...scrape(text, 'weft_pod_tx_bytes_total').keys()], ['{namespace="",pod="b",interface="eth0"}']);
    assert.equal([...scrape(text, 'weft_pod_drops_total').keys()].some((k) => k.includes('pod="a"')), false);
    f.linkList = [];
    advance(1000);
    text = await registry.metrics();
    assert.equal(scrape(text, 'weft_pod_tx_bytes_total').size, 0);
    assert.equal(scrape(text, 'weft_pod_drops_total').size, 0);
    await m.close();
  });

  it('a pod whose veth had no address yet is matched once it has one', async () => {
    const { f, registry, m, advance } = world();
    f.linkList = [vethLink(5, { rxBytes: 1 })];
    f.recordList = [rec('a', ['10.244.1.2'])];
    assert.equal(scrape(await registry.metrics(), 'weft_pod_tx_bytes_total').size, 0);
    f.ips.set(5, ['10.244.1.2']);
    advance(1000);
    assert.equal(scrape(await registry.metrics(), 'weft_pod_tx_bytes_total').size, 1);
    await m.close();
  });

  it('peers: counters follow the leases, series carry subnet and public IP and go with the lease', async () => {
    const { f, registry, m, advance } = world();
    await m.start();
    m.setPeers([lease('10.244.3.0/24', '198.18.0.3')]);
    await new Promise((r) => setImmediate(r));
    assert.match(f.scripts.join(''), /add counter inet weft peer-tx-10\.244\.3\.0-24/);
    f.counterList = [{ name: 'peer-tx-10.244.3.0-24', bytes: 4096, packets: 3, use: 1 }, { name: 'peer-rx-10.244.3.0-24', bytes: 128, packets: 2, use: 1 }];
    advance(1000);
    let text = await registry.metrics();
    assert.equal(scrape(text, 'weft_peer_tx_bytes_total').get('{peer_subnet="10.244.3.0/24",peer_ip="198.18.0.3"}'), 4096);
    assert.equal(scrape(text, 'weft_peer_rx_packets_total').get('{peer_subnet="10.244.3.0/24",peer_ip="198.18.0.3"}'), 2);
    const before = f.scripts.length;
    m.setPeers([]);
    await new Promise((r) => setImmediate(r));
    assert.match(f.scripts.slice(before).join(''), /delete counter inet weft peer-tx-10\.244\.3\.0-24/);
    advance(1000);
    text = await registry.metrics();
    assert.equal(scrape(text, 'weft_peer_tx_bytes_total').size, 0, 'no series for a peer without a lease, even while its counter is still there');
    await m.close();
  });

  it('a snapshot that finds a peer\'s element gone asks for a repair', async () => {
    const { f, registry, m } = world();
    await m.start();
    m.setPeers([lease('10.244.3.0/24', '198.18.0.3')]);
    f.counterList = [{ name: 'peer-tx-10.244.3.0-24', bytes: 0, packets: 0, use: 0 }, { name: 'peer-rx-10.244.3.0-24', bytes: 0, packets: 0, use: 1 }];
    await new Promise((r) => setImmediate(r));
    const before = f.scripts.length;
    await registry.metrics();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(f.scripts.slice(before), ['add element inet weft peer_tx { 10.244.3.0/24 : "peer-tx-10.244.3.0-24" }\n']);
    await m.close();
  });

  it('a failed read keeps the last values and counts an error; close takes the metrics off the registry', async () => {
    const { f, registry, m, advance } = world();
    f.linkList = [vethLink(5, { rxBytes: 1 })];
    f.ips.set(5, ['10.244.1.2']);
    f.recordList = [rec('a', ['10.244.1.2'])];
    await registry.metrics();
    f.fail = true;
    advance(1000);
    const text = await registry.metrics();
    assert.equal(scrape(text, 'weft_pod_tx_bytes_total').size, 1);
    // weft_errors_total was serialised before the read failed: the next scrape shows it.
    assert.equal(scrape(await registry.metrics(), 'weft_errors_total').get('{kind="traffic"}'), 1);
    await m.close();
    assert.doesNotMatch(await registry.metrics(), /weft_pod_|weft_peer_/);
  });
});

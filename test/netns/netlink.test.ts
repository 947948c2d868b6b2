// The Netlink API against the real kernel, each check in throwaway namespaces and compared with
// iproute2's own view (`ip -json`, `bridge -json`).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { Netlink, NetlinkError, isNetlinkError, type Link } from '../../src/netlink/index.js';
import { NetnsPool, ipJson, bridgeJson, ipIn, type TestNetns } from '../../src/netns/testing.js';
import { CniCode, WeftError } from '../../src/errors.js';
import { formatCidr, formatIP, parseCidr, parseIP, ipFromValue } from '../../src/net/ip.js';

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  flags: string[];
  address?: string;
  master?: string;
  operstate?: string;
  link_index?: number;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown>; info_slave_kind?: string; info_slave_data?: Record<string, unknown> };
}
interface IpAddr {
  ifname: string;
  addr_info: { family: string; local: string; prefixlen: number; broadcast?: string; nodad?: boolean; scope: string }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  flags: string[];
  table?: string;
  metric?: number;
  prefsrc?: string;
  metrics?: { mtu?: number }[];
  type?: string;
}
interface IpNeigh {
  dst: string;
  dev: string;
  lladdr?: string;
  state: string[];
}
interface BridgeFdb {
  mac: string;
  ifname: string;
  dst?: string;
  flags: string[];
  state?: string;
  master?: string;
}

const pool = new NetnsPool('wdp');
const nsOf = new Map<Netlink, TestNetns>();
const handles: Netlink[] = [];

function freshNs(): { ns: TestNetns; nl: Netlink } {
  const ns = pool.make();
  const nl = Netlink.open(ns.path);
  handles.push(nl);
  nsOf.set(nl, ns);
  return { ns, nl };
}

function linkJson(ns: TestNetns, name: string, details = false): IpLink {
  const [l] = ipJson<IpLink[]>(ns.name, details ? ['-d', 'link', 'show', 'dev', name] : ['link', 'show', 'dev', name]);
  assert.ok(l, `ip sees ${name} in ${ns.name}`);
  return l;
}

// This kernel has no dummy driver, so a veth pair (peer left down) stands in for a plain device.
function device(nl: Netlink, name: string, opts: { up?: boolean; mtu?: number; nsPath?: string } = {}): Link {
  return nl.createVeth({ name, peerName: `${name}p`, ...opts });
}

function ownNetns(): string {
  return readlinkSync('/proc/thread-self/ns/net');
}

describe('netlink in throwaway namespaces', () => {
  const startNs = ownNetns();

  after(() => {
    for (const h of handles) h.close();
    pool.cleanup();
    // Every operation switched the thread into a namespace and back: we must be home.
    assert.equal(ownNetns(), startNs);
  });

  it('lists the loopback of a fresh namespace like ip does', () => {
    const { ns, nl } = freshNs();
    const links = nl.listLinks();
    const ip = ipJson<IpLink[]>(ns.name, ['link', 'show']);
    assert.deepEqual(links.map((l) => [l.index, l.name, l.mtu]), ip.map((l) => [l.ifindex, l.ifname, l.mtu]));
    assert.equal(nl.getLink('lo')?.hwType, 772);
    assert.equal(nl.getLink('nope'), undefined);
    assert.equal(nl.getLink(999), undefined);
  });

  it('creates a veth whose peer is born in another namespace', () => {
    const { ns: a, nl } = freshNs();
    const { ns: b, nl: nlB } = freshNs();
    const host = nl.createVeth({ name: 'wveth0', peerName: 'eth0', peerNsPath: b.path, mtu: 1450, mac: '02:00:00:00:0a:01', peerMac: '02:00:00:00:0b:01' });
    const ipHost = linkJson(a, 'wveth0', true);
    const ipPeer = linkJson(b, 'eth0', true);
    assert.equal(ipHost.linkinfo?.info_kind, 'veth');
    assert.equal(ipPeer.linkinfo?.info_kind, 'veth');
    assert.equal(host.kind, 'veth');
    assert.equal(host.index, ipHost.ifindex);
    assert.equal(host.mtu, 1450);
    assert.equal(ipPeer.mtu, 1450);
    assert.equal(host.mac, '02:00:00:00:0a:01');
    assert.equal(ipPeer.address, '02:00:00:00:0b:01');
    assert.equal(host.parentIndex, ipPeer.ifindex, 'IFLA_LINK names the peer in its namespace');
    assert.ok(host.linkNetnsId !== undefined, 'the peer lives in another namespace');
    assert.equal(nlB.getLink('eth0')?.parentIndex, host.index);
    assert.equal(ipJson<IpLink[]>(a.name, ['link', 'show']).some((l) => l.ifname === 'eth0'), false, 'peer not in the host namespace');

    // Both ends up: the peer needs a second request in its own namespace.
    nl.createVeth({ name: 'wveth9', peerName: 'eth9', peerNsPath: b.path, up: true, peerUp: true });
    assert.ok(linkJson(b, 'eth9').flags.includes('UP'));
    // Carrier (IFF_LOWER_UP) is set synchronously; operState follows later via linkwatch.
    assert.equal(nl.requireLink('wveth9').lowerUp, true, 'carrier once both ends are up');

    assert.equal(nl.deleteLink('wveth0'), true);
    assert.equal(nl.deleteLink('wveth0'), false);
    assert.equal(nlB.getLink('eth0'), undefined, 'deleting one end removes the peer');
  });

  it('enslaves a veth to a bridge with hairpin, promisc, and releases it', () => {
    const { ns, nl } = freshNs();
    const br = nl.createBridge({ name: 'wbr0', mtu: 1400 });
    assert.equal(br.kind, 'bridge');
    assert.deepEqual(br.info, { kind: 'bridge', vlanFiltering: false });
    const v = nl.createVeth({ name: 'wv0', peerName: 'wv1' });
    nl.setLink(v, { master: br, up: true });
    nl.setBridgePort(v, { hairpin: true });
    nl.setLink('wbr0', { promisc: true, up: true });

    const ipPort = linkJson(ns, 'wv0', true);
    assert.equal(ipPort.master, 'wbr0');
    assert.equal(ipPort.linkinfo?.info_slave_kind, 'bridge');
    assert.equal(ipPort.linkinfo?.info_slave_data?.['hairpin'], true);
    assert.ok(linkJson(ns, 'wbr0').flags.includes('PROMISC'));
    assert.ok(linkJson(ns, 'wbr0').flags.includes('UP'));

    const port = nl.requireLink('wv0');
    assert.equal(port.master, br.index);
    assert.deepEqual(port.bridgePort, { hairpin: true });
    assert.equal(port.up, true);
    assert.equal(nl.requireLink('wbr0').promisc, true);

    nl.setBridgePort('wv0', { hairpin: false });
    assert.equal(linkJson(ns, 'wv0', true).linkinfo?.info_slave_data?.['hairpin'], false);
    nl.setLink('wbr0', { promisc: false });
    assert.equal(linkJson(ns, 'wbr0').flags.includes('PROMISC'), false);
    nl.setLink('wv0', { master: null });
    assert.equal(linkJson(ns, 'wv0').master, undefined);
    assert.equal(nl.requireLink('wv0').master, undefined);
  });

  it('creates a bridge with an explicit MAC and VLAN filtering setting', () => {
    const { ns, nl } = freshNs();
    const br = nl.createBridge({ name: 'wbrv', vlanFiltering: false, mac: '02:00:00:00:00:42' });
    assert.deepEqual(br.info, { kind: 'bridge', vlanFiltering: false });
    assert.equal(linkJson(ns, 'wbrv', true).linkinfo?.info_data?.['vlan_filtering'], 0);
    assert.equal(br.mac, '02:00:00:00:00:42');
    // Kernels built without CONFIG_BRIDGE_VLAN_FILTERING refuse it (as they refuse `ip link add … vlan_filtering 1`).
    try {
      const f = nl.createBridge({ name: 'wbrf', vlanFiltering: true });
      assert.deepEqual(f.info, { kind: 'bridge', vlanFiltering: true });
      assert.equal(linkJson(ns, 'wbrf', true).linkinfo?.info_data?.['vlan_filtering'], 1);
    } catch (err) {
      assert.ok(isNetlinkError(err, 'ENOTSUP', 'EOPNOTSUPP'), String(err));
      assert.equal(nl.getLink('wbrf'), undefined);
    }
  });

  it('creates a vxlan device bound to an underlay', () => {
    const { ns, nl } = freshNs();
    const under = device(nl, 'wund0', { up: true });
    nl.addAddress(under, parseCidr('198.18.0.1/24'));
    const vx = nl.createVxlan({ name: 'wvx0', vni: 4242, local: parseIP('198.18.0.1'), port: 4789, learning: false, dev: 'wund0', mtu: 1450, ttl: 64 });
    const info = linkJson(ns, 'wvx0', true).linkinfo;
    assert.equal(info?.info_kind, 'vxlan');
    assert.equal(info?.info_data?.['id'], 4242);
    assert.equal(info?.info_data?.['local'], '198.18.0.1');
    assert.equal(info?.info_data?.['port'], 4789);
    assert.equal(info?.info_data?.['learning'], false);
    assert.equal(info?.info_data?.['link'], 'wund0');
    assert.equal(info?.info_data?.['ttl'], 64);
    assert.equal(vx.mtu, 1450);
    assert.ok(vx.info?.kind === 'vxlan');
    assert.equal(vx.info.vni, 4242);
    assert.equal(vx.info.port, 4789);
    assert.equal(vx.info.learning, false);
    assert.equal(vx.info.dev, under.index);
    assert.equal(vx.info.ttl, 64);
    assert.equal(vx.info.local && formatIP(vx.info.local), '198.18.0.1');
  });

  it('creates a macvlan directly inside another namespace', () => {
    const { ns: a, nl } = freshNs();
    const { ns: b } = freshNs();
    device(nl, 'wphys0', { up: true });
    const mv = nl.createMacvlan({ name: 'eth0', master: 'wphys0', mode: 'bridge', mtu: 1400, nsPath: b.path });
    assert.deepEqual(mv.info, { kind: 'macvlan', mode: 'bridge' });
    const ipMv = linkJson(b, 'eth0', true);
    assert.equal(ipMv.linkinfo?.info_kind, 'macvlan');
    assert.equal(ipMv.linkinfo?.info_data?.['mode'], 'bridge');
    assert.equal(ipMv.mtu, 1400);
    assert.equal(mv.index, ipMv.ifindex);
    assert.equal(ipJson<IpLink[]>(a.name, ['link', 'show']).some((l) => l.ifname === 'eth0'), false);

    const priv = nl.createMacvlan({ name: 'wmv1', master: 'wphys0', mode: 'private' });
    assert.equal(linkJson(a, 'wmv1', true).linkinfo?.info_data?.['mode'], 'private');
    assert.equal(priv.parentIndex, nl.requireLink('wphys0').index);
  });

  it('changes MTU, name, MAC and up/down state', () => {
    const { ns, nl } = freshNs();
    const d = device(nl, 'wd0');
    assert.equal(d.up, false);
    nl.setLink(d, { mtu: 1300, name: 'wd-renamed', mac: '02:11:22:33:44:55' });
    const after1 = linkJson(ns, 'wd-renamed');
    assert.equal(after1.ifindex, d.index);
    assert.equal(after1.mtu, 1300);
    assert.equal(after1.address, '02:11:22:33:44:55');
    assert.equal(nl.getLink('wd0'), undefined);

    nl.setLink(d.index, { up: true });
    assert.ok(linkJson(ns, 'wd-renamed').flags.includes('UP'));
    const up = nl.requireLink(d.index);
    assert.equal(up.up, true);
    assert.equal(up.operState, 'lowerlayerdown', 'a veth whose peer is down has no carrier');
    nl.setLink('wd-renamed', { up: false });
    assert.equal(linkJson(ns, 'wd-renamed').flags.includes('UP'), false);
    assert.equal(nl.requireLink(d.index).up, false);
  });

  it('adds, lists and deletes IPv4 and IPv6 addresses', () => {
    const { ns, nl } = freshNs();
    const d = device(nl, 'wa0', { up: true });
    nl.addAddress(d, parseCidr('10.1.0.1/24'));
    nl.addAddress(d, parseCidr('fd00:1::1/64'), { noDad: true });
    nl.addAddress(d, parseCidr('10.1.1.1/32'), { broadcast: false, noPrefixRoute: true });

    const [ipA] = ipJson<IpAddr[]>(ns.name, ['addr', 'show', 'dev', 'wa0']);
    const v4 = ipA?.addr_info.find((x) => x.local === '10.1.0.1');
    assert.equal(v4?.prefixlen, 24);
    assert.equal(v4?.broadcast, '10.1.0.255');
    const v6 = ipA?.addr_info.find((x) => x.local === 'fd00:1::1');
    assert.equal(v6?.prefixlen, 64);
    assert.equal(v6?.nodad, true);

    const ours = nl.listAddresses({ link: 'wa0' }).filter((a) => a.scope === 0);
    const fmt = (c: { ip: Parameters<typeof formatIP>[0]; prefix: number }): string => formatCidr(c);
    assert.deepEqual(ours.map((a) => fmt(a.cidr)).sort(), ['10.1.0.1/24', '10.1.1.1/32', 'fd00:1::1/64']);
    const a4 = ours.find((a) => fmt(a.cidr) === '10.1.0.1/24');
    assert.equal(a4?.broadcast && formatIP(a4.broadcast), '10.1.0.255');
    assert.equal(nl.listAddresses({ link: d, family: 6 }).some((a) => fmt(a.cidr) === 'fd00:1::1/64'), true);
    assert.equal(nl.listAddresses({ family: 4 }).every((a) => a.family === 4), true);
    // noprefixroute: no 10.1.1.1/32 route from the kernel.
    assert.equal(nl.listRoutes({ table: 'all' }).some((r) => formatCidr(r.dst) === '10.1.1.1/32' && r.type === 'unicast'), false);

    assert.throws(() => nl.addAddress(d, parseCidr('10.1.0.1/24')), (e: unknown) => isNetlinkError(e, 'EEXIST'));
    nl.replaceAddress(d, parseCidr('10.1.0.1/24'));
    assert.equal(nl.deleteAddress(d, parseCidr('10.1.0.1/24')), true);
    assert.equal(nl.deleteAddress(d, parseCidr('10.1.0.1/24')), false);
    assert.equal(nl.deleteAddress('no-such-link', parseCidr('10.1.0.1/24')), false);
    assert.equal(ipJson<IpAddr[]>(ns.name, ['addr', 'show', 'dev', 'wa0'])[0]?.addr_info.some((x) => x.local === '10.1.0.1'), false);
  });

  it('adds routes: onlink, scope link, table 100 with proto 200, table 1000, metrics', () => {
    const { ns, nl } = freshNs();
    const d = device(nl, 'wr0', { up: true });
    nl.addAddress(d, parseCidr('10.1.0.1/24'));
    nl.addRoute({ dst: parseCidr('10.9.0.0/16'), gateway: parseIP('192.0.2.1'), oif: d, onlink: true });
    nl.addRoute({ dst: parseCidr('10.8.0.0/16'), oif: 'wr0' });
    nl.addRoute({ dst: parseCidr('10.7.0.0/16'), gateway: parseIP('10.1.0.254'), table: 100, protocol: 200, priority: 50 });
    nl.addRoute({ dst: 'default', gateway: parseIP('10.1.0.254'), table: 1000, mtu: 1380, src: parseIP('10.1.0.1') });
    nl.addRoute({ dst: parseCidr('fd00:9::/64'), oif: d, table: 100 });

    const main = ipJson<IpRoute[]>(ns.name, ['route', 'show']);
    const onlink = main.find((r) => r.dst === '10.9.0.0/16');
    assert.equal(onlink?.gateway, '192.0.2.1');
    assert.ok(onlink?.flags.includes('onlink'));
    assert.equal(onlink?.protocol, undefined, 'ip hides the default proto boot');
    const scoped = main.find((r) => r.dst === '10.8.0.0/16');
    assert.equal(scoped?.scope, 'link');
    assert.equal(scoped?.dev, 'wr0');
    const t100 = ipJson<IpRoute[]>(ns.name, ['route', 'show', 'table', '100']);
    const r100 = t100.find((r) => r.dst === '10.7.0.0/16');
    assert.equal(r100?.gateway, '10.1.0.254');
    assert.equal(r100?.protocol, '200');
    assert.equal(r100?.metric, 50);
    const t1000 = ipJson<IpRoute[]>(ns.name, ['route', 'show', 'table', '1000']);
    assert.equal(t1000[0]?.dst, 'default');
    assert.equal(t1000[0]?.prefsrc, '10.1.0.1');
    assert.equal(t1000[0]?.metrics?.[0]?.mtu, 1380);
    assert.equal(ipJson<IpRoute[]>(ns.name, ['-6', 'route', 'show', 'table', '100'])[0]?.dst, 'fd00:9::/64');

    const ours = nl.listRoutes({ family: 4 });
    const o9 = ours.find((r) => formatCidr(r.dst) === '10.9.0.0/16');
    assert.equal(o9?.onlink, true);
    assert.equal(o9?.protocol, 3, 'proto boot, as ip route add would');
    assert.equal(o9?.oif, d.index);
    assert.equal(o9?.gateway && formatIP(o9.gateway), '192.0.2.1');
    assert.equal(ours.find((r) => formatCidr(r.dst) === '10.8.0.0/16')?.scope, 253);
    assert.equal(ours.some((r) => formatCidr(r.dst) === '10.7.0.0/16'), false, 'table 100 is not main');
    const o100 = nl.listRoutes({ table: 100, family: 4 });
    assert.deepEqual(o100.map((r) => [formatCidr(r.dst), r.protocol, r.priority, r.table]), [['10.7.0.0/16', 200, 50, 100]]);
    const o1000 = nl.listRoutes({ table: 1000 });
    assert.equal(o1000.length, 1);
    assert.equal(o1000[0]?.dst.prefix, 0);
    assert.equal(o1000[0]?.mtu, 1380);
    assert.equal(o1000[0]?.src && formatIP(o1000[0].src), '10.1.0.1');
    assert.equal(nl.listRoutes({ table: 100, family: 6 })[0]?.family, 6);
    assert.equal(nl.listRoutes({ table: 100, protocol: 200 }).length, 1);
    assert.equal(nl.listRoutes({ oif: 'wr0' }).every((r) => r.oif === d.index), true);

    // Replace moves the gateway; delete of what was listed removes exactly that route.
    nl.replaceRoute({ dst: parseCidr('10.7.0.0/16'), gateway: parseIP('10.1.0.253'), table: 100, protocol: 200, priority: 50 });
    assert.equal(ipJson<IpRoute[]>(ns.name, ['route', 'show', 'table', '100'])[0]?.gateway, '10.1.0.253');
    assert.throws(() => nl.addRoute({ dst: parseCidr('10.8.0.0/16'), oif: 'wr0' }), (e: unknown) => isNetlinkError(e, 'EEXIST'));
    const listed = nl.listRoutes({ table: 100, family: 4 })[0];
    assert.ok(listed);
    assert.equal(nl.deleteRoute(listed), true);
    assert.equal(nl.deleteRoute(listed), false);
    assert.equal(nl.deleteRoute({ dst: parseCidr('10.9.0.0/16'), table: 254 }), true);
    assert.equal(nl.deleteRoute({ dst: parseCidr('10.9.0.0/16') }), false);
    assert.equal(nl.deleteRoute({ dst: parseCidr('10.9.0.0/16'), oif: 'gone0' }), false);
    assert.equal(ipJson<IpRoute[]>(ns.name, ['route', 'show']).some((r) => r.dst === '10.9.0.0/16'), false);
  });

  it("surfaces the kernel's extended ACK text for a route via an unreachable gateway", () => {
    const { nl } = freshNs();
    device(nl, 'wx0', { up: true });
    nl.addAddress('wx0', parseCidr('10.1.0.1/24'));
    let caught: unknown;
    try {
      nl.addRoute({ dst: parseCidr('10.3.0.0/16'), gateway: parseIP('192.0.2.1') });
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof NetlinkError, 'a NetlinkError');
    assert.ok(caught instanceof WeftError);
    assert.equal(caught.code, CniCode.Netlink);
    assert.equal(caught.errnoCode, 'ENETUNREACH');
    assert.equal(caught.errno, 101);
    assert.equal(caught.extack, 'Nexthop has invalid gateway');
    assert.match(caught.message, /add route 10\.3\.0\.0\/16 via 192\.0\.2\.1 .*ENETUNREACH.*Nexthop has invalid gateway/);
  });

  it('sets and deletes a permanent neighbour', () => {
    const { ns, nl } = freshNs();
    const d = nl.createVeth({ name: 'wn0', peerName: 'wn1', up: true });
    nl.addAddress(d, parseCidr('10.1.0.1/24'));
    nl.replaceNeigh({ link: d, ip: parseIP('10.1.0.5'), mac: '02:00:00:00:00:05' });
    nl.replaceNeigh({ link: 'wn0', ip: parseIP('fd00::5'), mac: '02:00:00:00:00:06' });
    const ip = ipJson<IpNeigh[]>(ns.name, ['neigh', 'show', 'dev', 'wn0']);
    const n4 = ip.find((n) => n.dst === '10.1.0.5');
    assert.equal(n4?.lladdr, '02:00:00:00:00:05');
    assert.deepEqual(n4?.state, ['PERMANENT']);
    assert.ok(ipJson<IpNeigh[]>(ns.name, ['-6', 'neigh', 'show', 'dev', 'wn0']).some((n) => n.dst === 'fd00::5'));

    const ours = nl.listNeigh({ link: d, family: 4 });
    assert.deepEqual(ours.map((n) => [formatIP(n.ip), n.mac, n.permanent]), [['10.1.0.5', '02:00:00:00:00:05', true]]);
    // Replace is idempotent and updates the MAC.
    nl.replaceNeigh({ link: d, ip: parseIP('10.1.0.5'), mac: '02:00:00:00:00:07' });
    assert.equal(nl.listNeigh({ link: d, family: 4 })[0]?.mac, '02:00:00:00:00:07');
    assert.equal(nl.deleteNeigh(d, parseIP('10.1.0.5')), true);
    assert.equal(nl.deleteNeigh(d, parseIP('10.1.0.5')), false);
    assert.equal(nl.deleteNeigh('gone0', parseIP('10.1.0.5')), false);
    assert.equal(ipJson<IpNeigh[]>(ns.name, ['neigh', 'show', 'dev', 'wn0']).some((n) => n.dst === '10.1.0.5'), false);
  });

  it('manages FDB entries on a vxlan device and on a bridge', () => {
    const { ns, nl } = freshNs();
    const under = device(nl, 'wu0', { up: true });
    nl.addAddress(under, parseCidr('198.18.0.1/24'));
    const vx = nl.createVxlan({ name: 'wvx1', vni: 7, local: parseIP('198.18.0.1'), dev: under, learning: false, up: true });
    const zero = '00:00:00:00:00:00';
    nl.appendFdb({ link: vx, mac: zero, dst: parseIP('198.18.0.2') });
    nl.appendFdb({ link: vx, mac: zero, dst: parseIP('198.18.0.3') });
    nl.replaceFdb({ link: 'wvx1', mac: '02:aa:00:00:00:01', dst: parseIP('198.18.0.4') });

    const ipFdb = bridgeJson<BridgeFdb[]>(ns.name, ['fdb', 'show', 'dev', 'wvx1']);
    const remotes = ipFdb.filter((e) => e.mac === zero).map((e) => e.dst).sort();
    assert.deepEqual(remotes, ['198.18.0.2', '198.18.0.3']);
    const uni = ipFdb.find((e) => e.mac === '02:aa:00:00:00:01');
    assert.equal(uni?.dst, '198.18.0.4');
    assert.equal(uni?.state, 'permanent');
    assert.ok(uni?.flags.includes('self'));

    const ours = nl.listFdb({ link: vx }).filter((e) => e.dst);
    assert.deepEqual(ours.map((e) => `${e.mac} ${e.dst && formatIP(e.dst)}`).sort(), [
      '00:00:00:00:00:00 198.18.0.2',
      '00:00:00:00:00:00 198.18.0.3',
      '02:aa:00:00:00:01 198.18.0.4',
    ]);
    assert.ok(ours.every((e) => e.permanent && e.index === vx.index));

    // Replace moves the unicast entry to a new VTEP; delete removes one of the appended remotes.
    nl.replaceFdb({ link: vx, mac: '02:aa:00:00:00:01', dst: parseIP('198.18.0.5') });
    assert.equal(bridgeJson<BridgeFdb[]>(ns.name, ['fdb', 'show', 'dev', 'wvx1']).find((e) => e.mac === '02:aa:00:00:00:01')?.dst, '198.18.0.5');
    assert.equal(nl.deleteFdb({ link: vx, mac: zero, dst: parseIP('198.18.0.2') }), true);
    assert.deepEqual(
      bridgeJson<BridgeFdb[]>(ns.name, ['fdb', 'show', 'dev', 'wvx1']).filter((e) => e.mac === zero).map((e) => e.dst),
      ['198.18.0.3'],
    );
    assert.equal(nl.deleteFdb({ link: vx, mac: '02:aa:00:00:00:01' }), true);
    assert.equal(nl.deleteFdb({ link: vx, mac: '02:aa:00:00:00:01' }), false, 'the MAC is gone: the kernel says ENOENT');
    assert.equal(nl.deleteFdb({ link: 'gone0', mac: zero }), false);

    // A static entry in a bridge's own table, for a port (NTF_MASTER).
    const br = nl.createBridge({ name: 'wbr1', up: true });
    const port = nl.createVeth({ name: 'wp0', peerName: 'wp1', up: true });
    nl.setLink(port, { master: br });
    nl.replaceFdb({ link: port, mac: '02:bb:00:00:00:01', master: true });
    const brFdb = bridgeJson<BridgeFdb[]>(ns.name, ['fdb', 'show', 'br', 'wbr1']);
    const st = brFdb.find((e) => e.mac === '02:bb:00:00:00:01');
    assert.equal(st?.ifname, 'wp0');
    assert.equal(st?.state, 'permanent');
    const mine = nl.listFdb({ bridge: br }).find((e) => e.mac === '02:bb:00:00:00:01');
    assert.equal(mine?.index, port.index);
    assert.equal(mine?.master, br.index);
    assert.equal(nl.deleteFdb({ link: port, mac: '02:bb:00:00:00:01', master: true }), true);
    assert.equal(nl.listFdb({ bridge: br }).some((e) => e.mac === '02:bb:00:00:00:01'), false);
  });

  it('dumps 2000 routes (multi-part) matching ip route show', () => {
    const { ns, nl } = freshNs();
    const d = device(nl, 'wbig0', { up: true });
    const base = parseIP('10.128.0.0').value;
    for (let i = 0; i < 2000; i++) {
      nl.addRoute({ dst: { ip: ipFromValue(4, base + BigInt(i) * 256n), prefix: 24 }, oif: d.index, protocol: 201 });
    }
    const ours = nl.listRoutes({ family: 4, protocol: 201 });
    assert.equal(ours.length, 2000);
    const ip = ipJson<IpRoute[]>(ns.name, ['route', 'show', 'proto', '201']);
    assert.equal(ip.length, 2000);
    assert.deepEqual(new Set(ours.map((r) => formatCidr(r.dst))), new Set(ip.map((r) => r.dst)));
  });

  it('moves a link into another namespace', () => {
    const { nl } = freshNs();
    const { ns: b, nl: nlB } = freshNs();
    device(nl, 'wmove0');
    nl.setLink('wmove0', { nsPath: b.path });
    assert.equal(nl.getLink('wmove0'), undefined);
    assert.equal(nlB.requireLink('wmove0').kind, 'veth');
    assert.equal(linkJson(b, 'wmove0').ifname, 'wmove0');
  });

  it('creates both veth ends in other namespaces and rejects bad input with a clear error', () => {
    const { ns: a, nl } = freshNs();
    const { ns: b } = freshNs();
    const { ns: c } = freshNs();
    const v = nl.createVeth({ name: 'wbv0', nsPath: b.path, peerName: 'wcv0', peerNsPath: c.path, mtu: 9000 });
    assert.equal(v.mtu, 9000);
    assert.equal(linkJson(b, 'wbv0').ifindex, v.index);
    assert.equal(ipIn(c.name, ['link', 'show', 'wcv0']).includes('wcv0'), true);
    assert.equal(ipJson<IpLink[]>(a.name, ['link', 'show']).length, 1, 'only lo stays in the handle namespace');
    assert.throws(() => device(nl, 'x', { nsPath: '/run/netns/wdp-does-not-exist' }), (e: unknown) => e instanceof WeftError && e.code === CniCode.Namespace);
    assert.throws(() => nl.setLink('no-such-link', { up: true }), /no link "no-such-link"/);
    assert.throws(() => nl.createBridge({ name: 'bad', mac: 'zz' }), /invalid MAC address/);
    assert.throws(() => nl.createBridge({ name: 'this-name-is-far-too-long' }), (e: unknown) => isNetlinkError(e) && /bridge this-name-is-far-too-long/.test(e.message));
    // Kernels without the dummy driver say so through the same error path.
    try {
      nl.createDummy({ name: 'wdum0' });
      assert.equal(linkJson(a, 'wdum0', true).linkinfo?.info_kind, 'dummy');
    } catch (err) {
      assert.ok(isNetlinkError(err, 'ENOTSUP', 'EOPNOTSUPP'));
      assert.match((err as Error).message, /create dummy wdum0 .*Unknown device type/);
    }
  });

  it('puts links into a device group (ip -d shows it) and deletes the whole group in one request', () => {
    const { ns, nl } = freshNs();
    const { ns: pods, nl: nlPods } = freshNs();
    for (let i = 0; i < 4; i++) nl.createVeth({ name: `wgrp${i}`, peerName: `wgrpc${i}`, peerNsPath: pods.path });
    const group = 0x57ef1234;
    for (const i of [0, 1, 2]) nl.setLink(`wgrp${i}`, { group });
    const shown = ipJson<Array<IpLink & { group?: string }>>(ns.name, ['-d', 'link', 'show']);
    assert.deepEqual(shown.filter((l) => l.group === String(group)).map((l) => l.ifname).sort(), ['wgrp0', 'wgrp1', 'wgrp2']);
    assert.equal(shown.find((l) => l.ifname === 'wgrp3')?.group, 'default');
    assert.equal(nl.requireLink('wgrp1').group, group);
    assert.equal('group' in nl.requireLink('wgrp3'), false, 'the default group is not reported');

    assert.equal(nl.deleteLinkGroup(group), true);
    assert.deepEqual(ipJson<IpLink[]>(ns.name, ['link', 'show']).map((l) => l.ifname).sort(), ['lo', 'wgrp3'], 'only the group went');
    assert.deepEqual(ipJson<IpLink[]>(pods.name, ['link', 'show']).map((l) => l.ifname).sort(), ['lo', 'wgrpc3'], 'their peers went with them');
    assert.equal(nl.deleteLinkGroup(group), false, 'an empty group: nothing to delete');
    assert.equal(nlPods.getLink('wgrpc0'), undefined);
  });

  it('tells which id this namespace gives another one (the id veth peers are named by)', () => {
    const { ns: a, nl } = freshNs();
    const { ns: b, nl: nlB } = freshNs();
    const { ns: c } = freshNs();
    assert.equal(nl.netnsIdOf(c.path), undefined, 'no id before anything links the two');
    const host = nl.createVeth({ name: 'wnsid0', peerName: 'eth0', peerNsPath: b.path });
    const id = nl.netnsIdOf(b.path);
    assert.equal(id, host.linkNetnsId);
    const listed = ipJson<Array<{ nsid: number; name?: string }>>(a.name, ['netns', 'list-id']);
    assert.ok(listed.some((e) => e.nsid === id), `ip netns list-id in ${a.name} shows nsid ${String(id)}`);
    // Reading IFLA_LINK_NETNSID makes the kernel assign the id if it had none: read it first.
    const peerSide = nlB.requireLink('eth0').linkNetnsId;
    assert.equal(nlB.netnsIdOf(a.path), peerSide, 'and the other way round');
    assert.throws(() => nl.netnsIdOf('/run/netns/wdp-missing-ns'), (e: unknown) => e instanceof WeftError && e.code === CniCode.Namespace);
  });

  it('refuses a socket in a missing namespace and in a file that is not one, staying home', () => {
    const before = ownNetns();
    assert.throws(() => Netlink.open('/run/netns/wdp-missing-ns'), (e: unknown) => e instanceof WeftError && e.code === CniCode.Namespace && /does not exist/.test(e.message));
    assert.throws(() => Netlink.open('/etc/hostname'), (e: unknown) => e instanceof WeftError && /setns/.test(e.message));
    assert.equal(ownNetns(), before);
  });
});

// keep the Link type import used (for readers: the API returns typed links)
export type { Link };

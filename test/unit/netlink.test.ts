// Golden bytes for the rtnetlink codec. Encodings are checked against layouts written out by
// hand from the uapi structs (each line is one field or attribute); decoding is checked against
// datagrams captured from a real kernel (test/unit/netlink-fixtures.ts).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeMessage, decodeMessages, decodeError, type RequestSpec } from '../../src/netlink/message.js';
import { AttrSet, decodeAttrs, encodeAttrs, nla, parseMac, formatMac } from '../../src/netlink/attrs.js';
import { linkCreateRequest, linkDumpRequest, linkGetRequest, linkSetRequest, bridgePortSetRequest, decodeLink } from '../../src/netlink/link.js';
import { addressAddRequest, addressDeleteRequest, decodeAddress } from '../../src/netlink/addr.js';
import { routeRequest, routeDumpRequest, decodeRoute } from '../../src/netlink/route.js';
import { neighReplaceRequest, neighDumpRequest, fdbRequest, fdbDumpRequest, decodeNeigh, decodeFdb } from '../../src/netlink/neigh.js';
import { NetlinkError } from '../../src/netlink/error.js';
import { CniCode } from '../../src/errors.js';
import { formatCidr, formatIP, parseCidr, parseIP } from '../../src/net/ip.js';
import * as C from '../../src/netlink/constants.js';
import { captured } from './netlink-fixtures.js';

/** Hex written with spaces/newlines for readability; comments after '#' on a line are ignored. */
function hex(s: string): string {
  return s
    .split('\n')
    .map((l) => l.replace(/#.*$/, ''))
    .join('')
    .replace(/\s+/g, '');
}

function encode(req: RequestSpec, seq = 1): string {
  return encodeMessage({ ...req, seq }).toString('hex');
}

describe('netlink attributes', () => {
  it('pads values to 4 bytes and nests', () => {
    const b = encodeAttrs([nla.str(3, 'ab'), nla.nest(18, [nla.u8(7, 1), nla.be16(15, 4789)]), nla.u32(4, 1500)]);
    assert.equal(
      b.toString('hex'),
      hex(`
        07000300 61620000        # len 7, IFLA_IFNAME "ab\\0" + 1 pad
        14001200                 # len 20, nest 18
          05000700 01000000      #   u8 1 + 3 pad
          06000f00 12b50000      #   be16 4789 + 2 pad
        08000400 dc050000        # u32 1500
      `),
    );
    const top = new AttrSet(b);
    assert.equal(top.str(3), 'ab');
    assert.equal(top.u32(4), 1500);
    assert.equal(top.nested(18)?.u8(7), 1);
    assert.equal(top.nested(18)?.be16(15), 4789);
    assert.equal(top.bytes(99), undefined);
  });

  it('masks NLA_F_NESTED off the type and reports it', () => {
    const b = encodeAttrs([nla.nest(12, [nla.u8(4, 1)], true)]);
    assert.equal(b.toString('hex'), hex('0c000c80 05000400 01000000'));
    const [a] = decodeAttrs(b);
    assert.equal(a?.type, 12);
    assert.equal(a?.nested, true);
  });

  it('rejects an attribute running past its buffer', () => {
    assert.throws(() => decodeAttrs(Buffer.from('0c000300616200', 'hex')), /malformed netlink attribute at offset 0/);
    assert.throws(() => decodeAttrs(Buffer.from('02000300', 'hex')), /length 2/);
  });

  it('parses and formats MAC addresses', () => {
    assert.equal(parseMac('02:AB:00:00:00:01').toString('hex'), '02ab00000001');
    assert.equal(formatMac(Buffer.from('02ab00000001', 'hex')), '02:ab:00:00:00:01');
    assert.throws(() => parseMac('02:ab:00:00:00'), /invalid MAC address "02:ab:00:00:00"/);
  });
});

describe('rtnetlink request encoding', () => {
  it('veth with its peer created in another namespace', () => {
    const req = linkCreateRequest({ kind: 'veth', name: 'veth0', mtu: 1450, mac: '02:00:00:00:00:01', peer: { name: 'eth0', mtu: 1450, nsFd: 7 } });
    assert.equal(
      encode(req),
      hex(`
        84000000 1000 0506 01000000 00000000   # len 132, RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE, seq 1, pid 0
        00 00 0000 00000000 00000000 00000000  # ifinfomsg: family, pad, type, index, flags, change
        0a000300 76657468 30000000             # IFLA_IFNAME "veth0"
        08000400 aa050000                      # IFLA_MTU 1450
        0a000100 02000000 00010000             # IFLA_ADDRESS
        44001200                               # IFLA_LINKINFO (68)
          09000100 76657468 00000000           #   IFLA_INFO_KIND "veth"
          34000200                             #   IFLA_INFO_DATA (52)
            30000100                           #     VETH_INFO_PEER (48)
              00000000 00000000 00000000 00000000  # peer ifinfomsg
              09000300 65746830 00000000       #       IFLA_IFNAME "eth0"
              08000400 aa050000                #       IFLA_MTU 1450
              08001c00 07000000                #       IFLA_NET_NS_FD 7
      `),
    );
  });

  it('bridge with VLAN filtering, created up', () => {
    assert.equal(
      encode(linkCreateRequest({ kind: 'bridge', name: 'br0', vlanFiltering: true, up: true })),
      hex(`
        44000000 1000 0506 01000000 00000000
        00 00 0000 00000000 01000000 01000000  # flags IFF_UP, change IFF_UP
        08000300 62723000                      # IFLA_IFNAME "br0"
        1c001200                               # IFLA_LINKINFO (28)
          0b000100 62726964 67650000           #   IFLA_INFO_KIND "bridge"
          0c000200                             #   IFLA_INFO_DATA
            05000700 01000000                  #     IFLA_BR_VLAN_FILTERING 1
      `),
    );
  });

  it('vxlan with VNI, underlay device, local address, port and learning off', () => {
    assert.equal(
      encode(linkCreateRequest({ kind: 'vxlan', name: 'vx0', vni: 42, local: parseIP('198.18.0.1'), port: 4789, learning: false, dev: 3 })),
      hex(`
        64000000 1000 0506 01000000 00000000   # len 100
        00000000 00000000 00000000 00000000
        08000300 76783000                      # IFLA_IFNAME "vx0"
        3c001200                               # IFLA_LINKINFO (60)
          0a000100 76786c61 6e000000           #   IFLA_INFO_KIND "vxlan"
          2c000200                             #   IFLA_INFO_DATA (44)
            08000100 2a000000                  #     IFLA_VXLAN_ID 42
            08000300 03000000                  #     IFLA_VXLAN_LINK 3
            08000400 c6120001                  #     IFLA_VXLAN_LOCAL 198.18.0.1
            05000700 00000000                  #     IFLA_VXLAN_LEARNING 0
            06000f00 12b50000                  #     IFLA_VXLAN_PORT 4789 (big endian)
      `),
    );
  });

  it('macvlan on a parent, created directly in another namespace', () => {
    assert.equal(
      encode(linkCreateRequest({ kind: 'macvlan', name: 'mv0', master: 2, mode: 'bridge', nsFd: 9 })),
      hex(`
        54000000 1000 0506 01000000 00000000   # len 84
        00000000 00000000 00000000 00000000
        08000300 6d763000                      # IFLA_IFNAME "mv0"
        08001c00 09000000                      # IFLA_NET_NS_FD 9
        08000500 02000000                      # IFLA_LINK 2 (the parent)
        1c001200                               # IFLA_LINKINFO
          0c000100 6d616376 6c616e00           #   IFLA_INFO_KIND "macvlan"
          0c000200                             #   IFLA_INFO_DATA
            08000100 04000000                  #     IFLA_MACVLAN_MODE bridge (4)
      `),
    );
  });

  it('link changes: up, promisc, rename, master release', () => {
    assert.equal(
      encode(linkSetRequest(4, { up: true, promisc: false, name: 'eth1', master: null })),
      hex(`
        34000000 1000 0500 01000000 00000000   # len 52, RTM_NEWLINK, REQUEST|ACK (no create)
        00 00 0000 04000000 01000000 01010000  # index 4, flags UP, change UP|PROMISC
        09000300 65746831 00000000             # IFLA_IFNAME "eth1"
        08000a00 00000000                      # IFLA_MASTER 0 = nomaster
      `),
    );
  });

  it('bridge port hairpin goes through AF_BRIDGE PROTINFO with NLA_F_NESTED', () => {
    assert.equal(
      encode(bridgePortSetRequest(4, { hairpin: true })),
      hex(`
        2c000000 1300 0500 01000000 00000000   # RTM_SETLINK
        07 00 0000 04000000 00000000 00000000  # family AF_BRIDGE, index 4
        0c000c80                               # IFLA_PROTINFO | NLA_F_NESTED
          05000400 01000000                    #   IFLA_BRPORT_MODE 1 (hairpin)
      `),
    );
  });

  it('link get by name and dump skip statistics', () => {
    assert.equal(
      encode(linkGetRequest('eth0')),
      hex(`
        34000000 1200 0100 01000000 00000000   # len 52, RTM_GETLINK, REQUEST
        00000000 00000000 00000000 00000000
        09000300 65746830 00000000             # IFLA_IFNAME "eth0"
        08001d00 08000000                      # IFLA_EXT_MASK RTEXT_FILTER_SKIP_STATS
      `),
    );
    assert.equal(
      encode(linkDumpRequest()),
      hex(`
        28000000 1200 0103 01000000 00000000   # REQUEST|DUMP
        00000000 00000000 00000000 00000000
        08001d00 08000000
      `),
    );
  });

  it('IPv4 address with computed broadcast, IPv6 address with nodad', () => {
    assert.equal(
      encode(addressAddRequest(5, parseCidr('10.1.0.1/24'))),
      hex(`
        30000000 1400 0506 01000000 00000000   # RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE
        02 18 00 00 05000000                   # ifaddrmsg: AF_INET, /24, flags, scope, index 5
        08000200 0a010001                      # IFA_LOCAL 10.1.0.1
        08000100 0a010001                      # IFA_ADDRESS 10.1.0.1
        08000400 0a0100ff                      # IFA_BROADCAST 10.1.0.255
      `),
    );
    assert.equal(
      encode(addressAddRequest(5, parseCidr('fd00::1/64'), { noDad: true })),
      hex(`
        48000000 1400 0506 01000000 00000000
        0a 40 02 00 05000000                   # AF_INET6, /64, IFA_F_NODAD
        14000200 fd000000 00000000 00000000 00000001   # IFA_LOCAL
        14000100 fd000000 00000000 00000000 00000001   # IFA_ADDRESS
        08000800 02000000                      # IFA_FLAGS NODAD
      `),
    );
    assert.equal(
      encode(addressDeleteRequest(5, parseCidr('10.1.0.1/24'))),
      hex(`
        20000000 1500 0500 01000000 00000000   # RTM_DELADDR
        02 18 00 00 05000000
        08000200 0a010001
      `),
    );
  });

  it('route: onlink gateway, table above 255, protocol, metric, MTU', () => {
    const req = routeRequest('add', {
      dst: parseCidr('10.7.0.0/16'),
      gateway: parseIP('10.1.0.254'),
      oif: 5,
      table: 1000,
      protocol: 200,
      priority: 50,
      onlink: true,
      mtu: 1400,
    });
    assert.equal(
      encode(req),
      hex(`
        50000000 1800 0506 01000000 00000000   # len 80, RTM_NEWROUTE
        02 10 00 00 00 c8 00 01 04000000       # AF_INET, /16, src 0, tos 0, table UNSPEC, proto 200, scope universe, unicast; RTNH_F_ONLINK
        08000f00 e8030000                      # RTA_TABLE 1000
        08000100 0a070000                      # RTA_DST 10.7.0.0
        08000600 32000000                      # RTA_PRIORITY 50
        08000500 0a0100fe                      # RTA_GATEWAY 10.1.0.254
        08000400 05000000                      # RTA_OIF 5
        0c000800                               # RTA_METRICS
          08000200 78050000                    #   RTAX_MTU 1400
      `),
    );
  });

  it('route defaults: scope link without gateway; delete leaves fields wildcard', () => {
    assert.equal(
      encode(routeRequest('replace', { dst: parseCidr('10.8.0.0/16'), oif: 5 })),
      hex(`
        34000000 1800 0505 01000000 00000000   # len 52, REQUEST|ACK|REPLACE|CREATE
        02 10 00 00 fe 03 fd 01 00000000       # table main, proto boot, scope link, unicast
        08000f00 fe000000                      # RTA_TABLE 254
        08000100 0a080000
        08000400 05000000
      `),
    );
    assert.equal(
      encode(routeRequest('delete', { dst: parseCidr('10.7.0.0/16') })),
      hex(`
        2c000000 1900 0500 01000000 00000000   # RTM_DELROUTE
        02 10 00 00 fe 00 ff 00 00000000       # proto any, scope nowhere (any), type any
        08000f00 fe000000
        08000100 0a070000
      `),
    );
    assert.equal(
      encode(routeRequest('add', { dst: 'default', gateway: parseIP('fd00::1') })),
      hex(`
        38000000 1800 0506 01000000 00000000   # len 56
        0a 00 00 00 fe 03 00 01 00000000       # AF_INET6 default: no RTA_DST
        08000f00 fe000000
        14000500 fd000000 00000000 00000000 00000001
      `),
    );
    assert.throws(() => routeRequest('add', { dst: 'default' }), /needs a family/);
    assert.throws(() => routeRequest('add', { dst: parseCidr('10.0.0.0/8'), gateway: parseIP('fd00::1') }), /gateway is IPv6/);
  });

  it('route dump filtered by table and protocol', () => {
    assert.equal(
      encode(routeDumpRequest({ family: 4, table: 100, protocol: 200 })),
      hex(`
        1c000000 1a00 0103 01000000 00000000   # RTM_GETROUTE, dump
        02 00 00 00 64 c8 00 00 00000000       # table 100, proto 200
      `),
    );
  });

  it('permanent neighbour', () => {
    assert.equal(
      encode(neighReplaceRequest({ index: 5, ip: parseIP('10.1.0.5'), mac: '02:00:00:00:00:05' })),
      hex(`
        30000000 1c00 0505 01000000 00000000   # RTM_NEWNEIGH, REQUEST|ACK|REPLACE|CREATE
        02 00 0000 05000000 8000 00 00         # ndmsg: AF_INET, ifindex 5, NUD_PERMANENT
        08000100 0a010005                      # NDA_DST
        0a000200 02000000 00050000             # NDA_LLADDR
      `),
    );
    assert.equal(
      encode(neighDumpRequest(4, 5)),
      hex(`
        24000000 1e00 0103 01000000 00000000
        02 00 0000 00000000 0000 00 00         # ifindex 0 in the header (strict checking) ...
        08000800 05000000                      # ... NDA_IFINDEX 5 instead
      `),
    );
  });

  it('vxlan FDB append and bridge FDB entry', () => {
    assert.equal(
      encode(fdbRequest('append', { index: 6, mac: '00:00:00:00:00:00', dst: parseIP('198.18.0.2') })),
      hex(`
        30000000 1c00 050c 01000000 00000000   # REQUEST|ACK|CREATE|APPEND
        07 00 0000 06000000 8000 02 00         # AF_BRIDGE, ifindex 6, NUD_PERMANENT, NTF_SELF
        0a000200 00000000 00000000             # NDA_LLADDR 00:00:00:00:00:00
        08000100 c6120002                      # NDA_DST 198.18.0.2
      `),
    );
    assert.equal(
      encode(fdbRequest('delete', { index: 6, mac: '02:bb:00:00:00:01', master: true, vlan: 10 })),
      hex(`
        30000000 1d00 0500 01000000 00000000   # len 48, RTM_DELNEIGH
        07 00 0000 06000000 0000 04 00         # NTF_MASTER
        0a000200 02bb0000 00010000
        06000500 0a000000                      # NDA_VLAN 10
      `),
    );
    assert.equal(
      encode(fdbDumpRequest(6, 3)),
      hex(`
        24000000 1e00 0103 01000000 00000000
        07 00 0000 06000000 0000 00 00         # port filter in the header for fdb dumps
        08000900 03000000                      # NDA_MASTER 3
      `),
    );
  });
});

describe('decoding captured kernel replies', () => {
  const one = (hexes: readonly string[]) => hexes.flatMap((h) => decodeMessages(Buffer.from(h, 'hex')));

  // In the captured scene veth0 got ifindex 3 (its peer veth1 registers first, as 2).
  const addrMsgs = one(captured.addrDumpV4);
  const veth0Index = decodeAddress(addrMsgs[0]!)!.index;

  it('splits datagrams into messages with the request sequence number', () => {
    assert.deepEqual(addrMsgs.map((m) => [m.type, m.seq, (m.flags & C.NLM_F_MULTI) !== 0]), [
      [C.RTM_NEWADDR, 77, true],
      [C.NLMSG_DONE, 77, true],
    ]);
    assert.throws(() => decodeMessages(Buffer.from('ff0000001000000000000000000000000000', 'hex')), /malformed netlink message/);
  });

  it('a vxlan link with its details', () => {
    const [msg] = one(captured.vxlanLink);
    assert.ok(msg);
    const l = decodeLink(msg);
    assert.equal(l.name, 'vx0');
    assert.equal(l.mac, '02:00:00:00:00:03');
    assert.equal(l.kind, 'vxlan');
    assert.equal(l.up, false);
    assert.equal(l.operState, 'down');
    assert.equal(l.hwType, 1);
    assert.equal(l.mtu, 1400, 'the kernel takes 50 bytes of vxlan headers off the 1450-byte underlay');
    assert.ok(l.info?.kind === 'vxlan');
    assert.equal(l.info.vni, 42);
    assert.equal(l.info.port, 4789);
    assert.equal(l.info.learning, false);
    assert.equal(l.info.local && formatIP(l.info.local), '10.1.0.1');
    assert.equal(l.info.dev, veth0Index);
  });

  it('an IPv4 address', () => {
    const a = decodeAddress(addrMsgs[0]!);
    assert.ok(a);
    assert.equal(formatCidr(a.cidr), '10.1.0.1/24');
    assert.equal(a.broadcast && formatIP(a.broadcast), '10.1.0.255');
    assert.equal(a.label, 'veth0');
    assert.equal(a.family, 4);
    assert.equal(a.scope, 0);
    assert.equal(a.flags & C.IFA_F_PERMANENT, C.IFA_F_PERMANENT);
    assert.equal(a.peer, undefined);
  });

  it('a route in table 100 with protocol, metric and onlink', () => {
    const [msg, done] = one(captured.routeDumpTable100);
    assert.equal(done?.type, C.NLMSG_DONE);
    const r = decodeRoute(msg!);
    assert.ok(r);
    assert.equal(formatCidr(r.dst), '10.7.0.0/16');
    assert.equal(r.gateway && formatIP(r.gateway), '10.1.0.254');
    assert.equal(r.table, 100);
    assert.equal(r.protocol, 200);
    assert.equal(r.priority, 50);
    assert.equal(r.onlink, true);
    assert.equal(r.type, 'unicast');
    assert.equal(r.scope, C.RT_SCOPE_UNIVERSE);
    assert.equal(r.oif, veth0Index);
  });

  it('a permanent neighbour', () => {
    const msgs = one(captured.neighDumpV4);
    const n = msgs.filter((m) => m.type === C.RTM_NEWNEIGH).map(decodeNeigh).find((x) => x && formatIP(x.ip) === '10.1.0.5');
    assert.ok(n);
    assert.equal(n.mac, '02:00:00:00:00:05');
    assert.equal(n.permanent, true);
    assert.equal(n.index, veth0Index);
    assert.equal(msgs.at(-1)?.type, C.NLMSG_DONE);
  });

  it('a vxlan FDB entry among the bridge-family dump', () => {
    const entries = one(captured.fdbDumpVx0).filter((m) => m.type === C.RTM_NEWNEIGH).map(decodeFdb);
    const vx = entries.find((e) => e?.dst !== undefined);
    assert.ok(vx);
    assert.equal(vx.mac, '00:00:00:00:00:00');
    assert.equal(vx.dst && formatIP(vx.dst), '10.1.0.9');
    assert.equal(vx.permanent, true);
    assert.equal(vx.flags & C.NTF_SELF, C.NTF_SELF);
    // The rest are the multicast entries the kernel keeps for the veths.
    assert.ok(entries.filter((e) => e?.dst === undefined).every((e) => e && e.mac.startsWith('33:33:') || e?.mac.startsWith('01:00:5e')));
  });

  it('an NLMSG_ERROR with the extended ACK message', () => {
    const [msg] = one(captured.errorUnreachableGateway);
    assert.ok(msg);
    assert.equal(msg.type, C.NLMSG_ERROR);
    const e = decodeError(msg);
    assert.equal(e.errno, 101);
    assert.equal(e.extackMessage, 'Nexthop has invalid gateway');
    assert.equal(e.request.seq, 77);
    assert.equal(e.request.type, C.RTM_NEWROUTE);
    const err = new NetlinkError('add route 10.3.0.0/16 via 192.0.2.1', e.errno, e.extackMessage);
    assert.equal(err.code, CniCode.Netlink);
    assert.equal(err.errnoCode, 'ENETUNREACH');
    assert.match(err.message, /^add route 10\.3\.0\.0\/16 via 192\.0\.2\.1: .*\(ENETUNREACH\): Nexthop has invalid gateway$/);
  });

  it('a plain ACK has errno 0 and no extended ACK', () => {
    // Layout of the kernel's ACK for seq 9 (capped: only the request header is echoed).
    const ack = Buffer.from(hex(`
      24000000 0200 0001 09000000 7c390000   # NLMSG_ERROR, flags NLM_F_CAPPED
      00000000                               # error 0
      20000000 1800 0506 09000000 00000000   # the request's header
    `), 'hex');
    const [m] = decodeMessages(ack);
    const e = decodeError(m!);
    assert.equal(e.errno, 0);
    assert.equal(e.extackMessage, undefined);
    assert.equal(e.request.type, C.RTM_NEWROUTE);
  });
});

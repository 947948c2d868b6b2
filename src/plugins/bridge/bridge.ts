// The host side of bridge mode: the bridge itself, its gateway addresses, and the host end of
// each container's veth. Every function here is idempotent: concurrent ADDs race to create the
// bridge and both must win.
import { randomBytes } from 'node:crypto';
import { CniCode, WeftError } from '../../errors.js';
import { isNetlinkError, type Link, type Netlink } from '../../netlink/index.js';
import type { Cidr } from '../../net/ip.js';
import { cidrContains, cidrEquals, formatCidr } from '../../net/ip.js';
import { writeSysctl } from '../../netns/index.js';

export interface BridgeSettings {
  name: string;
  mtu?: number;
  promisc: boolean;
}

/**
 * A random unicast, locally administered MAC. A bridge created without one takes the lowest MAC
 * of its ports and changes it as containers come and go; every container's neighbour entry for
 * the gateway then points at a MAC the bridge no longer answers to, and its new connections
 * through the gateway fail until the entry is re-resolved (seconds). Set explicitly, it stays.
 */
function randomLocalMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export function ensureBridge(nl: Netlink, s: BridgeSettings): Link {
  let link = nl.getLink(s.name);
  if (!link) {
    try {
      link = nl.createBridge({ name: s.name, mac: randomLocalMac(), ...(s.mtu !== undefined && { mtu: s.mtu }), up: true });
    } catch (err) {
      if (!isNetlinkError(err, 'EEXIST')) throw err;
      link = nl.requireLink(s.name);
    }
  }
  if (link.kind !== 'bridge') {
    throw new WeftError(CniCode.InvalidNetworkConfig, `${s.name} already exists and is a ${link.kind ?? 'plain'} device, not a bridge`);
  }
  if (!link.up || (s.promisc && !link.promisc)) {
    nl.setLink(link, { up: true, ...(s.promisc && { promisc: true }) });
    link = nl.requireLink(link.index);
  }
  return link;
}

/**
 * Puts the gateway address on the bridge. Like the reference plugin, a different IPv4 address
 * (or an overlapping IPv6 one) is an error unless forceAddress, which replaces it.
 */
export function ensureGatewayAddress(nl: Netlink, bridge: Link, gateway: Cidr, forceAddress: boolean): void {
  const existing = nl.listAddresses({ link: bridge, family: gateway.ip.family });
  for (const a of existing) {
    if (cidrEquals(a.cidr, gateway)) return;
    const conflicts = gateway.ip.family === 4 || cidrContains(a.cidr, gateway.ip) || cidrContains(gateway, a.cidr.ip);
    if (!conflicts) continue;
    if (!forceAddress) {
      throw new WeftError(
        CniCode.InvalidNetworkConfig,
        `bridge ${bridge.name} already has address ${formatCidr(a.cidr)}, different from ${formatCidr(gateway)} (set forceAddress to replace it)`,
      );
    }
    nl.deleteAddress(bridge, a.cidr);
  }
  try {
    nl.addAddress(bridge, gateway, gateway.ip.family === 6 ? { noDad: true } : {});
  } catch (err) {
    if (!isNetlinkError(err, 'EEXIST')) throw err;
  }
}

/** A gateway host must forward; the reference plugin turns forwarding on the same way. */
export function enableForwarding(families: Iterable<4 | 6>): void {
  for (const f of new Set(families)) {
    writeSysctl(f === 4 ? 'net.ipv4.ip_forward' : 'net.ipv6.conf.all.forwarding', '1');
  }
}

export function randomHostVethName(): string {
  return `veth${randomBytes(4).toString('hex')}`;
}

export interface VethPair {
  host: Link;
  container: Link;
}

/**
 * Creates the pair with the container end born inside the container's namespace (0.3 ms,
 * against ~15 ms to move it there afterwards), then attaches the host end to the bridge.
 */
export function createContainerVeth(
  hostNl: Netlink,
  containerNl: Netlink,
  opts: { netns: string; ifname: string; bridge: Link; mtu?: number; mac?: string; hairpin: boolean },
): VethPair {
  if (containerNl.getLink(opts.ifname)) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `container interface ${opts.ifname} already exists in ${opts.netns}`);
  }
  let host: Link | undefined;
  for (let attempt = 0; !host; attempt++) {
    const name = randomHostVethName();
    try {
      host = hostNl.createVeth({
        name,
        peerName: opts.ifname,
        peerNsPath: opts.netns,
        ...(opts.mtu !== undefined && { mtu: opts.mtu }),
        ...(opts.mac !== undefined && { peerMac: opts.mac }),
      });
    } catch (err) {
      // A random name collision is retried; anything else is the caller's to undo.
      if (!isNetlinkError(err, 'EEXIST') || attempt >= 3) throw err;
      if (containerNl.getLink(opts.ifname)) throw err;
    }
  }
  try {
    hostNl.setLink(host, { master: opts.bridge, up: true });
    if (opts.hairpin) hostNl.setBridgePort(host, { hairpin: true });
    const container = containerNl.requireLink(opts.ifname);
    return { host: hostNl.requireLink(host.index), container };
  } catch (err) {
    hostNl.deleteLink(host.index);
    throw err;
  }
}

// A multi-host network on one machine: an underlay namespace holding a bridge (the "switch"),
// N host namespaces each wired to it by a veth (eth0, 198.18.0.<i+1>/24, default route via the
// outside namespace), an "outside" namespace at 198.18.0.254 with no route to any pod network,
// and containers per host on a cni0-style bridge. With `ipv6` the underlay also carries IPv6
// (2001:2::<i+1>/64, outside 2001:2::fe — the IPv6 benchmarking range, RFC 5180); `only`
// leaves the hosts without IPv4 addresses, an IPv6-only underlay. Everything is named `${prefix}-…` and goes
// away with destroy() (links die with their namespaces), even after a half-built failure.
import { CniCode, WeftError } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { type Cidr, type IP, formatIP, ipFromValue, networkOf, nthAddress, parseIP, parseIPv4 } from '../net/ip.js';
import { writeSysctl } from '../netns/index.js';
import { NamespaceSet } from './namespace-set.js';

export const UNDERLAY_PREFIX = 24;
const UNDERLAY_BASE = parseIPv4('198.18.0.0');
export const UNDERLAY6_PREFIX = 64;
const UNDERLAY6_BASE = parseIP('2001:2::');

export interface TopologyHost {
  readonly index: number;
  /** Namespace name (for `ip netns exec`). */
  readonly ns: string;
  readonly nsPath: string;
  readonly iface: 'eth0';
  /** Its underlay address: IPv4, or IPv6 on an IPv6-only underlay. */
  readonly ip: IP;
  /** Its IPv6 underlay address (with `ipv6`). */
  readonly ip6?: IP | undefined;
}

export interface TopologyContainer {
  readonly ns: string;
  readonly nsPath: string;
  readonly host: TopologyHost;
  readonly ip: IP;
  /** The host end of its veth. */
  readonly hostEnd: string;
}

export interface TopologyOptions {
  readonly prefix: string;
  readonly hosts: number;
  readonly mtu?: number;
  /** IPv6 on the underlay beside IPv4 (`dual`) or instead of it on the hosts (`only`). */
  readonly ipv6?: 'dual' | 'only' | undefined;
}

/**
 * A lab namespace's interfaces start without duplicate address detection on their link-local
 * addresses too: every device of a fresh lab is seconds old when `lab check` probes, and while a
 * host's link-locals were tentative its first neighbour solicitations went unanswered for about
 * a second (IPv6 probes right after `up` failed; a pod added to a settled lab answers at once).
 * Lab namespaces only; real nodes' devices are long past DAD.
 */
export function skipLinkLocalDad(nsPath: string): void {
  writeSysctl('net.ipv6.conf.default.accept_dad', 0, nsPath);
  writeSysctl('net.ipv6.conf.all.accept_dad', 0, nsPath);
}

function underlayIP(n: number): IP {
  return ipFromValue(4, UNDERLAY_BASE.value + BigInt(n));
}

export function underlayIP6(n: number): IP {
  return ipFromValue(6, UNDERLAY6_BASE.value + BigInt(n));
}

export class Topology {
  private readonly namespaces: NamespaceSet;
  readonly id: string;
  readonly hosts: TopologyHost[] = [];
  readonly containers: TopologyContainer[] = [];
  readonly underlay: string;
  readonly outside: string;
  readonly outsideIP = underlayIP(254);
  readonly outsideIP6 = underlayIP6(0xfe);
  private constructor(private readonly opts: TopologyOptions) {
    this.namespaces = new NamespaceSet(opts.prefix);
    this.id = this.namespaces.id;
    this.underlay = this.name('u');
    this.outside = this.name('o');
  }

  private name(what: string): string {
    return this.namespaces.name(what);
  }

  private ns(name: string): string {
    const path = this.namespaces.create(name);
    if (this.opts.ipv6) skipLinkLocalDad(path);
    return path;
  }

  static create(opts: TopologyOptions): Topology {
    if (opts.hosts < 1 || opts.hosts > 200) throw new WeftError(CniCode.InvalidEnvironment, `topology: hosts must be 1..200, got ${opts.hosts}`);
    const t = new Topology(opts);
    try {
      t.build();
    } catch (err) {
      t.destroy();
      throw err;
    }
    return t;
  }

  private build(): void {
    const mtu = this.opts.mtu ?? 1500;
    const underlayPath = this.ns(this.underlay);
    Netlink.with(underlayPath, (nl) => {
      nl.createBridge({ name: 'sw', mtu, up: true });
      const v6 = this.opts.ipv6;
      const attach = (port: string, peerNs: string, ip: IP | undefined, ip6: IP | undefined, gateways: boolean) => {
        nl.createVeth({ name: port, peerName: 'eth0', peerNsPath: peerNs, mtu, up: true });
        nl.setLink(port, { master: 'sw' });
        Netlink.with(peerNs, (h) => {
          if (ip) h.addAddress('eth0', { ip, prefix: UNDERLAY_PREFIX });
          // No duplicate address detection: the lab's addresses are unique by construction,
          // and DAD would hold each one back for a second or more.
          if (ip6) h.addAddress('eth0', { ip: ip6, prefix: UNDERLAY6_PREFIX }, { noDad: true });
          h.setLink('eth0', { up: true });
          if (gateways && ip) h.addRoute({ dst: 'default', gateway: this.outsideIP });
          if (gateways && ip6) h.addRoute({ dst: { ip: ipFromValue(6, 0n), prefix: 0 }, gateway: this.outsideIP6 });
        });
      };
      const outsidePath = this.ns(this.outside);
      attach('po', outsidePath, this.outsideIP, v6 ? this.outsideIP6 : undefined, false);
      for (let i = 0; i < this.opts.hosts; i++) {
        const ns = this.name(`h${i}`);
        const path = this.ns(ns);
        writeSysctl('net.ipv4.ip_forward', 1, path);
        if (v6) writeSysctl('net.ipv6.conf.all.forwarding', 1, path);
        const ip4 = v6 === 'only' ? undefined : underlayIP(i + 1);
        const ip6 = v6 ? underlayIP6(i + 1) : undefined;
        attach(`p${i}`, path, ip4, ip6, true);
        this.hosts.push({ index: i, ns, nsPath: path, iface: 'eth0', ip: (ip4 ?? ip6)!, ...(ip6 && { ip6 }) });
      }
    });
  }

  host(i: number): TopologyHost {
    const h = this.hosts[i];
    if (!h) throw new WeftError(CniCode.InvalidEnvironment, `topology: no host ${i}`);
    return h;
  }

  /**
   * A container on `host` at the n-th address (n ≥ 2) of the host's pod subnet, whose first
   * address (the gateway) is on the host: by default on a cni0 bridge, like weft-bridge with
   * isGateway; `via: 'veth'` puts it on the container's veth itself (one container per host,
   * no bridge — the udp backend's tests and bench measure that shorter path).
   */
  addContainer(host: TopologyHost, subnet: Cidr, n: number, mtu: number, o: { via?: 'bridge' | 'veth' } = {}): TopologyContainer {
    const net = networkOf(subnet);
    const gw = nthAddress(net, 1);
    const ip = nthAddress(net, n);
    const ns = this.name(`c${host.index}x${n}`);
    const path = this.ns(ns);
    const hostEnd = `v${host.index}x${n}`;
    Netlink.with(host.nsPath, (nl) => {
      if (o.via === 'veth') {
        nl.createVeth({ name: hostEnd, peerName: 'eth0', peerNsPath: path, mtu, up: true });
        nl.addAddress(hostEnd, { ip: gw, prefix: net.prefix });
        return;
      }
      if (!nl.getLink('cni0')) {
        nl.createBridge({ name: 'cni0', mtu, up: true });
        nl.addAddress('cni0', { ip: gw, prefix: net.prefix });
      }
      nl.createVeth({ name: hostEnd, peerName: 'eth0', peerNsPath: path, mtu, up: true });
      nl.setLink(hostEnd, { master: 'cni0' });
    });
    Netlink.with(path, (c) => {
      c.setLink('lo', { up: true });
      c.addAddress('eth0', { ip, prefix: net.prefix });
      c.setLink('eth0', { up: true });
      c.addRoute({ dst: 'default', gateway: gw });
    });
    const ct = { ns, nsPath: path, host, ip, hostEnd };
    this.containers.push(ct);
    return ct;
  }

  describe(): string {
    return this.hosts.map((h) => `${h.ns} ${formatIP(h.ip)}`).join(', ');
  }

  /** Removes every namespace made (idempotent); links and addresses go with them. */
  destroy(): void {
    const errors = this.namespaces.removeAll();
    if (errors.length > 0) throw new AggregateError(errors, 'topology: could not remove every namespace');
  }
}


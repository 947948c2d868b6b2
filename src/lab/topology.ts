// A multi-host network on one machine: an underlay namespace holding a bridge (the "switch"),
// N host namespaces each wired to it by a veth (eth0, 198.18.0.<i+1>/24, default route via the
// outside namespace), an "outside" namespace at 198.18.0.254 with no route to any pod network,
// and containers per host on a cni0-style bridge. Everything is named `${prefix}-…` and goes
// away with destroy() (links die with their namespaces), even after a half-built failure.
import { CniCode, WeftError } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { type Cidr, type IP, formatIP, ipFromValue, networkOf, nthAddress, parseIPv4 } from '../net/ip.js';
import { writeSysctl } from '../netns/index.js';
import { NamespaceSet } from './namespace-set.js';

export const UNDERLAY_PREFIX = 24;
const UNDERLAY_BASE = parseIPv4('198.18.0.0');

export interface TopologyHost {
  readonly index: number;
  /** Namespace name (for `ip netns exec`). */
  readonly ns: string;
  readonly nsPath: string;
  readonly iface: 'eth0';
  readonly ip: IP;
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
}

function underlayIP(n: number): IP {
  return ipFromValue(4, UNDERLAY_BASE.value + BigInt(n));
}

export class Topology {
  private readonly namespaces: NamespaceSet;
  readonly id: string;
  readonly hosts: TopologyHost[] = [];
  readonly containers: TopologyContainer[] = [];
  readonly underlay: string;
  readonly outside: string;
  readonly outsideIP = underlayIP(254);
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
    return this.namespaces.create(name);
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
      const attach = (port: string, peerNs: string, ip: IP, gw: IP | undefined) => {
        nl.createVeth({ name: port, peerName: 'eth0', peerNsPath: peerNs, mtu, up: true });
        nl.setLink(port, { master: 'sw' });
        Netlink.with(peerNs, (h) => {
          h.addAddress('eth0', { ip, prefix: UNDERLAY_PREFIX });
          h.setLink('eth0', { up: true });
          if (gw) h.addRoute({ dst: 'default', gateway: gw });
        });
      };
      const outsidePath = this.ns(this.outside);
      attach('po', outsidePath, this.outsideIP, undefined);
      for (let i = 0; i < this.opts.hosts; i++) {
        const ns = this.name(`h${i}`);
        const path = this.ns(ns);
        writeSysctl('net.ipv4.ip_forward', 1, path);
        attach(`p${i}`, path, underlayIP(i + 1), this.outsideIP);
        this.hosts.push({ index: i, ns, nsPath: path, iface: 'eth0', ip: underlayIP(i + 1) });
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


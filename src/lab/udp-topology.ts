// A topology for the udp backend's tests (test/netns/udp-*) and bench/udp.ts: the lab's
// Topology (an underlay switch, N host namespaces wired to it, eth0 = 198.18.0.i) with per host
// one "container" namespace on a veth (10.244.i.2/24, gateway 10.244.i.1 on the host's end). The backends run in the calling process itself: the TUN device and the UDP socket are
// created inside the host namespace natively (nsPath), so no driver process is needed.
// With `ipv6` the underlay is dual-stack (2001:2::i beside 198.18.0.i) or IPv6-only, and the
// containers get fd10:244:0:i::2/64 (gateway ::1 on the host's end) beside or instead of IPv4,
// in a network with EnableIPv6 (IPv6Network fd10:244::/56, a /64 per host).
// Everything is removed by destroy(), even after a failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Netlink } from '../netlink/index.js';
import { runInNetns } from '../netns/index.js';
import { formatIP, networkOf, nthAddress, parseCidr, type Cidr, type IP } from '../net/ip.js';
import { Topology } from './topology.js';
import { networkConfigFromObject } from '../store/config.js';
import { createLogger } from '../log.js';
import type { HostContext } from '../backends/types.js';
import type { Lease } from '../store/lease.js';

export const NETWORK = '10.244.0.0/16';
export const IPV6_NETWORK = 'fd10:244::/56';
const VXLAN_DEVICE = 'wup-vx';

export interface TestHost {
  readonly index: number;
  /** The host's namespace (name and path). */
  readonly ns: { readonly name: string; readonly path: string };
  readonly container: { readonly name: string; readonly path: string };
  readonly nl: Netlink;
  /** Its underlay address: IPv4, or IPv6 on an IPv6-only underlay. */
  readonly publicIP: IP;
  /** Its IPv6 underlay address (with `ipv6`). */
  readonly publicIPv6?: IP | undefined;
  /** The lease's subnet: IPv4, or IPv6 on an IPv6-only network. */
  readonly subnet: Cidr;
  /** Its IPv6 subnet (with `ipv6`). */
  readonly subnet6?: Cidr | undefined;
  /** The container's address (10.244.i.2, or fd10:244:0:i::2 on an IPv6-only network). */
  readonly podIP: string;
  /** The container's IPv6 address (with `ipv6`). */
  readonly podIP6?: string | undefined;
  /** The host end of the container's veth (where its traffic enters the host). */
  readonly podIface: string;
  context(): HostContext;
  lease(backendType?: string): Lease;
  /** Sets the MTU of the container's veth (both ends), as a CNI plugin would from subnet.env. */
  setPodMtu(mtu: number): void;
}

export interface UdpTopologyOptions {
  /** Namespace prefix (default `wup`). */
  readonly prefix?: string;
  /** IPv6 beside IPv4 (`dual`) or instead of it (`only`), on the underlay and for the pods. */
  readonly ipv6?: 'dual' | 'only' | undefined;
}

/** The lab's Topology (underlay switch, hosts at 198.18.0.i) with one routed container per host. */
export class UdpTopology {
  private readonly topo: Topology;
  readonly hosts: TestHost[] = [];
  private readonly handles: Netlink[] = [];
  private readonly children: ChildProcess[] = [];

  constructor(hostCount: number, opts: UdpTopologyOptions = {}) {
    const v6 = opts.ipv6;
    this.topo = Topology.create({ prefix: opts.prefix ?? 'wup', hosts: hostCount, ipv6: v6 });
    try {
      const network = networkConfigFromObject({
        ...(v6 !== 'only' ? { Network: NETWORK } : { EnableIPv4: false }),
        ...(v6 && { EnableIPv6: true, IPv6Network: IPV6_NETWORK, IPv6SubnetLen: 64 }),
        Backend: { Type: 'udp' },
      });
      for (const th of this.topo.hosts) {
        const i = th.index + 1;
        const subnet4 = v6 === 'only' ? undefined : parseCidr(`10.244.${i}.0/24`);
        const subnet6 = v6 ? parseCidr(`fd10:244:0:${i.toString(16)}::/64`) : undefined;
        const subnet = (subnet4 ?? subnet6)!;
        const c = this.topo.addContainer(th, subnet, 2, 1500, { via: 'veth' });
        const nl = this.open(th.nsPath);
        const cnl = this.open(c.nsPath);
        let podIP6: IP | undefined;
        if (subnet4 && subnet6) {
          // The Topology's container is IPv4; its IPv6 side is added the same way.
          const gw6 = nthAddress(networkOf(subnet6), 1);
          podIP6 = nthAddress(networkOf(subnet6), 2);
          nl.addAddress(c.hostEnd, { ip: gw6, prefix: subnet6.prefix }, { noDad: true });
          cnl.addAddress('eth0', { ip: podIP6, prefix: subnet6.prefix }, { noDad: true });
          cnl.addRoute({ dst: parseCidr('::/0'), gateway: gw6 });
        } else if (subnet6) {
          podIP6 = c.ip;
        }
        const log = createLogger({ host: i }, { level: 'warn' });
        this.hosts.push({
          index: i,
          ns: { name: th.ns, path: th.nsPath },
          container: { name: c.ns, path: c.nsPath },
          nl,
          publicIP: th.ip,
          ...(th.ip6 && { publicIPv6: th.ip6 }),
          subnet,
          ...(subnet6 && { subnet6 }),
          podIP: formatIP(c.ip),
          ...(podIP6 && { podIP6: formatIP(podIP6) }),
          podIface: c.hostEnd,
          context: () => ({ nl, network, publicIP: th.ip, ...(th.ip6 && { publicIPv6: th.ip6 }), publicIface: nl.requireLink('eth0'), log }),
          lease: (backendType = 'udp') => ({
            subnet,
            ...(subnet6 && { ipv6Subnet: subnet6 }),
            attrs: { publicIP: th.ip, publicIPv6: th.ip6, backendType, backendData: null },
            expiresAt: null,
            revision: 1n,
          }),
          setPodMtu: (mtu) => {
            nl.setLink(c.hostEnd, { mtu });
            cnl.setLink('eth0', { mtu });
          },
        });
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  private open(path: string): Netlink {
    const nl = Netlink.open(path);
    this.handles.push(nl);
    return nl;
  }

  host(i: number): TestHost {
    const h = this.hosts[i - 1];
    if (!h) throw new Error(`no host ${i}`);
    return h;
  }

  /**
   * Flannel-style kernel vxlan between two hosts, by hand, as the yardstick for the udp backend:
   * VTEP address subnet.0/32, the peer's subnet via its .0 onlink, pods at MTU 1450.
   * removeKernelVxlan() takes it away again (the address and route go with the device).
   */
  buildKernelVxlan(self: TestHost, peer: TestHost): void {
    const nl = self.nl;
    nl.createVxlan({ name: VXLAN_DEVICE, vni: 1, port: 8472, local: self.publicIP, dev: 'eth0', learning: false, mtu: 1450 });
    nl.setLink(VXLAN_DEVICE, { up: true });
    nl.addAddress(VXLAN_DEVICE, { ip: self.subnet.ip, prefix: 32 });
    nl.appendFdb({ link: VXLAN_DEVICE, mac: '00:00:00:00:00:00', dst: peer.publicIP });
    nl.addRoute({ dst: peer.subnet, gateway: peer.subnet.ip, oif: VXLAN_DEVICE, onlink: true });
    self.setPodMtu(1450);
  }

  removeKernelVxlan(self: TestHost): void {
    self.nl.deleteLink(VXLAN_DEVICE);
  }

  /** Leases of every host except `self`. */
  peersOf(self: number, backendType = 'udp'): Lease[] {
    return this.hosts.filter((h) => h.index !== self).map((h) => h.lease(backendType));
  }

  ping(from: TestHost, to: string, count = 1): boolean {
    return runInNetns(from.container.name, ['ping', '-c', String(count), '-i', '0.2', '-W', '1', to]).status === 0;
  }

  /**
   * iperf3 from one container to another (TCP) for `seconds`. Returns what the receiver saw.
   */
  async iperf(from: TestHost, to: TestHost, seconds: number, family: 4 | 6 = 4): Promise<{ bitsPerSecond: number; bytes: number }> {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const dst = this.address(to, family);
    const server = spawn('ip', ['netns', 'exec', to.container.name, 'iperf3', '-s', '-1', '-B', dst], { stdio: 'ignore', env });
    this.children.push(server);
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    try {
      const limit = ['-t', String(seconds)];
      for (let attempt = 0; ; attempt++) {
        const r = spawnSync('ip', ['netns', 'exec', from.container.name, 'iperf3', '-c', dst, '-J', ...limit], { encoding: 'utf8', env, timeout: 30_000 });
        const out = r.stdout.trim();
        const json = out ? (JSON.parse(out) as { error?: string; end?: { sum_received?: { bits_per_second: number; bytes: number } } }) : {};
        const sum = json.end?.sum_received;
        if (r.status === 0 && sum) return { bitsPerSecond: sum.bits_per_second, bytes: sum.bytes };
        // The server may not be listening yet.
        if (attempt >= 20) throw new Error(`iperf3 client failed: ${json.error ?? r.stderr}`);
        await new Promise((res) => setTimeout(res, 100));
      }
    } finally {
      if (server.exitCode === null && server.signalCode === null) server.kill();
      await exited;
    }
  }

  /**
   * Sends `bytes` random bytes over TCP from one container to a server in another, which answers
   * with the count and SHA-256 of what it received. True when both match what was sent.
   */
  async tcpTransfer(from: TestHost, to: TestHost, bytes: number, family: 4 | 6 = 4): Promise<{ ok: boolean; detail: string }> {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const dst = this.address(to, family);
    const serverJs = `const net=require('net'),c=require('crypto');const srv=net.createServer((s)=>{const h=c.createHash('sha256');let n=0;s.on('data',(d)=>{h.update(d);n+=d.length});s.on('end',()=>{s.end(n+' '+h.digest('hex'));srv.close()})});srv.listen(7000,'${dst}',()=>console.log('ready'))`;
    const server = spawn('ip', ['netns', 'exec', to.container.name, process.execPath, '-e', serverJs], { stdio: ['ignore', 'pipe', 'inherit'], env });
    this.children.push(server);
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout?.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`tcp server exited early (${code})`)));
      });
      const clientJs = `const net=require('net'),c=require('crypto');const data=c.randomBytes(${bytes});const want=data.length+' '+c.createHash('sha256').update(data).digest('hex');const s=net.connect(7000,'${dst}',()=>s.end(data));let got='';s.on('data',(d)=>got+=d);s.on('end',()=>{console.log(JSON.stringify({ok:got===want,detail:got+' vs '+want}))});s.on('error',(e)=>{console.log(JSON.stringify({ok:false,detail:e.message}))})`;
      const r = spawnSync('ip', ['netns', 'exec', from.container.name, process.execPath, '-e', clientJs], { encoding: 'utf8', env, timeout: 20_000 });
      return r.stdout.trim() ? (JSON.parse(r.stdout.trim()) as { ok: boolean; detail: string }) : { ok: false, detail: r.stderr };
    } finally {
      if (server.exitCode === null && server.signalCode === null) server.kill();
      await exited;
    }
  }

  /** The container's address of a family (IPv6: podIP6). */
  address(h: TestHost, family: 4 | 6): string {
    const ip = family === 6 ? h.podIP6 : h.podIP.includes(':') ? undefined : h.podIP;
    if (ip === undefined) throw new Error(`host ${h.index}'s container has no IPv${family} address`);
    return ip;
  }

  destroy(): void {
    for (const c of this.children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill();
    for (const nl of this.handles.splice(0)) nl.close();
    this.topo.destroy();
  }
}

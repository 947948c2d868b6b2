// A topology for the udp backend's tests (test/netns/udp-*) and bench/udp.ts: the lab's
// Topology (an underlay switch, N host namespaces wired to it, eth0 = 198.18.0.i) with per host
// one "container" namespace on a veth (10.244.i.2/24, gateway 10.244.i.1 on the host's end). The backends run in the calling process itself: the TUN device and the UDP socket are
// created inside the host namespace natively (nsPath), so no driver process is needed.
// Everything is removed by destroy(), even after a failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Netlink } from '../netlink/index.js';
import { runInNetns } from '../netns/index.js';
import { formatIP, parseCidr, type Cidr, type IP } from '../net/ip.js';
import { Topology } from './topology.js';
import { networkConfigFromObject } from '../store/config.js';
import { createLogger } from '../log.js';
import type { HostContext } from '../backends/types.js';
import type { Lease } from '../store/lease.js';

export const NETWORK = '10.244.0.0/16';
const VXLAN_DEVICE = 'wup-vx';

export interface TestHost {
  readonly index: number;
  /** The host's namespace (name and path). */
  readonly ns: { readonly name: string; readonly path: string };
  readonly container: { readonly name: string; readonly path: string };
  readonly nl: Netlink;
  readonly publicIP: IP;
  readonly subnet: Cidr;
  /** The container's address (10.244.i.2). */
  readonly podIP: string;
  /** The host end of the container's veth (where its traffic enters the host). */
  readonly podIface: string;
  context(): HostContext;
  lease(backendType?: string): Lease;
  /** Sets the MTU of the container's veth (both ends), as a CNI plugin would from subnet.env. */
  setPodMtu(mtu: number): void;
}

/** The lab's Topology (underlay switch, hosts at 198.18.0.i) with one routed container per host. */
export class UdpTopology {
  private readonly topo: Topology;
  readonly hosts: TestHost[] = [];
  private readonly handles: Netlink[] = [];
  private readonly children: ChildProcess[] = [];

  constructor(hostCount: number) {
    this.topo = Topology.create({ prefix: 'wup', hosts: hostCount });
    try {
      const network = networkConfigFromObject({ Network: NETWORK, Backend: { Type: 'udp' } });
      for (const th of this.topo.hosts) {
        const i = th.index + 1;
        const subnet = parseCidr(`10.244.${i}.0/24`);
        const c = this.topo.addContainer(th, subnet, 2, 1500, { via: 'veth' });
        const nl = this.open(th.nsPath);
        const cnl = this.open(c.nsPath);
        const log = createLogger({ host: i }, { level: 'warn' });
        this.hosts.push({
          index: i,
          ns: { name: th.ns, path: th.nsPath },
          container: { name: c.ns, path: c.nsPath },
          nl,
          publicIP: th.ip,
          subnet,
          podIP: formatIP(c.ip),
          podIface: c.hostEnd,
          context: () => ({ nl, network, publicIP: th.ip, publicIface: nl.requireLink('eth0'), log }),
          lease: (backendType = 'udp') => ({
            subnet,
            attrs: { publicIP: th.ip, publicIPv6: undefined, backendType, backendData: null },
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
  async iperf(from: TestHost, to: TestHost, seconds: number): Promise<{ bitsPerSecond: number; bytes: number }> {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const server = spawn('ip', ['netns', 'exec', to.container.name, 'iperf3', '-s', '-1', '-B', to.podIP], { stdio: 'ignore', env });
    this.children.push(server);
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    try {
      const limit = ['-t', String(seconds)];
      for (let attempt = 0; ; attempt++) {
        const r = spawnSync('ip', ['netns', 'exec', from.container.name, 'iperf3', '-c', to.podIP, '-J', ...limit], { encoding: 'utf8', env, timeout: 30_000 });
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
  async tcpTransfer(from: TestHost, to: TestHost, bytes: number): Promise<{ ok: boolean; detail: string }> {
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const serverJs = `const net=require('net'),c=require('crypto');const srv=net.createServer((s)=>{const h=c.createHash('sha256');let n=0;s.on('data',(d)=>{h.update(d);n+=d.length});s.on('end',()=>{s.end(n+' '+h.digest('hex'));srv.close()})});srv.listen(7000,'${to.podIP}',()=>console.log('ready'))`;
    const server = spawn('ip', ['netns', 'exec', to.container.name, process.execPath, '-e', serverJs], { stdio: ['ignore', 'pipe', 'inherit'], env });
    this.children.push(server);
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        server.stdout?.once('data', () => resolve());
        server.once('exit', (code) => reject(new Error(`tcp server exited early (${code})`)));
      });
      const clientJs = `const net=require('net'),c=require('crypto');const data=c.randomBytes(${bytes});const want=data.length+' '+c.createHash('sha256').update(data).digest('hex');const s=net.connect(7000,'${to.podIP}',()=>s.end(data));let got='';s.on('data',(d)=>got+=d);s.on('end',()=>{console.log(JSON.stringify({ok:got===want,detail:got+' vs '+want}))});s.on('error',(e)=>{console.log(JSON.stringify({ok:false,detail:e.message}))})`;
      const r = spawnSync('ip', ['netns', 'exec', from.container.name, process.execPath, '-e', clientJs], { encoding: 'utf8', env, timeout: 20_000 });
      return r.stdout.trim() ? (JSON.parse(r.stdout.trim()) as { ok: boolean; detail: string }) : { ok: false, detail: r.stderr };
    } finally {
      if (server.exitCode === null && server.signalCode === null) server.kill();
      await exited;
    }
  }

  destroy(): void {
    for (const c of this.children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill();
    for (const nl of this.handles.splice(0)) nl.close();
    this.topo.destroy();
  }
}

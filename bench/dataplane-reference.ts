// Hand-built kernel paths of the same shape as weft's, for `npm run bench -- dataplane`. Built
// with iproute2 only (no weft code), in namespaces of their own (`wdb-<id>-…`) on an underlay
// like the lab's: a switch namespace holding a bridge, two host namespaces wired to it by veths
// (eth0, 198.18.0.1/24 and .2/24, MTU 1500). Each shape then adds what its weft backend builds:
//   vxlan    a container per host behind cni0 (veth, MTU 1450), a VXLAN device per host with
//            weft's settings (VNI 1, port 8472, nolearning, udpcsum, ttl auto, MTU 1450), its
//            subnet's network address as a /32, and per peer an onlink route, a permanent
//            neighbour and a permanent FDB entry — flannel's layout, programmed by hand;
//   routes   the same containers (MTU 1500) and a plain route to the peer's pod subnet via its
//            underlay address (host-gw);
//   macvlan  a bridge-mode macvlan on each host's eth0, moved into a container namespace.
// Everything goes with destroy(): links die with their namespaces.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export type ReferenceShape = 'vxlan' | 'routes' | 'macvlan';

/** The settings weft's vxlan backend uses (src/backends/vxlan: flannel's defaults, learning off). */
export const REFERENCE_VXLAN = { vni: 1, port: 8472, mtu: 1450 } as const;
const UNDERLAY_MTU = 1500;

function run(argv: readonly string[]): string {
  const r = spawnSync(argv[0] ?? '', argv.slice(1), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${(r.stderr || r.stdout || String(r.error ?? '')).trim()}`);
  return r.stdout;
}

function ip(ns: string, ...args: string[]): string {
  return run(['ip', '-n', ns, ...args]);
}

/** One end of the measured path: iperf3's server or client runs in `ns`; `ip` is its address. */
export interface Endpoint { readonly ns: string; readonly ip: string }

export class ReferencePath {
  private readonly id = randomBytes(3).toString('hex');
  private readonly made: string[] = [];
  /** Container on host 0 (iperf3 client) and on host 1 (server). */
  client: Endpoint = { ns: '', ip: '' };
  server: Endpoint = { ns: '', ip: '' };

  private constructor(readonly prefix: string, readonly shape: ReferenceShape) {}

  /** Builds the shape; on any failure removes what it made and rethrows. */
  static build(prefix: string, shape: ReferenceShape): ReferencePath {
    const p = new ReferencePath(prefix, shape);
    try {
      p.buildAll();
    } catch (err) {
      p.destroy();
      throw err;
    }
    return p;
  }

  /** Namespace name for a role (`u`, `h0`, `c1` …). */
  name(role: string): string {
    return `${this.prefix}-${this.id}-${role}`;
  }

  private netns(role: string): string {
    const ns = this.name(role);
    run(['ip', 'netns', 'add', ns]);
    this.made.push(ns);
    ip(ns, 'link', 'set', 'lo', 'up');
    return ns;
  }

  private buildAll(): void {
    const sw = this.netns('u');
    ip(sw, 'link', 'add', 'sw', 'mtu', String(UNDERLAY_MTU), 'type', 'bridge');
    ip(sw, 'link', 'set', 'sw', 'up');
    const hosts = [0, 1].map((i) => {
      const h = this.netns(`h${i}`);
      run(['ip', 'netns', 'exec', h, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      ip(sw, 'link', 'add', `p${i}`, 'mtu', String(UNDERLAY_MTU), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h);
      ip(sw, 'link', 'set', `p${i}`, 'master', 'sw', 'up');
      ip(h, 'addr', 'add', `198.18.0.${i + 1}/24`, 'dev', 'eth0');
      ip(h, 'link', 'set', 'eth0', 'up');
      return { ns: h, ip: `198.18.0.${i + 1}` };
    });
    const [h0, h1] = hosts as [Endpoint, Endpoint];
    if (this.shape === 'macvlan') {
      const ends = hosts.map((h, i) => this.macvlanContainer(h, i));
      [this.client, this.server] = ends as [Endpoint, Endpoint];
      return;
    }
    const mtu = this.shape === 'vxlan' ? REFERENCE_VXLAN.mtu : UNDERLAY_MTU;
    const ends = hosts.map((h, i) => this.bridgedContainer(h, i, mtu));
    [this.client, this.server] = ends as [Endpoint, Endpoint];
    if (this.shape === 'vxlan') {
      this.vxlan(h0, 0, h1, 1);
      this.vxlan(h1, 1, h0, 0);
    } else {
      ip(h0.ns, 'route', 'add', podSubnet(1), 'via', h1.ip, 'dev', 'eth0');
      ip(h1.ns, 'route', 'add', podSubnet(0), 'via', h0.ip, 'dev', 'eth0');
    }
  }

  /** cni0 on the host holding the gateway, a veth into the container (both ends at `mtu`). */
  private bridgedContainer(host: Endpoint, i: number, mtu: number): Endpoint {
    const c = this.netns(`c${i}`);
    const m = String(mtu);
    ip(host.ns, 'link', 'add', 'cni0', 'mtu', m, 'type', 'bridge');
    ip(host.ns, 'addr', 'add', `10.244.${i + 1}.1/24`, 'dev', 'cni0');
    ip(host.ns, 'link', 'set', 'cni0', 'up');
    ip(host.ns, 'link', 'add', 'veth0', 'mtu', m, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', m, 'netns', c);
    ip(host.ns, 'link', 'set', 'veth0', 'master', 'cni0', 'up');
    ip(c, 'addr', 'add', `10.244.${i + 1}.2/24`, 'dev', 'eth0');
    ip(c, 'link', 'set', 'eth0', 'up');
    ip(c, 'route', 'add', 'default', 'via', `10.244.${i + 1}.1`);
    return { ns: c, ip: `10.244.${i + 1}.2` };
  }

  /** A VXLAN device on `me` with weft's settings, programmed by hand towards `peer`. */
  private vxlan(me: Endpoint, mine: number, peer: Endpoint, theirs: number): void {
    const dev = `vx.${REFERENCE_VXLAN.vni}`;
    ip(me.ns, 'link', 'add', dev, 'address', vtepMac(mine), 'mtu', String(REFERENCE_VXLAN.mtu), 'type', 'vxlan',
      'id', String(REFERENCE_VXLAN.vni), 'local', me.ip, 'dev', 'eth0', 'dstport', String(REFERENCE_VXLAN.port),
      'nolearning', 'udpcsum', 'ttl', 'auto');
    ip(me.ns, 'link', 'set', dev, 'up');
    ip(me.ns, 'addr', 'add', `10.244.${mine + 1}.0/32`, 'dev', dev);
    const vtep = `10.244.${theirs + 1}.0`;
    ip(me.ns, 'route', 'add', podSubnet(theirs), 'via', vtep, 'dev', dev, 'onlink');
    ip(me.ns, 'neigh', 'add', vtep, 'lladdr', vtepMac(theirs), 'dev', dev, 'nud', 'permanent');
    run(['bridge', '-n', me.ns, 'fdb', 'append', vtepMac(theirs), 'dev', dev, 'dst', peer.ip, 'self', 'permanent']);
  }

  /** A bridge-mode macvlan on the host's eth0, moved into the container as its eth0. */
  private macvlanContainer(host: Endpoint, i: number): Endpoint {
    const c = this.netns(`c${i}`);
    ip(host.ns, 'link', 'add', 'mv0', 'link', 'eth0', 'type', 'macvlan', 'mode', 'bridge');
    ip(host.ns, 'link', 'set', 'mv0', 'netns', c);
    ip(c, 'link', 'set', 'mv0', 'name', 'eth0');
    ip(c, 'addr', 'add', `198.18.0.${100 + i}/24`, 'dev', 'eth0');
    ip(c, 'link', 'set', 'eth0', 'up');
    return { ns: c, ip: `198.18.0.${100 + i}` };
  }

  /**
   * Puts `script` (an nft script: weft's own agent rules) on both hosts, or with undefined removes
   * the table `inet <table>` again — to tell how much of a gap the rules alone account for.
   */
  setRules(table: string, script: string | undefined): void {
    for (const h of [this.host(0), this.host(1)]) {
      const listed = spawnSync('ip', ['netns', 'exec', h, 'nft', 'list', 'table', 'inet', table], { encoding: 'utf8' });
      if (listed.status === 0) run(['ip', 'netns', 'exec', h, 'nft', 'delete', 'table', 'inet', table]);
      if (script === undefined) continue;
      const r = spawnSync('ip', ['netns', 'exec', h, 'nft', '-f', '-'], { input: script, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`nft -f - in ${h}: ${r.stderr.trim()}`);
    }
  }

  /** Host namespace i (for reading its devices back). */
  host(i: 0 | 1): string {
    return this.name(`h${i}`);
  }

  /** Removes every namespace made, newest first (idempotent); throws if one could not go. */
  destroy(): void {
    const failed: string[] = [];
    for (const ns of this.made.splice(0).reverse()) {
      const r = spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' });
      if (r.status !== 0) failed.push(`${ns}: ${r.stderr.trim()}`);
    }
    if (failed.length > 0) throw new Error(`could not remove reference namespaces: ${failed.join('; ')}`);
  }
}

function podSubnet(i: number): string {
  return `10.244.${i + 1}.0/24`;
}

function vtepMac(i: number): string {
  return `02:77:64:62:00:0${i + 1}`;
}

/** The kernel's view of a link (`ip -d -json link show`), or undefined when it is not there. */
export interface KernelLink {
  readonly mtu: number;
  readonly kind: string | undefined;
  /** linkinfo.info_data: for vxlan id, port, learning, udp_csum, ttl … */
  readonly data: Record<string, unknown>;
}

export function kernelLink(ns: string, dev: string): KernelLink | undefined {
  const r = spawnSync('ip', ['-n', ns, '-d', '-json', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const [l] = JSON.parse(r.stdout) as { mtu: number; linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> } }[];
  if (!l) return undefined;
  return { mtu: l.mtu, kind: l.linkinfo?.info_kind, data: l.linkinfo?.info_data ?? {} };
}

/** Name of the first link of `kind` in `ns` (weft names its vxlan device after the VNI). */
export function firstLinkOfKind(ns: string, kind: string): string | undefined {
  const r = spawnSync('ip', ['-n', ns, '-d', '-json', 'link', 'show', 'type', kind], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const [l] = JSON.parse(r.stdout) as { ifname: string }[];
  return l?.ifname;
}

/**
 * Where two vxlan devices' settings differ (ignoring what is per-host by nature: the local
 * address and the lower device's index), plus the MTU; empty when they are alike.
 */
export function vxlanDifferences(weft: KernelLink, ref: KernelLink): string[] {
  const perHost = new Set(['local', 'link']);
  const keys = new Set([...Object.keys(weft.data), ...Object.keys(ref.data)]);
  const out: string[] = [];
  if (weft.mtu !== ref.mtu) out.push(`mtu weft ${weft.mtu} vs reference ${ref.mtu}`);
  for (const k of [...keys].sort()) {
    if (perHost.has(k)) continue;
    const a = JSON.stringify(weft.data[k]);
    const b = JSON.stringify(ref.data[k]);
    if (a !== b) out.push(`${k} weft ${a ?? 'absent'} vs reference ${b ?? 'absent'}`);
  }
  return out;
}

/** Removes the reference namespaces a killed run left (`${prefix}-<6 hex>-…`); returns their names. */
export function removeLeftovers(prefix: string): string[] {
  const re = new RegExp(`^${prefix}-[0-9a-f]{6}-`);
  const left = run(['ip', 'netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => re.test(n));
  for (const ns of left) spawnSync('ip', ['netns', 'del', ns]);
  return left;
}

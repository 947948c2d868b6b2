// A routed multi-rack lab for the bgp backend: R racks, each its own L2 segment (a bridge in its
// own "switch" namespace, 198.18.<rack>.0/24), joined only by a router namespace that runs BIRD 2
// as the top-of-rack/core router. Hosts in different racks share no segment, so host-gw cannot
// serve this; with bgp the router learns every host's pod subnet and forwards between racks.
//
//   switch s<k> (bridge sw) ── host h<i> eth0 198.18.<k>.<j+1>/24, default via 198.18.<k>.254
//            └─ router r<k> 198.18.<k>.254/24
//   router: lo 198.18.255.254/32 (the one address every host peers with, through its default route)
//           BIRD:  mode 'rr'   — iBGP in the cluster's AS, every host a route-reflector client
//                  mode 'ebgp' — its own AS; strips the cluster's AS from paths it sends back, so
//                               hosts (all in one AS) do not reject each other's routes as loops
//           and BIRD's kernel protocol installs the learned subnets in the router's kernel.
//   outside (optional): router up0 198.19.0.1/24 ── outside eth0 198.19.0.254/24; the router's
//           default route points there and the outside routes 198.18.0.0/15 back via the router,
//           so hosts reach it (egress, a store) through their rack router like any destination.
//
// Everything is named `${prefix}-${id}-…` and removed by destroy(), even after a half-built failure.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { type IP, formatIP, parseCidr, parseIPv4 } from '../net/ip.js';
import { writeSysctl } from '../netns/index.js';
import { NamespaceSet } from './namespace-set.js';

export const ROUTER_LOOPBACK = '198.18.255.254';
export const DEFAULT_CLUSTER_ASN = 64512;
export const DEFAULT_ROUTER_ASN = 65000;
/** The router's end of the uplink to the outside namespace, and the outside's address. */
export const ROUTER_UPLINK_IP = '198.19.0.1';
export const RACKS_OUTSIDE_IP = '198.19.0.254';
const UPLINK_PREFIX = 24;
const UNDERLAY_SUPERNET = '198.18.0.0/15';

export type RackMode = 'rr' | 'ebgp';

export interface RackHost {
  readonly index: number;
  readonly rack: number;
  readonly ns: string;
  readonly nsPath: string;
  readonly iface: 'eth0';
  readonly ip: IP;
  /** The router's address on this host's rack segment. */
  readonly gateway: IP;
}

export interface RacksOptions {
  readonly prefix: string;
  readonly racks: number;
  /** One count for every rack, or a count per rack. */
  readonly hostsPerRack: number | readonly number[];
  readonly mode?: RackMode;
  readonly clusterAsn?: number;
  readonly routerAsn?: number;
  readonly mtu?: number;
  /** Where BIRD's config, control socket and pid file go (default: a fresh temp directory). */
  readonly stateDir?: string;
  /** Also build an outside namespace behind the router (default false). */
  readonly outside?: boolean;
  /**
   * Start BIRD as a child of this process (default true). False when the caller runs it itself
   * (the lab starts it detached and records its PID) from birdConfig().
   */
  readonly startBird?: boolean;
}

/** How many hosts go into each rack: `hosts` spread as evenly as possible, earlier racks fuller. */
export function splitHosts(hosts: number, racks: number): number[] {
  return Array.from({ length: racks }, (_, k) => Math.floor(hosts / racks) + (k < hosts % racks ? 1 : 0));
}

export interface BirdSession {
  readonly name: string;
  /** BIRD's protocol state (up, start, down …). */
  readonly state: string;
  /** The BGP detail, e.g. "Established" or "Active  Socket: Connection refused". */
  readonly info: string;
}

/** The BGP rows of `birdc show protocols`. */
export function parseBirdProtocols(text: string): BirdSession[] {
  const out: BirdSession[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] !== 'BGP' || !f[0]) continue;
    // Since is one field (a time) or two (a date and a time), before Info.
    const rest = f.slice(4);
    if (rest[0] !== undefined && /^\d{4}-\d{2}-\d{2}$/.test(rest[0])) rest.shift();
    rest.shift();
    out.push({ name: f[0], state: f[3] ?? '', info: rest.join(' ') });
  }
  return out;
}

export function rackSegment(rack: number): { host(j: number): IP; router: IP } {
  return {
    host: (j) => parseIPv4(`198.18.${rack}.${j + 1}`),
    router: parseIPv4(`198.18.${rack}.254`),
  };
}

export interface BirdConfigInput {
  readonly mode: RackMode;
  readonly clusterAsn: number;
  readonly routerAsn: number;
  readonly hosts: readonly { readonly name: string; readonly ip: string }[];
}

/** BIRD 2 config for the rack router (pure, so it can be checked without a kernel). */
export function renderRackBirdConfig(c: BirdConfigInput): string {
  const localAs = c.mode === 'rr' ? c.clusterAsn : c.routerAsn;
  const exportFilter = c.mode === 'rr'
    ? 'export where source = RTS_BGP;'
    // Every host is in the cluster AS: without removing it, a host would see its own AS in the
    // path of another host's subnet and drop the route (RFC 4271 loop detection).
    : `export filter { if source != RTS_BGP then reject; bgp_path.delete(${c.clusterAsn}); accept; };`;
  const lines = [
    `router id ${ROUTER_LOOPBACK};`,
    'protocol device { scan time 5; }',
    // The rack segments, so BGP next hops (the hosts) resolve recursively through them.
    'protocol direct { ipv4; interface "r*"; }',
    // Learned pod subnets into the router's kernel, so it forwards between racks.
    'protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; merge paths on; }',
    'template bgp host {',
    `  local ${ROUTER_LOOPBACK} as ${localAs};`,
    // Sessions run between the router's loopback and the hosts' addresses (multihop by nature);
    // next hops are the hosts themselves, on the router's connected segments.
    ...(c.mode === 'ebgp' ? ['  multihop 2;'] : ['  rr client;', `  rr cluster id ${ROUTER_LOOPBACK};`]),
    '  hold time 9;',
    '  connect retry time 2;',
    '  error wait time 1, 5;',
    '  graceful restart on;',
    '  graceful restart time 60;',
    `  ipv4 { import all; ${exportFilter} gateway recursive; ${c.mode === 'ebgp' ? 'next hop self;' : ''} };`,
    '}',
  ];
  for (const h of c.hosts) lines.push(`protocol bgp ${h.name} from host { neighbor ${h.ip} as ${c.clusterAsn}; }`);
  return lines.join('\n') + '\n';
}

/** BIRD 2 running in a namespace with its own control socket; stopped by PID. */
export class Bird {
  private constructor(
    readonly ns: string,
    readonly socket: string,
    private readonly proc: ChildProcess,
    private readonly err: () => string,
  ) {}

  static async start(ns: string, dir: string, config: string, timeoutMs = 10_000): Promise<Bird> {
    mkdirSync(dir, { recursive: true });
    const conf = join(dir, 'bird.conf');
    const socket = join(dir, 'bird.ctl');
    writeFileSync(conf, config);
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const proc = spawn('ip', ['netns', 'exec', ns, 'bird', '-f', '-c', conf, '-s', socket, '-P', join(dir, 'bird.pid')], { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    proc.stderr?.on('data', (c: Buffer) => { err += c.toString(); });
    const b = new Bird(ns, socket, proc, () => err);
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        b.birdc('show', 'status');
        return b;
      } catch {
        if (proc.exitCode !== null || Date.now() > until) {
          await b.stop();
          throw new WeftError(CniCode.InvalidEnvironment, `BIRD in ${ns} did not start: ${err.trim() || 'no control socket'}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  birdc(...args: string[]): string {
    return execFileSync('birdc', ['-s', this.socket, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  get stderr(): string {
    return this.err();
  }

  /** Prefixes in BIRD's table (optionally only from one protocol). */
  routes(protocol?: string): string[] {
    const out = this.birdc('show', 'route', ...(protocol ? ['protocol', protocol] : []));
    return [...new Set([...out.matchAll(/^(\d+\.\d+\.\d+\.\d+\/\d+)/gm)].map((m) => m[1] as string))].sort();
  }

  /** protocol name → state text (e.g. "Established"), for the BGP protocols. */
  sessions(): Map<string, string> {
    return new Map(parseBirdProtocols(this.birdc('show', 'protocols')).map((s) => [s.name, s.info || s.state]));
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    try { process.kill(p.pid, 'SIGTERM'); } catch { return; }
    const t = setTimeout(() => { try { if (p.pid !== undefined) process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }, 3000);
    await gone;
    clearTimeout(t);
  }
}

export class RackTopology {
  private readonly namespaces: NamespaceSet;
  readonly id: string;
  readonly hosts: RackHost[] = [];
  readonly router: string;
  /** One switch namespace per rack. */
  readonly switches: string[] = [];
  /** The outside namespace (when asked for). */
  readonly outside: string | undefined;
  readonly outsideIP = parseIPv4(RACKS_OUTSIDE_IP);
  readonly routerLoopback = parseIPv4(ROUTER_LOOPBACK);
  readonly mode: RackMode;
  readonly clusterAsn: number;
  readonly routerAsn: number;
  private bird_: Bird | undefined;
  private readonly stateDir: string;
  private readonly ownStateDir: boolean;

  private constructor(private readonly opts: RacksOptions) {
    this.namespaces = new NamespaceSet(opts.prefix);
    this.id = this.namespaces.id;
    this.router = this.name('r');
    this.outside = opts.outside ? this.name('o') : undefined;
    this.mode = opts.mode ?? 'rr';
    this.clusterAsn = opts.clusterAsn ?? DEFAULT_CLUSTER_ASN;
    this.routerAsn = this.mode === 'rr' ? this.clusterAsn : opts.routerAsn ?? DEFAULT_ROUTER_ASN;
    this.ownStateDir = opts.stateDir === undefined;
    this.stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), `${opts.prefix}-racks-`));
  }

  private name(what: string): string {
    return this.namespaces.name(what);
  }

  private ns(name: string): string {
    return this.namespaces.create(name);
  }

  static async create(opts: RacksOptions): Promise<RackTopology> {
    if (opts.racks < 1 || opts.racks > 250) throw new WeftError(CniCode.InvalidEnvironment, `racks: racks must be 1..250, got ${opts.racks}`);
    const sizes = typeof opts.hostsPerRack === 'number' ? Array<number>(opts.racks).fill(opts.hostsPerRack) : opts.hostsPerRack;
    if (sizes.length !== opts.racks) throw new WeftError(CniCode.InvalidEnvironment, `racks: ${sizes.length} rack sizes for ${opts.racks} racks`);
    for (const n of sizes) if (n < 1 || n > 200) throw new WeftError(CniCode.InvalidEnvironment, `racks: hosts per rack must be 1..200, got ${n}`);
    const t = new RackTopology(opts);
    try {
      t.build(sizes);
      if (opts.startBird ?? true) t.bird_ = await Bird.start(t.router, t.stateDir, t.birdConfig());
    } catch (err) {
      await t.destroy().catch(() => {});
      throw err;
    }
    return t;
  }

  /** BIRD's config for this router: one session per host. */
  birdConfig(): string {
    return renderRackBirdConfig({
      mode: this.mode, clusterAsn: this.clusterAsn, routerAsn: this.routerAsn,
      hosts: this.hosts.map((h) => ({ name: `h${h.index}`, ip: formatIP(h.ip) })),
    });
  }

  get bird(): Bird {
    if (!this.bird_) throw new WeftError(CniCode.Internal, 'racks: BIRD is not running');
    return this.bird_;
  }

  private build(sizes: readonly number[]): void {
    const mtu = this.opts.mtu ?? 1500;
    const routerPath = this.ns(this.router);
    writeSysctl('net.ipv4.ip_forward', 1, routerPath);
    Netlink.with(routerPath, (nl) => nl.addAddress('lo', { ip: this.routerLoopback, prefix: 32 }));
    if (this.outside !== undefined) this.buildUplink(routerPath, this.outside, mtu);
    let index = 0;
    for (let k = 0; k < this.opts.racks; k++) {
      const seg = rackSegment(k);
      const sw = this.name(`s${k}`);
      const swPath = this.ns(sw);
      this.switches.push(sw);
      Netlink.with(swPath, (nl) => {
        nl.createBridge({ name: 'sw', mtu, up: true });
        nl.createVeth({ name: 'pr', peerName: `r${k}`, peerNsPath: routerPath, mtu, up: true });
        nl.setLink('pr', { master: 'sw' });
        Netlink.with(routerPath, (r) => {
          r.addAddress(`r${k}`, { ip: seg.router, prefix: 24 });
          r.setLink(`r${k}`, { up: true });
        });
        for (let j = 0; j < (sizes[k] ?? 0); j++, index++) {
          const ns = this.name(`h${index}`);
          const path = this.ns(ns);
          writeSysctl('net.ipv4.ip_forward', 1, path);
          const ip = seg.host(j);
          nl.createVeth({ name: `p${j}`, peerName: 'eth0', peerNsPath: path, mtu, up: true });
          nl.setLink(`p${j}`, { master: 'sw' });
          Netlink.with(path, (h) => {
            h.addAddress('eth0', { ip, prefix: 24 });
            h.setLink('eth0', { up: true });
            h.addRoute({ dst: 'default', gateway: seg.router });
          });
          this.hosts.push({ index, rack: k, ns, nsPath: path, iface: 'eth0', ip, gateway: seg.router });
        }
      });
    }
  }

  /** A point-to-point segment router ↔ outside; not named r* so BIRD's direct protocol skips it. */
  private buildUplink(routerPath: string, outside: string, mtu: number): void {
    const outsidePath = this.ns(outside);
    const uplink = parseIPv4(ROUTER_UPLINK_IP);
    Netlink.with(routerPath, (r) => r.createVeth({ name: 'up0', peerName: 'eth0', peerNsPath: outsidePath, mtu, up: true }));
    Netlink.with(outsidePath, (o) => {
      o.addAddress('eth0', { ip: this.outsideIP, prefix: UPLINK_PREFIX });
      o.setLink('eth0', { up: true });
    });
    Netlink.with(routerPath, (r) => {
      r.addAddress('up0', { ip: uplink, prefix: UPLINK_PREFIX });
      r.addRoute({ dst: 'default', gateway: this.outsideIP });
    });
    // Back to the hosts only: pod networks stay unknown outside (egress is masqueraded).
    Netlink.with(outsidePath, (o) => o.addRoute({ dst: parseCidr(UNDERLAY_SUPERNET), gateway: uplink }));
  }

  /** The network config's Backend section that makes the hosts peer with this router. */
  backendConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
    return this.mode === 'rr'
      ? { Type: 'bgp', ASN: this.clusterAsn, RouteReflector: true, Peers: [{ Address: ROUTER_LOOPBACK, ASN: this.clusterAsn }], ...extra }
      // No node mesh: with it, every host would pass the others' subnets to the router with
      // itself as next hop, and the router could pick a host of the wrong rack (a loop).
      : { Type: 'bgp', ASN: this.clusterAsn, NodeMesh: false, Peers: [{ Address: ROUTER_LOOPBACK, ASN: this.routerAsn }], ...extra };
  }

  host(i: number): RackHost {
    const h = this.hosts[i];
    if (!h) throw new WeftError(CniCode.InvalidEnvironment, `racks: no host ${i}`);
    return h;
  }

  describe(): string {
    return `router ${this.router} (${ROUTER_LOOPBACK}, BIRD ${this.mode}); ` + this.hosts.map((h) => `rack ${h.rack}: ${h.ns} ${formatIP(h.ip)}`).join(', ');
  }

  /** Stops BIRD and removes every namespace made (idempotent). */
  async destroy(): Promise<void> {
    const errors: unknown[] = [];
    await this.bird_?.stop().catch((e: unknown) => errors.push(e));
    this.bird_ = undefined;
    errors.push(...this.namespaces.removeAll());
    if (this.ownStateDir) rmSync(this.stateDir, { recursive: true, force: true });
    if (errors.length > 0) throw new AggregateError(errors, 'racks: could not remove everything');
  }
}

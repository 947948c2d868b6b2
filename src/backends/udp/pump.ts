// Typed handle on the native packet pump (native/udp_pump.cc): two threads that move packets
// between the TUN device and the UDP socket without touching the JS thread. TypeScript only
// hands it a new peer table when the leases change and reads its counters for /metrics.
import { CniCode, WeftError } from '../../errors.js';
import { ipToBytes, networkOf, type Cidr, type IP } from '../../net/ip.js';
import { native } from '../../netlink/native.js';

/**
 * Where packets for one peer subnet go: an IPv4 or IPv6 subnet, to the peer's address of either
 * family (an IPv6 peer address needs a pump started with ipv6).
 */
export interface PumpRoute {
  readonly subnet: Cidr;
  readonly peerIP: IP;
  readonly peerPort: number;
}

/** Cumulative counters since the pump started. tx: TUN → UDP; rx: UDP → TUN. */
export interface PumpStats {
  readonly txPackets: number;
  readonly txBytes: number;
  readonly rxPackets: number;
  readonly rxBytes: number;
  /** Packets from the TUN whose destination is in no peer's subnet (IPv6 link-local multicast included). */
  readonly dropNoRoute: number;
  /** Packets neither IPv4 nor IPv6 either way, and datagrams that are not exactly one packet. */
  readonly dropMalformed: number;
  /** Datagrams the kernel refused to send (e.g. peer unreachable). */
  readonly sendErrors: number;
  readonly tunErrors: number;
  readonly recvErrors: number;
  /** Offload: TCP super-packets (TSO) the kernel handed over through the TUN device. */
  readonly txGsoPackets: number;
  /** Offload: MTU-sized segments cut from those super-packets (each one datagram). */
  readonly txGsoSegments: number;
  /** Offload: receives in which UDP GRO had joined several datagrams. */
  readonly rxGroBatches: number;
  /** Offload: datagrams inside those receives. */
  readonly rxGroSegments: number;
  /** Writes to the TUN device; rxPackets / rxTunWrites is the packets carried per write. */
  readonly rxTunWrites: number;
  /** Offload: writes that carried several TCP segments merged into one super-packet. */
  readonly rxTunGsoWrites: number;
}

export const PUMP_STAT_NAMES: readonly (keyof PumpStats)[] = [
  'txPackets', 'txBytes', 'rxPackets', 'rxBytes', 'dropNoRoute', 'dropMalformed', 'sendErrors', 'tunErrors', 'recvErrors',
  'txGsoPackets', 'txGsoSegments', 'rxGroBatches', 'rxGroSegments', 'rxTunWrites', 'rxTunGsoWrites',
];

declare const pumpBrand: unique symbol;
type NativePump = { readonly [pumpBrand]: true };

interface PumpAddon {
  udpPumpStart(tunFd: number, port: number, nsPath: string | null, offload: boolean, ipv6: boolean): NativePump;
  udpPumpSetRoutes(pump: NativePump, table: Uint8Array): number;
  udpPumpStats(pump: NativePump): PumpStats;
  udpPumpStop(pump: NativePump): void;
  tunSetPersist(fd: number, persist: boolean): void;
  udpPumpRouteFor(table: Uint8Array, packet: Uint8Array, ipv6Socket: boolean): PumpDestination | 'noRoute' | 'malformed';
  udpPumpWholePacket(datagram: Uint8Array): boolean;
  udpPumpSegment(packet: Uint8Array, mss: number): Uint8Array[] | null;
  udpPumpCoalesce(datagrams: readonly Uint8Array[]): TunWrite[];
}

function addon(): PumpAddon {
  return native() as unknown as PumpAddon;
}

export const ROUTE_RECORD_BYTES = 40;

/**
 * The wire form the pump reads, 40 bytes per route: the subnet's family (4 or 6), its prefix
 * length, UDP port (2 bytes BE), the peer address's family (4 or 6), three zero bytes, the
 * subnet's network (16 bytes BE; an IPv4 one in the first 4) and the peer address (likewise).
 */
export function encodeRoutes(routes: readonly PumpRoute[]): Uint8Array {
  const buf = Buffer.alloc(routes.length * ROUTE_RECORD_BYTES);
  routes.forEach((r, i) => {
    const at = i * ROUTE_RECORD_BYTES;
    buf.writeUInt8(r.subnet.ip.family, at);
    buf.writeUInt8(r.subnet.prefix, at + 1);
    buf.writeUInt16BE(r.peerPort, at + 2);
    buf.writeUInt8(r.peerIP.family, at + 4);
    ipToBytes(networkOf(r.subnet).ip).copy(buf, at + 8);
    ipToBytes(r.peerIP).copy(buf, at + 24);
  });
  return buf;
}

export class UdpPump {
  private handle: NativePump | undefined;

  private constructor(handle: NativePump) {
    this.handle = handle;
  }

  /**
   * Binds 0.0.0.0:port inside nsPath's namespace (the caller's when undefined) and starts the
   * threads; with ipv6, [::]:port as one dual-stack socket, so routes may name peers of either
   * family. tunFd must stay open until stop() returned. offload: tunFd was opened with
   * IFF_VNET_HDR; the pump enables TSO on it and UDP GRO on the socket, segments TCP
   * super-packets itself (sent with UDP GSO) and merges the received segments of each TCP flow
   * back into super-packets for the TUN. Either way each datagram carries one IP packet.
   */
  static start(tunFd: number, port: number, nsPath: string | undefined, offload: boolean, ipv6 = false): UdpPump {
    try {
      return new UdpPump(addon().udpPumpStart(tunFd, port, nsPath ?? null, offload, ipv6));
    } catch (err) {
      throw WeftError.wrap(err, CniCode.IoFailure, `start udp pump on ${ipv6 ? '[::]' : '0.0.0.0'}:${port}`);
    }
  }

  get running(): boolean {
    return this.handle !== undefined;
  }

  /** Replaces the whole peer table at once; returns how many routes the pump now holds. */
  setRoutes(routes: readonly PumpRoute[]): number {
    return addon().udpPumpSetRoutes(this.live(), encodeRoutes(routes));
  }

  stats(): PumpStats {
    return addon().udpPumpStats(this.live());
  }

  /** Joins the threads and closes the socket. Idempotent. */
  stop(): void {
    if (!this.handle) return;
    addon().udpPumpStop(this.handle);
    this.handle = undefined;
  }

  private live(): NativePump {
    if (!this.handle) throw new WeftError(CniCode.Internal, 'udp pump is stopped');
    return this.handle;
  }
}

/** Keeps a TUN device alive without any open fd (so an agent restart finds it), or lets it go. */
export function setTunPersist(fd: number, persist: boolean): void {
  try {
    addon().tunSetPersist(fd, persist);
  } catch (err) {
    throw WeftError.wrap(err, CniCode.Netlink, `set tun persist=${persist}`);
  }
}

// The pump's packet logic on bytes, without threads, socket or device — the same native code the
// pump threads run, for tests.

/** Where the pump sends a datagram: the address as its socket writes it (v4-mapped behind [::]). */
export interface PumpDestination {
  readonly address: string;
  readonly port: number;
}

/** What the tx path does with an inner packet read from the TUN, given this peer table. */
export function pumpRouteFor(routes: readonly PumpRoute[], packet: Uint8Array, ipv6Socket: boolean): PumpDestination | 'noRoute' | 'malformed' {
  return addon().udpPumpRouteFor(encodeRoutes(routes), packet, ipv6Socket);
}

/** Whether the rx path writes this datagram to the TUN (exactly one IPv4 or IPv6 packet). */
export function pumpTakesDatagram(datagram: Uint8Array): boolean {
  return addon().udpPumpWholePacket(datagram);
}

/** The datagrams the offloading tx path sends for one TSO super-packet; null: dropped as malformed. */
export function pumpSegment(packet: Uint8Array, mss: number): Uint8Array[] | null {
  return addon().udpPumpSegment(packet, mss);
}

/** One write of the offloading rx path to the TUN: its virtio_net_hdr and the packet. */
export interface TunWrite {
  readonly flags: number;
  /** VIRTIO_NET_HDR_GSO_*: 0 none, 1 TCPv4, 4 TCPv6. */
  readonly gsoType: number;
  readonly hdrLen: number;
  readonly gsoSize: number;
  readonly csumStart: number;
  readonly csumOffset: number;
  readonly packet: Uint8Array;
}

/** The TUN writes of the offloading rx path for one batch of received datagrams. */
export function pumpCoalesce(datagrams: readonly Uint8Array[]): TunWrite[] {
  return addon().udpPumpCoalesce(datagrams);
}

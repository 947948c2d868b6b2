// Typed handle on the native packet pump (native/udp_pump.cc): two threads that move packets
// between the TUN device and the UDP socket without touching the JS thread. TypeScript only
// hands it a new peer table when the leases change and reads its counters for /metrics.
import { CniCode, WeftError } from '../../errors.js';
import { ipToBytes, networkOf, type Cidr, type IP } from '../../net/ip.js';
import { native } from '../../netlink/native.js';

/** Where packets for one peer subnet go. */
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
  /** Packets from the TUN whose destination is in no peer's subnet. */
  readonly dropNoRoute: number;
  /** Non-IPv4 packets either way, and datagrams larger than a packet can be. */
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
  udpPumpStart(tunFd: number, port: number, nsPath: string | null, offload: boolean): NativePump;
  udpPumpSetRoutes(pump: NativePump, table: Uint8Array): number;
  udpPumpStats(pump: NativePump): PumpStats;
  udpPumpStop(pump: NativePump): void;
  tunSetPersist(fd: number, persist: boolean): void;
}

function addon(): PumpAddon {
  return native() as unknown as PumpAddon;
}

export const ROUTE_RECORD_BYTES = 12;

/**
 * The wire form the pump reads: per route, network (4 bytes BE), prefix length, a zero byte,
 * UDP port (2 bytes BE), peer IPv4 (4 bytes BE).
 */
export function encodeRoutes(routes: readonly PumpRoute[]): Uint8Array {
  const buf = Buffer.alloc(routes.length * ROUTE_RECORD_BYTES);
  routes.forEach((r, i) => {
    if (r.subnet.ip.family !== 4 || r.peerIP.family !== 4) {
      throw new WeftError(CniCode.Internal, 'udp pump routes are IPv4 only');
    }
    const at = i * ROUTE_RECORD_BYTES;
    ipToBytes(networkOf(r.subnet).ip).copy(buf, at);
    buf.writeUInt8(r.subnet.prefix, at + 4);
    buf.writeUInt16BE(r.peerPort, at + 6);
    ipToBytes(r.peerIP).copy(buf, at + 8);
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
   * threads. tunFd must stay open until stop() returned. offload: tunFd was opened with
   * IFF_VNET_HDR; the pump enables TSO on it and UDP GRO on the socket, segments TCP
   * super-packets itself (sent with UDP GSO) and merges the received segments of each TCP flow
   * back into super-packets for the TUN. Either way each datagram carries one IP packet.
   */
  static start(tunFd: number, port: number, nsPath: string | undefined, offload: boolean): UdpPump {
    try {
      return new UdpPump(addon().udpPumpStart(tunFd, port, nsPath ?? null, offload));
    } catch (err) {
      throw WeftError.wrap(err, CniCode.IoFailure, `start udp pump on port ${port}`);
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

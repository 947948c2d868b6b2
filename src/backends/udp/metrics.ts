// Prometheus view of the pump's counters. Values are read from the native counters at scrape
// time, so the data path never calls into JS.
import { Counter, type Registry } from 'prom-client';
import { PUMP_STAT_NAMES, type PumpStats } from './pump.js';

const HELP: Record<keyof PumpStats, string> = {
  txPackets: 'Packets read from the TUN device and sent to a peer',
  txBytes: 'Bytes of inner packets sent to peers',
  rxPackets: 'Packets received from peers and written to the TUN device',
  rxBytes: 'Bytes of inner packets received from peers',
  dropNoRoute: 'Packets from the TUN device dropped because no peer owns the destination (with IPv6, also the kernel\'s few MLD reports for the device\'s link-local multicast groups)',
  dropMalformed: 'Packets neither IPv4 nor IPv6, truncated, or datagrams that are not exactly one IP packet, dropped',
  sendErrors: 'Datagrams the kernel refused to send',
  tunErrors: 'Failed reads/writes on the TUN device',
  recvErrors: 'Failed receives on the UDP socket',
  txGsoPackets: 'TCP super-packets (TSO) read from the TUN device',
  txGsoSegments: 'Segments cut from TCP super-packets read from the TUN device',
  rxGroBatches: 'Receives in which UDP GRO had joined several datagrams',
  rxGroSegments: 'Datagrams inside receives joined by UDP GRO',
  rxTunWrites: 'Writes to the TUN device',
  rxTunGsoWrites: 'Writes to the TUN device carrying several TCP segments merged into one',
};

function metricName(stat: string): string {
  return `weft_udp_${stat.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}_total`;
}

/**
 * Registers one counter per pump statistic; source() returning undefined reports nothing new.
 * Registering again on the same registry (a backend re-created in the same process) replaces the
 * previous source.
 */
export function registerUdpMetrics(registry: Registry, source: () => PumpStats | undefined): void {
  for (const stat of PUMP_STAT_NAMES) {
    registry.removeSingleMetric(metricName(stat));
    new Counter({
      name: metricName(stat),
      help: HELP[stat],
      registers: [registry],
      collect() {
        const s = source();
        if (!s) return;
        this.reset();
        this.inc(s[stat]);
      },
    });
  }
}

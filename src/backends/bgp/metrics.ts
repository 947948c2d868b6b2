// Prometheus view of the BGP speaker. Values are read from Speaker.status() at scrape time, so
// nothing is counted twice and a removed peer's series disappears with it.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { SessionStatus } from '../../bgp/index.js';

export interface BgpMetricsSource {
  sessions(): readonly SessionStatus[] | undefined;
  /** Routes the backend holds in the kernel right now. */
  kernelRoutes(): number;
  /** Route writes (replace + delete) since start. */
  kernelWrites(): number;
  /** Learned routes the import policy refused since start, by reason. */
  importRejections(): ReadonlyMap<string, number>;
}

type Labels = 'peer' | 'asn';

function perSession(name: string, help: string, registry: Registry, src: BgpMetricsSource, value: (s: SessionStatus) => number): void {
  new Gauge<Labels>({
    name, help, labelNames: ['peer', 'asn'], registers: [registry],
    collect() {
      this.reset();
      for (const s of src.sessions() ?? []) this.set({ peer: s.peer, asn: String(s.asn) }, value(s));
    },
  });
}

function perSessionCounter(name: string, help: string, registry: Registry, src: BgpMetricsSource, value: (s: SessionStatus) => number): void {
  new Counter<Labels>({
    name, help, labelNames: ['peer', 'asn'], registers: [registry],
    collect() {
      this.reset();
      for (const s of src.sessions() ?? []) this.inc({ peer: s.peer, asn: String(s.asn) }, value(s));
    },
  });
}

export function registerBgpMetrics(registry: Registry, src: BgpMetricsSource): void {
  perSession('weft_bgp_session_established', '1 when the BGP session with the peer is Established', registry, src, (s) => (s.state === 'Established' ? 1 : 0));
  perSession('weft_bgp_session_uptime_seconds', 'Seconds since the session reached Established (0 when down)', registry, src, (s) => s.uptimeSeconds);
  perSession('weft_bgp_prefixes_received', 'Prefixes currently received from the peer (Adj-RIB-In)', registry, src, (s) => s.prefixesReceived);
  perSession('weft_bgp_prefixes_rejected', 'Prefixes received from the peer that the import policy refuses (not installed, not passed on)', registry, src, (s) => s.prefixesRejected);
  perSession('weft_bgp_prefixes_sent', 'Prefixes currently advertised to the peer (Adj-RIB-Out)', registry, src, (s) => s.prefixesSent);
  perSession('weft_bgp_stale_routes', 'Routes kept from a restarting peer (graceful restart)', registry, src, (s) => s.staleRoutes);
  perSessionCounter('weft_bgp_updates_received_total', 'UPDATE messages received from the peer', registry, src, (s) => s.updatesReceived);
  perSessionCounter('weft_bgp_updates_sent_total', 'UPDATE messages sent to the peer', registry, src, (s) => s.updatesSent);
  new Gauge({
    name: 'weft_bgp_kernel_routes', help: 'BGP-learned routes installed in the kernel (proto 88)', registers: [registry],
    collect() { this.set(src.kernelRoutes()); },
  });
  new Counter<'reason'>({
    name: 'weft_bgp_import_rejections_total',
    help: 'Learned routes refused by the import policy, by reason (outside-import-ranges, overlaps-connected-subnet, contains-next-hop, contains-peer-address)',
    labelNames: ['reason'], registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of src.importRejections()) this.inc({ reason }, n);
    },
  });
  new Counter({
    name: 'weft_bgp_kernel_writes_total', help: 'Kernel route writes (replace and delete) made for BGP-learned routes', registers: [registry],
    collect() { this.reset(); this.inc(src.kernelWrites()); },
  });
}

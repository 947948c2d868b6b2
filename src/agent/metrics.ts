// weftd's Prometheus metrics, in a registry of its own (the process default registry stays
// free for whatever embeds the agent).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface AgentMetrics {
  readonly registry: Registry;
  readonly leases: Gauge;
  readonly peers: Gauge;
  readonly ready: Gauge;
  readonly reconcileRuns: Counter;
  readonly reconcileRepairs: Counter;
  readonly reconcileRemovals: Counter;
  readonly reconcileSeconds: Histogram;
  readonly errors: Counter<'kind'>;
  readonly storeSeconds: Histogram<'op'>;
}

export function createAgentMetrics(): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'weftd_' });
  const registers = [registry];
  return {
    registry,
    leases: new Gauge({ name: 'weft_leases', help: 'Subnet leases known in the store (own included)', registers }),
    peers: new Gauge({ name: 'weft_peers', help: 'Remote hosts programmed into the dataplane', registers }),
    ready: new Gauge({ name: 'weft_ready', help: '1 when lease, subnet.env, rules and backend are in place', registers }),
    reconcileRuns: new Counter({ name: 'weft_reconcile_runs_total', help: 'Reconcile passes (after lease events and by the repair loop)', registers }),
    reconcileRepairs: new Counter({ name: 'weft_reconcile_repairs_total', help: 'Kernel objects written because they were missing or wrong', registers }),
    reconcileRemovals: new Counter({ name: 'weft_reconcile_removals_total', help: 'Kernel objects removed because no current peer needs them', registers }),
    reconcileSeconds: new Histogram({ name: 'weft_reconcile_seconds', help: 'Duration of one reconcile pass', buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2], registers }),
    errors: new Counter({ name: 'weft_errors_total', help: 'Errors by kind (reconcile, store, rules, backend)', labelNames: ['kind'] as const, registers }),
    storeSeconds: new Histogram({ name: 'weft_store_request_seconds', help: 'Store request latency', labelNames: ['op'] as const, buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 5], registers }),
  };
}

// What weftd asks of a backend. The agent owns the lease and the watch; a backend turns the set
// of peer leases into dataplane state and keeps it there. Backends register themselves in
// ./registry.ts next to their config schema (src/store/backend-registry.ts holds the schemas).
import type { Netlink, Link } from '../netlink/index.js';
import type { Cidr, IP } from '../net/ip.js';
import type { Lease } from '../store/lease.js';
import type { NetworkConfig } from '../store/config.js';
import type { Logger } from '../log.js';
import type { Registry } from 'prom-client';

/** Where this host stands, as the agent worked it out before asking the backend. */
export interface HostContext {
  /** Netlink handle on the agent's own (host) namespace. */
  readonly nl: Netlink;
  readonly network: NetworkConfig;
  readonly publicIP: IP;
  /** The interface carrying publicIP (the underlay). */
  readonly publicIface: Link;
  readonly log: Logger;
  /** weftd's metrics registry, for backends with metrics of their own (served on /metrics). */
  readonly registry?: Registry;
}

/** What a backend needs settled before the lease is written. */
export interface BackendPreparation {
  /** Goes into the lease as BackendData (e.g. vxlan's {VtepMAC}); undefined for none. */
  readonly backendData: unknown;
  /** MTU for containers: the underlay's MTU minus the backend's overhead, or the config's MTU. */
  readonly mtu: number;
}

/** The outcome of one reconcile pass, for logs, metrics and /readyz. */
export interface ReconcileReport {
  /** Kernel objects that were missing or wrong and were written. */
  readonly repairs: number;
  /** Kernel objects that belonged to no current peer and were removed. */
  readonly removals: number;
  /** Problems that need an operator (e.g. host-gw peer not on this L2 segment). */
  readonly problems: readonly string[];
}

export interface ReconcileOptions {
  /**
   * false: only lease events happened since the last pass, so a backend may write just the
   * difference to what it last wrote; true (start-up, repair pass): re-check the kernel itself.
   * Default true.
   */
  readonly full?: boolean;
}

export interface Backend {
  readonly type: string;
  /** Creates the backend's devices (idempotent: a restarted agent finds them in place). */
  prepare(host: HostContext): Promise<BackendPreparation>;
  /** Called once the lease is held: e.g. put the subnet's address on the VXLAN device. */
  activate(ownSubnet: Cidr): Promise<void>;
  /**
   * Makes the dataplane equal to the desired state for exactly these peers (own lease
   * excluded). Called after watch events (batched) and by the periodic repair loop.
   */
  reconcile(peers: readonly Lease[], opts?: ReconcileOptions): Promise<ReconcileReport>;
  /**
   * Stops the backend's own work (threads, sockets). keepDataplane: leave routes and devices in
   * place so traffic keeps flowing across an agent restart.
   */
  close(opts: { keepDataplane: boolean }): Promise<void>;
  /** Backend-specific state as JSON, served by weftd at /<type>/status (e.g. /bgp/status). */
  status?(): unknown;
}

export type BackendFactory = (settings: unknown) => Backend;

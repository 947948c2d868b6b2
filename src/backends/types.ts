// What weftd asks of a backend. The agent owns the lease and the watch; a backend turns the set
// of peer leases into dataplane state and keeps it there. Each backend is one BackendModule (its
// config keys, its lease data and its factory) listed in ./registry.ts.
import type { z } from 'zod';
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
  /** The host's IPv4 underlay address, or its IPv6 one on an IPv6-only underlay. */
  readonly publicIP: IP;
  /** The host's IPv6 underlay address when the network has IPv6 (tunnels, next hops). */
  readonly publicIPv6?: IP | undefined;
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
  /** Goes into the lease as BackendV6Data (e.g. the IPv6 VXLAN device's VtepMAC). */
  readonly backendV6Data?: unknown;
  /** What the IPv6 dataplane carries, when the network has IPv6 (FLANNEL_IPV6_MTU). */
  readonly ipv6Mtu?: number;
}

/** A peer given to reconcile that the backend did not program, and why. */
export interface SkippedPeer {
  /** The peer's subnet, as formatCidr writes it. */
  readonly subnet: string;
  /** Why: the same text as the problem the pass reports for this peer. */
  readonly reason: string;
}

/** The outcome of one reconcile pass, for logs, metrics, /readyz and /peers. */
export interface ReconcileReport {
  /** Kernel objects that were missing or wrong and were written. */
  readonly repairs: number;
  /** Kernel objects that belonged to no current peer and were removed. */
  readonly removals: number;
  /** Problems that need an operator (e.g. host-gw peer not on this L2 segment). */
  readonly problems: readonly string[];
  /**
   * The peers of this pass that have no dataplane state from it (another backend, unusable
   * BackendData, not reachable, no route learnt …): every other peer given to reconcile is
   * programmed. weftd's /peers is built from it.
   */
  readonly skipped: readonly SkippedPeer[];
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
  /**
   * Called once the lease is held: e.g. put the subnet's address on the VXLAN device. ownSubnet
   * is the lease's identity subnet (IPv4, or IPv6 on an IPv6-only network); ownIPv6Subnet its
   * IPv6 subnet, if it has one.
   */
  activate(ownSubnet: Cidr, ownIPv6Subnet?: Cidr): Promise<void>;
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

/**
 * Everything weft knows about one backend type, in one place: the config parser, the lease
 * watcher's peers and the agent's factory all go through it, so nothing parses its keys twice.
 */
export interface BackendModule<T extends string = string, C = unknown, D = unknown> {
  readonly type: T;
  /**
   * The keys of the network config's `Backend` other than `Type`, with their defaults. Strict
   * (unknown keys are rejected); the parser turns its first issue into a message naming the key.
   */
  readonly config: z.ZodType<C, z.ZodTypeDef, unknown>;
  /**
   * What nodes running this backend publish as the lease's BackendData. The store keeps that data
   * opaque; a running backend checks each peer's once (src/backends/lease-data.ts).
   */
  readonly leaseData: z.ZodType<D, z.ZodTypeDef, unknown>;
  /**
   * True when data certainly passes leaseData as it is (the shape every node writes): a backend
   * facing thousands of peers in a burst skips zod's object parse; false still goes to the schema,
   * whose message names what is wrong.
   */
  readonly leaseDataIsPlain?: (data: unknown) => boolean;
  /** A backend for an already-parsed config (never throws on its keys: the parser checked them). */
  create(config: C): Backend;
  /** The backend carries IPv6 pod traffic (dual-stack and IPv6-only networks); absent: IPv4 only. */
  readonly ipv6?: boolean;
}

/** Any module, whatever its config and data types (method bivariance lets the list hold them all). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyBackendModule = BackendModule<string, any, any>;

// What the web view shows, as one JSON document: the server (src/ui/server.ts) builds it from the
// store and the agents, the page (src/ui/web/) draws it. Both import this file, so the page and
// the server cannot disagree on a field. Pure: no Node and no DOM here.

/** Bumped when a field changes meaning; the page refuses a model of another version. */
export const UI_MODEL_VERSION = 1;

/** How one host's weftd is doing, as the view learnt it. */
export type UiAgent =
  /** weftd answered; `missing` lists the other hosts' ids (subnets) it has not programmed. */
  | {
    readonly state: 'ready' | 'not-ready';
    readonly detail: string;
    /** Peers in the host's dataplane. */
    readonly programmed: number;
    /** Ids of hosts in this model whose subnet this agent has not programmed (sorted). */
    readonly missing: readonly string[];
    /** What weftd says needs an operator (its /readyz problems). */
    readonly problems: readonly string[];
  }
  /** weftd could not be reached (refused, no socket, no answer in time): nothing keeps this host's side of its links. */
  | { readonly state: 'down'; readonly detail: string }
  /**
   * The view has no way to ask this host's weftd (e.g. a lease written by another tool), or what
   * answered was not weftd's /peers (an older weftd, another program on the port).
   */
  | { readonly state: 'unknown'; readonly detail: string };

export interface UiBgpSession {
  readonly peer: string;
  readonly asn: number;
  readonly state: string;
  readonly uptimeSeconds: number;
  readonly prefixesReceived: number;
  readonly prefixesSent: number;
}

export interface UiHost {
  /** The lease's subnet as text (10.244.3.0/24): unique, and what links and pods refer to. */
  readonly id: string;
  /** The node name where known (its weftd, its pods' endpoints, the lab), else the public IP. */
  readonly name: string;
  readonly subnet: string;
  /** The lease's IPv6 subnet on a dual-stack network (on an IPv6-only one it is `subnet`). */
  readonly ipv6Subnet?: string;
  readonly publicIP: string;
  /** The host's IPv6 underlay address, where its lease publishes one beside an IPv4 PublicIP. */
  readonly publicIPv6?: string;
  /** The lease's BackendType. */
  readonly backend: string;
  /** Epoch ms; null for a reservation; undefined when the store did not say. */
  readonly expiresAt?: number | null;
  readonly agent: UiAgent;
  /** BGP sessions of this host's weftd (bgp backend only). */
  readonly bgp?: { readonly asn: number; readonly sessions: readonly UiBgpSession[] };
  /**
   * Bytes of pod traffic this host forwarded to (tx) and from (rx) each peer host, by the peer's
   * id, since its counters began (weftd's GET /traffic); the page turns two models into a rate.
   */
  readonly traffic?: Readonly<Record<string, { readonly tx: number; readonly rx: number }>>;
}

/** A connection a NetworkPolicy dropped, as a node's flow records tell it (weftctl flows). */
export interface UiDrop {
  readonly src: { readonly ip: string; readonly namespace?: string; readonly pod?: string };
  readonly dst: { readonly ip: string; readonly namespace?: string; readonly pod?: string };
  readonly proto: string;
  readonly dstPort: number;
  /** The policies isolating the pod ("ns/name", comma-separated). */
  readonly policy?: string;
  readonly packets: number;
  /** The last drop, ISO 8601. */
  readonly at: string;
  readonly node: string;
}

export interface UiPod {
  /** namespace/pod */
  readonly id: string;
  readonly namespace: string;
  readonly pod: string;
  /** The node name the store files the pod under. */
  readonly node: string;
  /** The id of the host whose subnet holds the pod's first address; undefined if none does. */
  readonly hostId?: string;
  readonly ips: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** Ids of the policies selecting the pod. */
  readonly policies: readonly string[];
  /** Whether some policy isolates the pod for ingress / egress (Kubernetes semantics). */
  readonly isolated: { readonly ingress: boolean; readonly egress: boolean };
}

export interface UiPolicy {
  /** namespace/name */
  readonly id: string;
  readonly namespace: string;
  readonly name: string;
  readonly types: readonly ('Ingress' | 'Egress')[];
  /** Ids of the pods the policy selects. */
  readonly selects: readonly string[];
}

export interface UiModel {
  readonly version: typeof UI_MODEL_VERSION;
  /** Increases with every model the server sends. */
  readonly seq: number;
  /** When it was built, epoch ms. */
  readonly at: number;
  readonly source: {
    /** "lab demo", "store etcd http://…" — no credentials. */
    readonly label: string;
    readonly store: 'file' | 'etcd' | 'kube';
  };
  /** The network config; undefined when the store has none. */
  readonly network?: { readonly cidr: string; readonly backend: string };
  /** Sorted by subnet. */
  readonly hosts: readonly UiHost[];
  readonly pods: readonly UiPod[];
  readonly policies: readonly UiPolicy[];
  /** Things the view could not read (the store down, a garbage lease). */
  readonly problems: readonly string[];
  /** The latest connections policies dropped, newest first (at most 50; weftds with flow records). */
  readonly drops?: readonly UiDrop[];
}

/** One end of a link, seen from host `from` toward host `to`. */
export type LinkSide = 'programmed' | 'missing' | 'down' | 'unknown';

export function linkSide(from: UiHost, to: UiHost): LinkSide {
  const a = from.agent;
  if (a.state === 'down' || a.state === 'unknown') return a.state;
  return a.missing.includes(to.id) ? 'missing' : 'programmed';
}

/**
 * A link between two hosts: ok when both ends have programmed each other; one-sided when one has
 * and the other's weftd is down or lacks it; broken when no end that could be asked has it;
 * unknown when that cannot be told — no end can be asked, or only one, which has it.
 */
export type LinkState = 'ok' | 'one-sided' | 'broken' | 'unknown';

export function linkState(a: UiHost, b: UiHost): LinkState {
  const ab = linkSide(a, b);
  const ba = linkSide(b, a);
  if (ab === 'programmed' && ba === 'programmed') return 'ok';
  const known = [ab, ba].filter((s) => s !== 'unknown');
  if (known.length === 0) return 'unknown';
  if (known.every((s) => s !== 'programmed')) return 'broken';
  return known.length === 2 ? 'one-sided' : 'unknown';
}

/** What POST /api/doctor takes: two pods (namespace/pod, name or IP) and what to probe. */
export interface UiDoctorRequest {
  readonly src: string;
  readonly dst: string;
  readonly protocol?: 'ICMP' | 'TCP' | 'UDP' | 'SCTP';
  readonly port?: number;
}

/** One hop as `weftctl doctor --json` prints it. */
export interface UiDoctorHop {
  readonly id: string;
  readonly where: string;
  readonly title: string;
  readonly status: 'ok' | 'fail' | 'warn' | 'skip';
  readonly detail: string;
  readonly cause?: string;
  readonly fix?: string;
}

/** What POST /api/doctor answers: doctor's report, with the hosts of both ends as model ids. */
export interface UiDoctorReport {
  readonly src: { readonly name: string; readonly ip: string; readonly node: string | undefined; readonly hostId: string | undefined };
  readonly dst: { readonly name: string; readonly ip: string; readonly node: string | undefined; readonly hostId: string | undefined };
  readonly hops: readonly UiDoctorHop[];
  readonly ok: boolean;
  readonly firstFailure: UiDoctorHop | undefined;
}

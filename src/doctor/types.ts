// The doctor's vocabulary: where things live (a node, a pod, each in some network namespace) and
// what a look at one stretch of the path found (a hop). Hops only read; a broken one says why and
// how to put it right.
import type { IP } from '../net/ip.js';
import type { Lease } from '../store/lease.js';
import type { SubnetEnv } from '../cni/subnet-env.js';
import type { PolicyWorld, Protocol } from '../policy/model.js';

/** A network namespace the doctor looks into: a named one (/run/netns/NAME) or its own. */
export interface Place {
  /** /run/netns/NAME; undefined = the namespace doctor runs in. */
  readonly nsName: string | undefined;
  readonly nsPath: string | undefined;
}

export interface DoctorNode extends Place {
  /** The node name weftd runs with (--node-name): endpoints in the store carry it. */
  readonly name: string;
  readonly subnetFile: string;
  /** Parsed subnet.env; undefined when it could not be read (the reason is in envError). */
  readonly env: SubnetEnv | undefined;
  readonly envError?: string;
  /** weftd's /healthz, asked inside the node's namespace; undefined = cannot be asked from here. */
  health?(): Promise<{ ok: boolean; detail: string }>;
  /** What restarts weftd here, for fixes (e.g. the lab's PID and log). */
  readonly agentHint?: string;
}

export interface DoctorPod {
  /** What the operator would call it: lab container name, namespace/pod, or container id. */
  readonly name: string;
  readonly ip: IP;
  readonly containerId: string | undefined;
  readonly ifname: string;
  /** The pod's namespace, when known (pods on other nodes are seen through the store only). */
  readonly place: Place | undefined;
  /** Its node, when doctor can look into that node. */
  readonly node: DoctorNode | undefined;
  /** Its node's name as the store knows it (endpoints/<host>/…), when known. */
  readonly nodeName: string | undefined;
}

export type HopStatus = 'ok' | 'fail' | 'warn' | 'skip';

export interface Hop {
  /** Stable identifier of the check (json consumers and tests key on it). */
  readonly id: string;
  /** Where it was looked at: "pod h0c0", "host h1", "store". */
  readonly where: string;
  readonly title: string;
  readonly status: HopStatus;
  /** What was seen. */
  readonly detail: string;
  /** For fail/warn: why traffic breaks here. */
  readonly cause?: string;
  /** For fail/warn: a concrete command or action. */
  readonly fix?: string;
}

export interface Probe {
  readonly protocol: Protocol | 'ICMP';
  readonly port: number;
}

/** Everything the hop checks may consult; read once per run. */
export interface DoctorContext {
  readonly src: DoctorPod;
  readonly dst: DoctorPod;
  readonly probe: Probe;
  /** Live leases (expired ones are absent). */
  readonly leases: readonly Lease[];
  readonly backend: { readonly type: string; readonly settings: Readonly<Record<string, unknown>> } | undefined;
  readonly world: PolicyWorld | undefined;
  /** The store flags, as an operator would type them after a weftctl command. */
  readonly storeFlags: string;
  readonly now: number;
  /** The source node's weftd /healthz answer (it keeps the backend's entries in place). */
  readonly srcAgent: { readonly ok: boolean; readonly detail: string } | undefined;
}

export interface DoctorReport {
  readonly src: { readonly name: string; readonly ip: string; readonly node: string | undefined };
  readonly dst: { readonly name: string; readonly ip: string; readonly node: string | undefined };
  readonly probe: Probe;
  readonly hops: readonly Hop[];
  readonly ok: boolean;
  /** The first failing hop: where the path breaks. */
  readonly firstFailure: Hop | undefined;
}

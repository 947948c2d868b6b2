// The Kubernetes API server as weft's subnet store (weftd --store kube), flannel's kube subnet
// manager in weft's shape: a lease is a Node — its subnet is spec.podCIDR (assigned by
// kube-controller-manager, never chosen here), its PublicIP / BackendType / BackendData are the
// Node's annotations under flannel's names, so flannel and weft nodes read each other. Nodes
// become the same raw entries the etcd and file stores hand out, so the lease watcher, the
// backends and everything above them are unchanged: list = LIST nodes, watch = WATCH nodes from
// the listing's resourceVersion, 410 Gone = `resync` (the watcher re-lists and diffs, no flap).
import { readFileSync } from 'node:fs';
import { CniCode, WeftError } from '../../errors.js';
import { createLogger, type Logger } from '../../log.js';
import { type Cidr, cidrEquals, formatCidr, subnetKey, tryParseCidr } from '../../net/ip.js';
import { KubeClient } from '../../kube/client.js';
import { resolveKubeConnection } from '../../kube/config.js';
import { Informer, type KubeObject, listAll } from '../../kube/informer.js';
import { parseLeaseValue } from '../lease.js';
import type { LeaseManagerOptions, SubnetLeaser } from '../lease-manager.js';
import type { HeldEntry, ListOptions, RawEntry, RawWatch, RenewResult, StoreEvent, SubnetStore, WatchState, WriteResult } from '../types.js';
import { KubeLeaser } from './kube-leaser.js';

export const NODES = '/api/v1/nodes';

export interface NodeObject extends KubeObject {
  readonly spec?: { readonly podCIDR?: string; readonly podCIDRs?: readonly string[] };
}

export interface KubeStoreOptions {
  /** kubeconfig path; undefined: $KUBECONFIG, else in-cluster. */
  readonly kubeconfig?: string;
  /** The network config file (a ConfigMap's net-conf.json). */
  readonly netConfig: string;
  readonly annotationPrefix: string;
  /** This node's Node name (weftd); weftctl lists without one. */
  readonly nodeName?: string;
  readonly log?: Logger;
  /** For tests: a server-side watch timeout. */
  readonly watchTimeoutSeconds?: number;
}

export interface NodeAnnotations {
  readonly publicIP: string;
  readonly backendType: string;
  readonly backendData: string;
  readonly subnetManager: string;
  readonly publicIPOverwrite: string;
}

export function annotationNames(prefix: string): NodeAnnotations {
  return {
    publicIP: `${prefix}/public-ip`,
    backendType: `${prefix}/backend-type`,
    backendData: `${prefix}/backend-data`,
    subnetManager: `${prefix}/kube-subnet-manager`,
    publicIPOverwrite: `${prefix}/public-ip-overwrite`,
  };
}

/** The Node's IPv4 pod CIDR (spec.podCIDRs may list an IPv6 one too; podCIDR is the first). */
export function nodePodCidr(node: NodeObject): Cidr | undefined {
  const all = [...(node.spec?.podCIDRs ?? []), ...(node.spec?.podCIDR !== undefined ? [node.spec.podCIDR] : [])];
  for (const s of all) {
    const c = tryParseCidr(s);
    if (c?.ip.family === 4) return c;
  }
  return undefined;
}

function revisionOf(rv: string | undefined): bigint {
  return rv !== undefined && /^\d+$/.test(rv) ? BigInt(rv) : 0n;
}

export class KubeStore implements SubnetStore {
  readonly kind = 'kube' as const;
  readonly where: string;
  readonly client: KubeClient;
  readonly names: NodeAnnotations;
  private readonly log: Logger;
  /** Node name → the subnet it was last handed out under, to turn updates into deletes. */
  private readonly published = new Map<string, Cidr>();
  /** node name → the reason its annotations were last warned about (until they are readable again). */
  private readonly warned = new Map<string, string>();

  constructor(readonly opts: KubeStoreOptions) {
    this.client = new KubeClient(resolveKubeConnection(opts.kubeconfig));
    this.where = this.client.server;
    this.names = annotationNames(opts.annotationPrefix);
    this.log = opts.log ?? createLogger({ component: 'kube-store' });
  }

  /** The network config is a file in kube mode (the ConfigMap's net-conf.json), not an API object. */
  async getConfig(): Promise<string | undefined> {
    try {
      return readFileSync(this.opts.netConfig, 'utf8');
    } catch (err) {
      throw new WeftError(CniCode.InvalidNetworkConfig, `cannot read the network config ${this.opts.netConfig} (--net-config; in a cluster, the weft-config ConfigMap's net-conf.json): ${(err as Error).message}`);
    }
  }

  async putConfig(): Promise<void> {
    throw this.readOnly(`the network config is the file ${this.opts.netConfig} (--net-config), not stored in the API`);
  }

  /** Reachability for the repair pass: /version is readable by every authenticated client. */
  async probe(): Promise<void> {
    await this.client.get('/version', { timeoutMs: 3000 });
  }

  /**
   * A Node as a raw lease entry: undefined while it has no pod CIDR or no weft/flannel
   * annotations yet (registered, agent not up). Unreadable annotations give a value the lease
   * parser rejects, so the watcher skips that node with a warning and drops what it had.
   */
  nodeEntry(node: NodeObject): RawEntry | undefined {
    const subnet = nodePodCidr(node);
    const a = node.metadata.annotations ?? {};
    const publicIP = a[this.names.publicIPOverwrite] || a[this.names.publicIP];
    const backendType = a[this.names.backendType];
    if (!subnet || !publicIP || !backendType) return undefined;
    const revision = revisionOf(node.metadata.resourceVersion);
    const rawData = a[this.names.backendData];
    let backendData: unknown = null;
    if (rawData !== undefined && rawData !== '' && rawData !== 'null') {
      try {
        backendData = JSON.parse(rawData);
      } catch {
        this.warnUnreadable(node, `annotation ${this.names.backendData} is not JSON: ${JSON.stringify(rawData.slice(0, 120))}`);
        return { subnet, value: `node ${node.metadata.name}: annotation ${this.names.backendData} is not JSON`, revision, expiresAt: null };
      }
    }
    const value = JSON.stringify({ PublicIP: publicIP, BackendType: backendType, ...(backendData !== null && { BackendData: backendData }) });
    // The lease watcher skips a value it cannot parse, but its warning can only name the subnet;
    // the operator needs the Node whose annotations to fix (a bad public-ip, backend data that is not JSON).
    const parsed = parseLeaseValue(value);
    if (parsed.ok) this.warned.delete(node.metadata.name);
    else this.warnUnreadable(node, parsed.reason);
    return { subnet, value, revision, expiresAt: null };
  }

  /**
   * Once per Node and reason: a relist, or the kubelet's status update of a Node whose annotations
   * are as wrong as before, says nothing new.
   */
  private warnUnreadable(node: NodeObject, reason: string): void {
    if (this.warned.get(node.metadata.name) === reason) return;
    this.warned.set(node.metadata.name, reason);
    this.log.warn('skipping node with unreadable annotations', { node: node.metadata.name, reason });
  }

  /** Every Node's entry, remembering which node published which subnet. */
  async listSubnets(_opts?: ListOptions): Promise<{ readonly revision: bigint; readonly entries: RawEntry[] }> {
    const { items, resourceVersion } = await listAll<NodeObject>(this.client, NODES);
    this.published.clear();
    const entries: RawEntry[] = [];
    for (const node of items) {
      const e = this.nodeEntry(node);
      if (!e) continue;
      entries.push(e);
      this.published.set(node.metadata.name, e.subnet);
    }
    return { revision: revisionOf(resourceVersion), entries };
  }

  async getSubnet(subnet: Cidr): Promise<RawEntry | undefined> {
    const { entries } = await this.listSubnets();
    const key = subnetKey(subnet);
    return entries.find((e) => subnetKey(e.subnet) === key);
  }

  /** The changes a Node event makes to the entries: a vanished or moved subnet is a delete. */
  private nodeEvents(node: NodeObject, deleted: boolean, revision: bigint): StoreEvent[] {
    const name = node.metadata.name;
    const before = this.published.get(name);
    const entry = deleted ? undefined : this.nodeEntry(node);
    if (deleted) this.warned.delete(name);
    const out: StoreEvent[] = [];
    if (before !== undefined && (entry === undefined || !cidrEquals(entry.subnet, before))) {
      out.push({ type: 'delete', subnet: before, revision });
      this.published.delete(name);
    }
    if (entry) {
      this.published.set(name, entry.subnet);
      out.push({ type: 'put', entry });
    }
    return out;
  }

  watchSubnets(afterRevision: bigint, onEvent: (ev: StoreEvent) => void, onState?: (s: WatchState) => void): RawWatch {
    const informer = new Informer<NodeObject>({
      client: this.client,
      path: NODES,
      from: afterRevision.toString(),
      log: this.log,
      ...(this.opts.watchTimeoutSeconds !== undefined && { watchTimeoutSeconds: this.opts.watchTimeoutSeconds }),
      onEvent: (ev) => {
        if (ev.type === 'snapshot') return;
        for (const e of this.nodeEvents(ev.obj, ev.type === 'delete', revisionOf(ev.resourceVersion))) onEvent(e);
      },
      onGone: (reason) => onEvent({ type: 'resync', reason }),
      onState: (s) => onState?.(s.type === 'connected' ? { type: 'connected' } : { type: 'disconnected', reason: s.reason }),
    });
    void informer.start();
    return { close: () => informer.close() };
  }

  /** weftd's own lease: the Node's podCIDR, annotated with what this host publishes. */
  createLeaser(opts: LeaseManagerOptions): SubnetLeaser {
    if (this.opts.nodeName === undefined) throw new WeftError(CniCode.InvalidEnvironment, 'kube store: the node name is needed (--node-name or WEFTD_NODE_NAME)');
    return new KubeLeaser({ ...opts, store: this, nodeName: this.opts.nodeName });
  }

  private readOnly(what: string): WeftError {
    return new WeftError(CniCode.InvalidEnvironment, `kube store: ${what}; subnets are Node.spec.podCIDR (kube-controller-manager --allocate-node-cidrs)`);
  }

  async writeSubnet(subnet: Cidr): Promise<WriteResult> {
    throw this.readOnly(`cannot write the lease ${formatCidr(subnet)}`);
  }

  async writeSubnetsIfAbsent(): Promise<WriteResult[]> {
    throw this.readOnly('cannot write leases');
  }

  async renewSubnet(held: HeldEntry): Promise<RenewResult> {
    throw this.readOnly(`cannot renew ${formatCidr(held.subnet)}`);
  }

  async releaseSubnet(): Promise<boolean> {
    return false;
  }

  async deleteSubnet(subnet: Cidr): Promise<boolean> {
    throw this.readOnly(`cannot delete ${formatCidr(subnet)} (delete the Node instead)`);
  }

  async close(): Promise<void> {
    this.client.close();
  }
}

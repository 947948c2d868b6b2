// The Kubernetes API server as weft's subnet store (weftd --store kube), flannel's kube subnet
// manager in weft's shape: a lease is a Node — its subnets are spec.podCIDRs (assigned by
// kube-controller-manager, never chosen here), its PublicIP / PublicIPv6 / BackendType /
// BackendData / BackendV6Data are the Node's annotations under flannel's names, so flannel and
// weft nodes read each other (node-lease.ts). Nodes become the same raw entries the etcd and file
// stores hand out, so the lease watcher, the backends and everything above them are unchanged:
// list = LIST nodes, watch = WATCH nodes from the listing's resourceVersion, 410 Gone = `resync`
// (the watcher re-lists and diffs, no flap).
import { readFileSync } from 'node:fs';
import { CniCode, WeftError } from '../../errors.js';
import { createLogger, type Logger } from '../../log.js';
import { type Cidr, formatCidr, leaseKey, subnetKey } from '../../net/ip.js';
import { KubeClient } from '../../kube/client.js';
import { resolveKubeConnection } from '../../kube/config.js';
import { Informer, listAll } from '../../kube/informer.js';
import { parseNetworkConfig } from '../config.js';
import type { LeaseManagerOptions, SubnetLeaser } from '../lease-manager.js';
import type { HeldEntry, ListOptions, RawEntry, RawWatch, RenewResult, StoreEvent, SubnetStore, WatchState, WriteResult } from '../types.js';
import { KubeLeaser } from './kube-leaser.js';
import { type LeaseFamilies, type NodeAnnotations, type NodeObject, annotationNames, familiesOf, nodeLeaseEntry, revisionOf } from './node-lease.js';

export { type NodeAnnotations, type NodeObject, annotationNames, nodePodCidrs } from './node-lease.js';

export const NODES = '/api/v1/nodes';

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

/** What a Node was last handed out as, to turn updates into deletes. */
interface Published {
  readonly subnet: Cidr;
  /** Both subnets: another IPv6 podCIDR under the same IPv4 one is another lease too. */
  readonly key: string;
}

function publishedAs(e: RawEntry): Published {
  return { subnet: e.subnet, key: leaseKey(e.subnet, e.ipv6Subnet) };
}

export class KubeStore implements SubnetStore {
  readonly kind = 'kube' as const;
  readonly where: string;
  readonly client: KubeClient;
  readonly names: NodeAnnotations;
  private readonly log: Logger;
  /** Node name → the lease it was last handed out as. */
  private readonly published = new Map<string, Published>();
  /** node name → the reason its annotations were last warned about (until they are readable again). */
  private readonly warned = new Map<string, string>();
  /** node name → the IPv6 half it was last said to lack (until it has it). */
  private readonly partial = new Map<string, string>();
  /**
   * The network's address families, which decide what of a Node is read: weftd's leaser hands
   * over the config it parsed; a reader without one (weftctl) reads the --net-config file once,
   * and takes every family a Node has when it cannot.
   */
  private families: LeaseFamilies | undefined;
  private familiesResolved = false;

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

  /** Called by the own node's leaser with the config weftd parsed (the same --net-config file). */
  useFamilies(families: LeaseFamilies): void {
    this.families = families;
    this.familiesResolved = true;
  }

  private leaseFamilies(): LeaseFamilies | undefined {
    if (this.familiesResolved) return this.families;
    this.familiesResolved = true;
    try {
      this.families = familiesOf(parseNetworkConfig(readFileSync(this.opts.netConfig, 'utf8')));
    } catch (err) {
      this.log.debug('no readable network config; reading every address family a Node has', { netConfig: this.opts.netConfig, reason: err instanceof Error ? err.message : String(err) });
    }
    return this.families;
  }

  /**
   * A Node as a raw lease entry: undefined while it is not a lease yet (see nodeLeaseEntry).
   * Unreadable annotations give a value the lease parser rejects, so the watcher skips that node
   * and drops what it had; the warning naming the Node and the annotation is said here.
   */
  nodeEntry(node: NodeObject): RawEntry | undefined {
    const name = node.metadata.name;
    const r = nodeLeaseEntry(node, this.names, this.leaseFamilies());
    if (!r) return undefined;
    if (r.unreadable !== undefined) this.warnUnreadable(node, r.unreadable);
    else this.warned.delete(name);
    if (r.missing === undefined) this.partial.delete(name);
    else if (r.unreadable === undefined && this.partial.get(name) !== r.missing) {
      this.partial.set(name, r.missing);
      this.log.warn('node has no IPv6 half on a dual-stack network', { node: name, reason: r.missing });
    }
    return r.entry;
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
      this.published.set(node.metadata.name, publishedAs(e));
    }
    return { revision: revisionOf(resourceVersion), entries };
  }

  async getSubnet(subnet: Cidr): Promise<RawEntry | undefined> {
    const { entries } = await this.listSubnets();
    const key = subnetKey(subnet);
    return entries.find((e) => subnetKey(e.subnet) === key);
  }

  /**
   * The changes a Node event makes to the entries: a vanished or moved subnet is a delete, and so
   * is another IPv6 subnet under the same IPv4 one (a Node re-created with another IPv6 podCIDR):
   * the watcher compares a put's attributes only, and the own node's leaser must see it go.
   */
  private nodeEvents(node: NodeObject, deleted: boolean, revision: bigint): StoreEvent[] {
    const name = node.metadata.name;
    const before = this.published.get(name);
    const entry = deleted ? undefined : this.nodeEntry(node);
    if (deleted) {
      this.warned.delete(name);
      this.partial.delete(name);
    }
    const out: StoreEvent[] = [];
    const now = entry && publishedAs(entry);
    if (before !== undefined && (now === undefined || now.key !== before.key)) {
      out.push({ type: 'delete', subnet: before.subnet, revision });
      this.published.delete(name);
    }
    if (entry && now) {
      this.published.set(name, now);
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

  /** weftd's own lease: the Node's podCIDRs, annotated with what this host publishes. */
  createLeaser(opts: LeaseManagerOptions): SubnetLeaser {
    if (this.opts.nodeName === undefined) throw new WeftError(CniCode.InvalidEnvironment, 'kube store: the node name is needed (--node-name or WEFTD_NODE_NAME)');
    this.useFamilies(familiesOf(opts.config));
    return new KubeLeaser({ ...opts, store: this, nodeName: this.opts.nodeName });
  }

  private readOnly(what: string): WeftError {
    return new WeftError(CniCode.InvalidEnvironment, `kube store: ${what}; subnets are Node.spec.podCIDRs (kube-controller-manager --allocate-node-cidrs)`);
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

// weftd's own lease in kube mode. The subnet is not ours to pick: kube-controller-manager (or
// whoever runs the cluster) writes Node.spec.podCIDR, and we wait for it, saying so. Once it is
// there we publish PublicIP / BackendType / BackendData as the Node's annotations (flannel's
// names) and mark the Node's NetworkUnavailable condition False, as flannel does. There is no TTL
// to renew: the lease lives as long as the Node. Annotations someone removes are put back; a Node
// deleted or given another podCIDR under us is fatal (pods hold addresses of the old one).
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../../backoff.js';
import { CniCode, WeftError } from '../../errors.js';
import { createLogger, type Logger } from '../../log.js';
import { type Cidr, cidrContainsCidr, cidrEquals, formatCidr, formatIP } from '../../net/ip.js';
import { KubeError } from '../../kube/client.js';
import type { Lease, LeaseAttrs } from '../lease.js';
import type { LeaseManagerOptions, ManagerStatus, SubnetLeaser } from '../lease-manager.js';
import { LeaseWatcher, type LeaseEvent, type WatcherState } from '../watch.js';
import { type KubeStore, NODES, type NodeObject, nodePodCidr } from './kube-store.js';

export interface KubeLeaserOptions extends LeaseManagerOptions {
  readonly store: KubeStore;
  readonly nodeName: string;
  /** Ceiling of the wait between looks at the Node while it has no podCIDR (default 2 s). */
  readonly pollMaxMs?: number;
}

export class KubeLeaser implements SubnetLeaser {
  readonly waitsForAssignment = true;
  private statusNow: ManagerStatus = { type: 'idle' };
  private lease: Lease | undefined;
  private stopped = false;
  private repairing: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly attrs: LeaseAttrs;
  private readonly store: KubeStore;
  private readonly path: string;

  constructor(private readonly opts: KubeLeaserOptions) {
    this.log = opts.log ?? createLogger({ component: 'kube-lease' });
    this.store = opts.store;
    this.path = `${NODES}/${encodeURIComponent(opts.nodeName)}`;
    this.attrs = { publicIP: opts.publicIP, publicIPv6: opts.publicIPv6, backendType: opts.backendType, backendData: opts.backendData ?? null };
  }

  get status(): ManagerStatus {
    return this.statusNow;
  }

  private setStatus(s: ManagerStatus): void {
    const changed = s.type !== this.statusNow.type || (s.type === 'waiting' && this.statusNow.type === 'waiting' && s.reason !== this.statusNow.reason);
    this.statusNow = s;
    if (!changed) return;
    if (s.type === 'waiting') this.log.warn('waiting for this node\'s pod subnet', { node: this.opts.nodeName, reason: s.reason });
    if (s.type === 'ready') this.log.info('lease held', { subnet: formatCidr(s.lease.subnet), node: this.opts.nodeName });
    this.opts.onStatus?.(s);
  }

  /** The annotations this node publishes (flannel's values: backend-data is JSON text). */
  private annotations(): Record<string, string> {
    const n = this.store.names;
    return {
      [n.publicIP]: formatIP(this.attrs.publicIP),
      [n.backendType]: this.attrs.backendType,
      [n.backendData]: JSON.stringify(this.attrs.backendData ?? null),
      [n.subnetManager]: 'true',
    };
  }

  /**
   * Waits (with backoff, for as long as it takes) until the Node exists and has a podCIDR, then
   * publishes this host's attributes on it. API errors are retried, each new reason logged once.
   */
  async start(): Promise<Lease> {
    const backoff = new Backoff({ initialMs: 200, maxMs: this.opts.pollMaxMs ?? 2000 });
    for (;;) {
      if (this.stopped) throw new WeftError(CniCode.Internal, 'stopped while waiting for the node\'s pod subnet');
      let node: NodeObject | undefined;
      try {
        node = await this.store.client.get<NodeObject>(this.path);
      } catch (err) {
        const reason = err instanceof KubeError && err.httpStatus === 404
          ? `Node ${this.opts.nodeName} does not exist yet (the kubelet registers it; --node-name must match)`
          : `cannot read Node ${this.opts.nodeName}: ${err instanceof Error ? err.message : String(err)}`;
        this.setStatus({ type: 'waiting', reason });
      }
      if (node) {
        const subnet = nodePodCidr(node);
        if (!subnet) {
          this.setStatus({ type: 'waiting', reason: `Node ${this.opts.nodeName} has no IPv4 spec.podCIDR yet (assigned by kube-controller-manager --allocate-node-cidrs)` });
        } else {
          // Only containment: the controller's --node-cidr-mask-size decides the length and it
          // hands out the Network's first subnet too, which SubnetMin keeps from etcd-mode nodes.
          const network = this.opts.config.ipv4!.network;
          if (!cidrContainsCidr(network, subnet)) {
            const error = new WeftError(CniCode.InvalidNetworkConfig, `Node ${this.opts.nodeName}: spec.podCIDR ${formatCidr(subnet)} is outside the network config's Network ${formatCidr(network)} (--net-config and kube-controller-manager's --cluster-cidr must agree)`);
            this.setStatus({ type: 'fatal', error });
            throw error;
          }
          try {
            const lease = await this.publish(node, subnet);
            this.lease = lease;
            this.setStatus({ type: 'ready', lease });
            return lease;
          } catch (err) {
            this.setStatus({ type: 'waiting', reason: `cannot annotate Node ${this.opts.nodeName}: ${err instanceof Error ? err.message : String(err)}` });
          }
        }
      }
      await sleep(backoff.next());
    }
  }

  /** Annotates the Node (only what differs) and marks its network available. */
  private async publish(node: NodeObject, subnet: Cidr): Promise<Lease> {
    const want = this.annotations();
    const have = node.metadata.annotations ?? {};
    const n = this.store.names;
    const theirs = have[n.publicIP];
    if (theirs !== undefined && theirs !== want[n.publicIP]) {
      // flannel overwrites too; but two agents with one --node-name would take turns silently.
      this.log.warn('this Node already names another public IP; taking it over', {
        node: this.opts.nodeName, was: theirs, now: want[n.publicIP], hint: 'another weftd with the same --node-name, or this host\'s address changed',
      });
    }
    let revision = node.metadata.resourceVersion;
    if (Object.entries(want).some(([k, v]) => have[k] !== v)) {
      const patched = await this.store.client.mergePatch<NodeObject>(this.path, { metadata: { annotations: want } });
      revision = patched.metadata.resourceVersion;
    }
    await this.markNetworkAvailable();
    return { subnet, attrs: this.attrs, expiresAt: null, revision: revision !== undefined && /^\d+$/.test(revision) ? BigInt(revision) : 0n };
  }

  /**
   * NetworkUnavailable=False, as flannel and Calico set it: clouds create Nodes with it True and
   * the scheduler keeps pods off until the network plugin says otherwise. A strategic merge patch
   * merges by condition type; a plain merge patch would replace the kubelet's conditions.
   */
  private async markNetworkAvailable(): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    try {
      await this.store.client.request('PATCH', `${this.path}/status`, {
        contentType: 'application/strategic-merge-patch+json',
        body: { status: { conditions: [{ type: 'NetworkUnavailable', status: 'False', reason: 'WeftIsUp', message: 'weft is running on this node', lastTransitionTime: now, lastHeartbeatTime: now }] } },
      });
    } catch (err) {
      this.log.warn('cannot set the Node\'s NetworkUnavailable condition', { error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** The watcher saw our entry vanish: annotations removed (put them back) or the Node changed. */
  private ownLeaseRemoved(subnet: Cidr): void {
    if (this.stopped || this.repairing || !this.lease || !cidrEquals(this.lease.subnet, subnet)) return;
    this.repairing = (async () => {
      try {
        const node = await this.store.client.get<NodeObject>(this.path);
        const now = nodePodCidr(node);
        if (!now || !cidrEquals(now, subnet)) {
          this.fail(`Node ${this.opts.nodeName}'s spec.podCIDR is now ${now ? formatCidr(now) : 'unset'}, not ${formatCidr(subnet)}`);
          return;
        }
        this.log.warn('this node\'s annotations were removed; publishing them again', { node: this.opts.nodeName });
        await this.publish(node, subnet);
      } catch (err) {
        if (err instanceof KubeError && err.httpStatus === 404) this.fail(`Node ${this.opts.nodeName} was deleted`);
        else this.log.warn('cannot check this node\'s annotations', { error: err instanceof Error ? err.message : String(err) });
      }
    })().finally(() => { this.repairing = undefined; });
  }

  private fail(reason: string): void {
    if (this.statusNow.type === 'fatal' || this.stopped) return;
    const error = new WeftError(CniCode.Store, `own pod subnet lost: ${reason}; stopping, because pods here hold addresses of the old subnet`);
    this.log.error('own pod subnet lost', { reason });
    this.setStatus({ type: 'fatal', error });
  }

  watchOthers(onEvent: (ev: LeaseEvent) => void, onState?: (s: WatcherState) => void): LeaseWatcher {
    return new LeaseWatcher({
      store: this.store,
      onEvent,
      ownSubnet: () => this.lease?.subnet,
      onOwnRemoved: (s) => this.ownLeaseRemoved(s),
      ...(onState && { onState }),
      log: this.log,
    });
  }

  /** With `release`, takes this node's annotations off so the others drop their routes to it. */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    await this.repairing?.catch(() => {});
    if (opts.release && this.lease) {
      const off = Object.fromEntries(Object.keys(this.annotations()).map((k) => [k, null]));
      await this.store.client.mergePatch(this.path, { metadata: { annotations: off } }).catch((err: unknown) => {
        this.log.warn('could not remove this node\'s annotations', { error: err instanceof Error ? err.message : String(err) });
      });
    }
    this.statusNow = { type: 'stopped' };
  }
}

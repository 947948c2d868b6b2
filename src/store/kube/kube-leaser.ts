// weftd's own lease in kube mode. The subnets are not ours to pick: kube-controller-manager (or
// whoever runs the cluster) writes Node.spec.podCIDRs — one per address family the network
// config enables — and we wait for them, saying so. Once they are there we publish PublicIP /
// PublicIPv6 / BackendType / BackendData / BackendV6Data as the Node's annotations (flannel's
// names) and mark the Node's NetworkUnavailable condition False, as flannel does. There is no TTL
// to renew: the lease lives as long as the Node. Annotations someone removes are put back; a Node
// deleted or given another podCIDR of either family under us is fatal (pods hold addresses of
// the old one).
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../../backoff.js';
import { CniCode, WeftError } from '../../errors.js';
import { createLogger, type Logger } from '../../log.js';
import { type Cidr, type IP, cidrContainsCidr, cidrEquals, formatCidr, formatIP, leaseKey } from '../../net/ip.js';
import { KubeError } from '../../kube/client.js';
import { type Lease, type LeaseAttrs, formatLeaseSubnets } from '../lease.js';
import type { LeaseManagerOptions, ManagerStatus, SubnetLeaser } from '../lease-manager.js';
import type { RawEntry } from '../types.js';
import { LeaseWatcher, type LeaseEvent, type WatcherState } from '../watch.js';
import { type KubeStore, NODES } from './kube-store.js';
import { type LeaseFamilies, type NodeObject, type NodePodCidrs, familiesOf, nodePodCidrs } from './node-lease.js';

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
  /** A look at the Node asked for while one ran, which may have read the Node before the change. */
  private checkAgain = false;
  private readonly log: Logger;
  private readonly attrs: LeaseAttrs;
  private readonly store: KubeStore;
  private readonly path: string;
  private readonly families: LeaseFamilies;
  /** The host's IPv6 underlay address, published as public-ipv6 on a network with IPv6. */
  private readonly publicIPv6: IP | undefined;

  constructor(private readonly opts: KubeLeaserOptions) {
    this.log = opts.log ?? createLogger({ component: 'kube-lease' });
    this.store = opts.store;
    this.path = `${NODES}/${encodeURIComponent(opts.nodeName)}`;
    this.families = familiesOf(opts.config);
    this.publicIPv6 = opts.publicIPv6 ?? (opts.publicIP.family === 6 ? opts.publicIP : undefined);
    if (this.families.ipv4 && opts.publicIP.family !== 4) {
      throw new WeftError(CniCode.InvalidNetworkConfig, `network config has an IPv4 Network, but this host's public address ${formatIP(opts.publicIP)} is IPv6; pass --public-ip`);
    }
    if (this.families.ipv6 && !this.publicIPv6) {
      throw new WeftError(CniCode.InvalidNetworkConfig, 'network config: EnableIPv6: this host has no IPv6 public address (give --public-ipv6, or an interface with a global IPv6 address)');
    }
    this.attrs = {
      publicIP: opts.publicIP,
      publicIPv6: this.families.ipv6 ? this.publicIPv6 : undefined,
      backendType: opts.backendType,
      backendData: opts.backendData ?? null,
      ...(this.families.ipv6 && opts.backendV6Data !== undefined && opts.backendV6Data !== null && { backendV6Data: opts.backendV6Data }),
    };
  }

  get status(): ManagerStatus {
    return this.statusNow;
  }

  private setStatus(s: ManagerStatus): void {
    const changed = s.type !== this.statusNow.type || (s.type === 'waiting' && this.statusNow.type === 'waiting' && s.reason !== this.statusNow.reason);
    this.statusNow = s;
    if (!changed) return;
    if (s.type === 'waiting') this.log.warn('waiting for this node\'s pod subnet', { node: this.opts.nodeName, reason: s.reason });
    if (s.type === 'ready') this.log.info('lease held', { subnet: formatLeaseSubnets(s.lease), node: this.opts.nodeName });
    this.opts.onStatus?.(s);
  }

  /**
   * The annotations this node publishes (flannel's values: backend data is JSON text, "null"
   * where the backend publishes none). Each family's only where the network has it, as flanneld
   * writes them: its readers ignore the other family's anyway.
   */
  private annotations(): Record<string, string> {
    const n = this.store.names;
    return {
      ...(this.families.ipv4 && { [n.publicIP]: formatIP(this.attrs.publicIP), [n.backendData]: JSON.stringify(this.attrs.backendData ?? null) }),
      ...(this.families.ipv6 && this.publicIPv6 && { [n.publicIPv6]: formatIP(this.publicIPv6), [n.backendV6Data]: JSON.stringify(this.attrs.backendV6Data ?? null) }),
      [n.backendType]: this.attrs.backendType,
      [n.subnetManager]: 'true',
    };
  }

  /** Every annotation an agent publishes (not the operator's *-overwrite ones). */
  private agentAnnotations(): string[] {
    const n = this.store.names;
    return [n.publicIP, n.publicIPv6, n.backendType, n.backendData, n.backendV6Data, n.subnetManager];
  }

  /** Why the Node is not ready to be this node's lease yet, or undefined when it is. */
  private missingPodCidr(cidrs: NodePodCidrs): string | undefined {
    const lacks = [...(this.families.ipv4 && !cidrs.ipv4 ? ['IPv4'] : []), ...(this.families.ipv6 && !cidrs.ipv6 ? ['IPv6'] : [])];
    if (lacks.length === 0) return undefined;
    const node = `Node ${this.opts.nodeName}`;
    const has = [cidrs.ipv4, cidrs.ipv6].filter((c): c is Cidr => c !== undefined);
    if (has.length === 0) {
      const dual = this.families.ipv4 && this.families.ipv6 ? ' with IPv4 and IPv6 CIDRs in its --cluster-cidr' : '';
      return `${node} has no ${lacks.join(' and ')} spec.podCIDR yet (assigned by kube-controller-manager --allocate-node-cidrs${dual})`;
    }
    const family = lacks[0]!;
    const network = family === 'IPv4' ? `Network ${formatCidr(this.opts.config.ipv4!.network)}` : `IPv6Network ${formatCidr(this.opts.config.ipv6!.network)}`;
    // The API server refuses any change to podCIDRs once set: waiting only ends with a new Node.
    return `${node} has spec.podCIDRs ${has.map(formatCidr).join(',')} but no ${family} one, which the network config's ${network} needs; `
      + `a Node's podCIDRs are fixed once set, so it gets one only when registered again while kube-controller-manager's --cluster-cidr has an ${family} CIDR`;
  }

  /** The pod CIDRs outside the config's networks (--net-config and --cluster-cidr disagree). */
  private outsideNetwork(cidrs: NodePodCidrs): string | undefined {
    // Only containment: the controller's --node-cidr-mask-size decides the length and it hands
    // out the Network's first subnet too, which SubnetMin keeps from etcd-mode nodes.
    const v4 = this.opts.config.ipv4;
    if (v4 && cidrs.ipv4 && !cidrContainsCidr(v4.network, cidrs.ipv4)) {
      return `spec.podCIDR ${formatCidr(cidrs.ipv4)} is outside the network config's Network ${formatCidr(v4.network)}`;
    }
    const v6 = this.opts.config.ipv6;
    if (v6 && cidrs.ipv6 && !cidrContainsCidr(v6.network, cidrs.ipv6)) {
      return `IPv6 spec.podCIDR ${formatCidr(cidrs.ipv6)} is outside the network config's IPv6Network ${formatCidr(v6.network)}`;
    }
    return undefined;
  }

  /** The lease's subnets: IPv4 (IPv6 on an IPv6-only network) and, with IPv6 on, the IPv6 one. */
  private leaseSubnets(cidrs: NodePodCidrs): { subnet: Cidr; ipv6Subnet: Cidr | undefined } {
    return { subnet: (this.families.ipv4 ? cidrs.ipv4 : cidrs.ipv6)!, ipv6Subnet: this.families.ipv6 ? cidrs.ipv6 : undefined };
  }

  /**
   * Waits (with backoff, for as long as it takes) until the Node exists and has a podCIDR of each
   * family the network has, then publishes this host's attributes on it. API errors are retried,
   * each new reason logged once.
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
        const cidrs = nodePodCidrs(node);
        const missing = this.missingPodCidr(cidrs);
        if (missing !== undefined) {
          this.setStatus({ type: 'waiting', reason: missing });
        } else {
          const outside = this.outsideNetwork(cidrs);
          if (outside !== undefined) {
            const error = new WeftError(CniCode.InvalidNetworkConfig, `Node ${this.opts.nodeName}: ${outside} (--net-config and kube-controller-manager's --cluster-cidr must agree)`);
            this.setStatus({ type: 'fatal', error });
            throw error;
          }
          try {
            const lease = await this.publish(node, this.leaseSubnets(cidrs));
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

  /**
   * Annotates the Node (only what differs) and marks its network available. The annotations of a
   * family the network no longer has come off: a peer still configured for that family would
   * otherwise keep routing it here.
   */
  private async publish(node: NodeObject, subnets: { readonly subnet: Cidr; readonly ipv6Subnet?: Cidr | undefined }): Promise<Lease> {
    const want = this.annotations();
    const have = node.metadata.annotations ?? {};
    const n = this.store.names;
    for (const key of [n.publicIP, n.publicIPv6]) {
      const theirs = have[key];
      if (theirs !== undefined && want[key] !== undefined && theirs !== want[key]) {
        // flannel overwrites too; but two agents with one --node-name would take turns silently.
        this.log.warn('this Node already names another public IP; taking it over', {
          node: this.opts.nodeName, annotation: key, was: theirs, now: want[key], hint: 'another weftd with the same --node-name, or this host\'s address changed',
        });
      }
    }
    const patch: Record<string, string | null> = {};
    for (const [k, v] of Object.entries(want)) if (have[k] !== v) patch[k] = v;
    for (const k of this.agentAnnotations()) if (want[k] === undefined && have[k] !== undefined) patch[k] = null;
    let revision = node.metadata.resourceVersion;
    if (Object.keys(patch).length > 0) {
      if (this.lease) this.log.warn('this node\'s annotations were removed or changed; publishing them again', { node: this.opts.nodeName, annotations: Object.keys(patch) });
      const patched = await this.store.client.mergePatch<NodeObject>(this.path, { metadata: { annotations: patch } });
      revision = patched.metadata.resourceVersion;
    }
    await this.markNetworkAvailable();
    return {
      subnet: subnets.subnet, ...(subnets.ipv6Subnet && { ipv6Subnet: subnets.ipv6Subnet }),
      attrs: this.attrs, expiresAt: null, revision: revision !== undefined && /^\d+$/.test(revision) ? BigInt(revision) : 0n,
    };
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

  /**
   * How the Node's pod CIDRs differ from the lease's, or undefined. The API server never changes
   * a Node's podCIDRs, so a difference is a Node deleted and registered again.
   */
  private podCidrChange(lease: Lease, now: NodePodCidrs): string | undefined {
    const changes: string[] = [];
    const was = (c: Cidr | undefined) => (c ? formatCidr(c) : 'unset');
    if (this.families.ipv4 && (!now.ipv4 || !cidrEquals(now.ipv4, lease.subnet))) {
      changes.push(`${this.families.ipv6 ? 'IPv4 ' : ''}spec.podCIDR is now ${was(now.ipv4)}, not ${formatCidr(lease.subnet)}`);
    }
    if (this.families.ipv6 && lease.ipv6Subnet && (!now.ipv6 || !cidrEquals(now.ipv6, lease.ipv6Subnet))) {
      changes.push(`IPv6 spec.podCIDR is now ${was(now.ipv6)}, not ${formatCidr(lease.ipv6Subnet)}`);
    }
    return changes.length > 0 ? changes.join(', and its ') : undefined;
  }

  /** The watcher saw our entry vanish: annotations removed (put them back) or the Node changed. */
  private ownLeaseRemoved(subnet: Cidr): void {
    if (!this.lease || !cidrEquals(this.lease.subnet, subnet)) return;
    this.checkNode();
  }

  /**
   * The watcher delivered our entry (a listing, or any change to the Node): under our IPv4 subnet
   * with another IPv6 one is the Node re-created with another IPv6 podCIDR while the watch was
   * away — a re-list shows it only this way.
   */
  private ownLeaseWritten(entry: RawEntry): void {
    const lease = this.lease;
    if (!lease || leaseKey(entry.subnet, entry.ipv6Subnet) === leaseKey(lease.subnet, lease.ipv6Subnet)) return;
    this.checkNode();
  }

  /** Looks at the Node: fatal if its podCIDRs moved or it is gone, else our annotations back on. */
  private checkNode(): void {
    if (this.stopped || !this.lease) return;
    if (this.repairing) { this.checkAgain = true; return; }
    const lease = this.lease;
    this.repairing = (async () => {
      try {
        const node = await this.store.client.get<NodeObject>(this.path);
        const change = this.podCidrChange(lease, nodePodCidrs(node));
        if (change !== undefined) {
          this.fail(`Node ${this.opts.nodeName}'s ${change}`);
          return;
        }
        if (this.stopped) return;
        await this.publish(node, lease);
      } catch (err) {
        if (err instanceof KubeError && err.httpStatus === 404) this.fail(`Node ${this.opts.nodeName} was deleted`);
        else this.log.warn('cannot check this node\'s annotations', { error: err instanceof Error ? err.message : String(err) });
      }
    })().finally(() => {
      this.repairing = undefined;
      if (this.checkAgain) { this.checkAgain = false; this.checkNode(); }
    });
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
      onOwnPut: (e) => this.ownLeaseWritten(e),
      ...(onState && { onState }),
      log: this.log,
    });
  }

  /** With `release`, takes this node's annotations off so the others drop their routes to it. */
  async stop(opts: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    await this.repairing?.catch(() => {});
    if (opts.release && this.lease) {
      const off = Object.fromEntries(this.agentAnnotations().map((k) => [k, null]));
      await this.store.client.mergePatch(this.path, { metadata: { annotations: off } }).catch((err: unknown) => {
        this.log.warn('could not remove this node\'s annotations', { error: err instanceof Error ? err.message : String(err) });
      });
    }
    this.statusNow = { type: 'stopped' };
  }
}

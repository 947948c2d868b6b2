// The kube store in dual-stack and IPv6-only clusters, against a real kube-apiserver (etcd and
// kube-apiserver on loopback, src/kube/controlplane.ts; no namespaces, nothing in the kernel).
// Nodes are created as a kubelet and the node IPAM controller leave them — spec.podCIDRs of both
// families, in either order — and annotated as flanneld v0.2x annotates a dual-stack vxlan node;
// the API server's own validation decides what may change. Leases are read through the store's
// list and watch (LeaseWatcher, as weftd reads them), and the own node's leaser publishes on a Node
// that other readers then see.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeClient, KubeError } from '../../src/kube/client.js';
import { loadKubeconfig } from '../../src/kube/config.js';
import { type ControlPlane, startControlPlane } from '../../src/kube/controlplane.js';
import { createLogger } from '../../src/log.js';
import { formatCidr, formatIP, parseIP } from '../../src/net/ip.js';
import { parseNetworkConfig } from '../../src/store/config.js';
import { type Lease, parseLease } from '../../src/store/lease.js';
import type { LeaseManagerOptions, SubnetLeaser } from '../../src/store/lease-manager.js';
import { KubeStore, type NodeObject } from '../../src/store/kube/kube-store.js';
import { type LeaseEvent, LeaseWatcher } from '../../src/store/watch.js';
import { FLANNEL_PREFIX, flannelDualAnnotations, showLease } from '../unit/kube-node-fixtures.js';

const ANN = FLANNEL_PREFIX;
const base = mkdtempSync(join(tmpdir(), 'weft-wk6-'));
const DUAL_CONF = join(base, 'dual.json');
const V6_CONF = join(base, 'v6only.json');
const DUAL_TEXT = JSON.stringify({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'vxlan' } });
const V6_TEXT = JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:20::/56', Backend: { Type: 'vxlan' } });
writeFileSync(DUAL_CONF, DUAL_TEXT);
writeFileSync(V6_CONF, V6_TEXT);

let cp: ControlPlane | undefined;
let admin: KubeClient | undefined;
const stores: KubeStore[] = [];
const leasers: SubnetLeaser[] = [];
const watchers: LeaseWatcher[] = [];
const lines: string[] = [];
const log = createLogger({}, { write: (l) => { lines.push(l); } });

interface LogLine { level?: string; msg?: string; node?: string; reason?: string }
const logged = (): LogLine[] => lines.map((l) => JSON.parse(l) as LogLine);

function api(): KubeClient {
  if (admin === undefined) throw new Error('the control plane did not start');
  return admin;
}

function store(netConfig: string, nodeName?: string): KubeStore {
  const s = new KubeStore({ kubeconfig: cp!.adminKubeconfig, netConfig, annotationPrefix: ANN, log, ...(nodeName !== undefined && { nodeName }) });
  stores.push(s);
  return s;
}

/** A Node as the kubelet registers it and the node IPAM controller gives it podCIDRs. */
function nodeObject(name: string, podCIDRs: readonly string[], annotations: Record<string, string> = {}): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, annotations }, spec: { podCIDR: podCIDRs[0], podCIDRs } };
}

async function createNode(name: string, podCIDRs: readonly string[], annotations: Record<string, string> = {}): Promise<void> {
  await api().request('POST', '/api/v1/nodes', { body: nodeObject(name, podCIDRs, annotations) });
}

async function deleteNode(name: string): Promise<void> {
  await api().request('DELETE', `/api/v1/nodes/${name}`);
  // Gone for readers too before the caller registers it again.
  for (;;) {
    try {
      await api().get(`/api/v1/nodes/${name}`);
    } catch (err) {
      if (err instanceof KubeError && err.httpStatus === 404) return;
      throw err;
    }
    await sleep(50);
  }
}

async function annotationsOf(name: string): Promise<Record<string, string>> {
  return (await api().get<NodeObject>(`/api/v1/nodes/${name}`)).metadata.annotations ?? {};
}

async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(50);
  }
}

function leaseAt(w: LeaseWatcher, subnet: string): Lease | undefined {
  return w.leases().find((l) => formatCidr(l.subnet) === subnet);
}

function leaserOptions(s: KubeStore, configText: string, o: Partial<LeaseManagerOptions>): LeaseManagerOptions & { pollMaxMs: number } {
  return { store: s, config: parseNetworkConfig(configText), publicIP: parseIP('198.18.0.10'), backendType: 'vxlan', log, pollMaxMs: 200, ...o };
}

function leaser(s: KubeStore, opts: LeaseManagerOptions): SubnetLeaser {
  const l = s.createLeaser(opts);
  leasers.push(l);
  return l;
}

function watch(w: LeaseWatcher): LeaseWatcher {
  watchers.push(w);
  return w;
}

describe('kube store with dual-stack and IPv6-only Nodes, against a real kube-apiserver', { timeout: 240_000 }, () => {
  /** A reader of the dual-stack network without a node of its own (weftctl, another node's view). */
  let view: LeaseWatcher;
  const events: LeaseEvent[] = [];

  before(async () => {
    cp = await startControlPlane({ dir: join(base, 'cp') });
    admin = new KubeClient(loadKubeconfig(cp.adminKubeconfig));
  });

  after(async () => {
    for (const w of watchers) await w.close().catch(() => undefined);
    for (const l of leasers) await l.stop().catch(() => undefined);
    for (const s of stores) await s.close().catch(() => undefined);
    admin?.close();
    await cp?.stop();
    rmSync(base, { recursive: true, force: true });
  });

  it('Nodes with podCIDRs of both families are dual-stack leases, in the listing and through the watch; a peer without its IPv6 podCIDR is an IPv4 lease', async () => {
    await createNode('wk6-a', ['10.244.1.0/24', 'fd00:10:244:1::/64'], flannelDualAnnotations({ publicIP: '198.18.0.11', publicIPv6: '2001:2::11', mac4: '0a:58:c6:12:00:0b', mac6: '0a:58:c6:12:06:0b' }));
    // An IPv6-primary cluster: the IPv6 CIDR first, and podCIDR is it.
    await createNode('wk6-b', ['fd00:10:244:2::/64', '10.244.2.0/24'], flannelDualAnnotations({ publicIP: '198.18.0.12', publicIPv6: '2001:2::12', mac4: '0a:58:c6:12:00:0c', mac6: '0a:58:c6:12:06:0c' }));
    // Registered before the cluster went dual-stack: its podCIDRs can never gain an IPv6 one.
    await createNode('wk6-c', ['10.244.3.0/24'], {
      [`${ANN}/backend-data`]: '{"VNI":1,"VtepMAC":"0a:58:c6:12:00:0d"}', [`${ANN}/backend-type`]: 'vxlan', [`${ANN}/public-ip`]: '198.18.0.13',
    });

    view = watch(new LeaseWatcher({ store: store(DUAL_CONF), onEvent: (e) => events.push(e), log }));
    await view.start();
    assert.deepEqual(showLease(leaseAt(view, '10.244.1.0/24')), {
      subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:10:244:1::/64', publicIP: '198.18.0.11', publicIPv6: '2001:2::11',
      backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:58:c6:12:00:0b' }, backendV6Data: { VNI: 1, VtepMAC: '0a:58:c6:12:06:0b' },
    });
    assert.deepEqual(showLease(leaseAt(view, '10.244.2.0/24')), {
      subnet: '10.244.2.0/24', ipv6Subnet: 'fd00:10:244:2::/64', publicIP: '198.18.0.12', publicIPv6: '2001:2::12',
      backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '0a:58:c6:12:00:0c' }, backendV6Data: { VNI: 1, VtepMAC: '0a:58:c6:12:06:0c' },
    });
    const c = leaseAt(view, '10.244.3.0/24');
    assert.ok(c, 'the IPv4-only peer is delivered');
    assert.equal(c.ipv6Subnet, undefined);
    assert.equal(c.attrs.publicIPv6, undefined);
    const partial = logged().filter((l) => l.level === 'warn' && l.node === 'wk6-c');
    assert.equal(partial.length, 1, 'said once');
    assert.match(partial[0]?.reason ?? '', /no IPv6 spec\.podCIDR and no annotation flannel\.alpha\.coreos\.com\/public-ipv6; its pods are reached over IPv4 only/);

    // Through the watch, not a listing.
    const relists = view.resyncs;
    await createNode('wk6-d', ['10.244.4.0/24', 'fd00:10:244:4::/64'], flannelDualAnnotations({ publicIP: '198.18.0.14', publicIPv6: '2001:2::14', mac4: '0a:58:c6:12:00:0e', mac6: '0a:58:c6:12:06:0e' }));
    const added = await waitFor('wk6-d added', () => events.find((e) => e.type === 'added' && formatCidr(e.lease.subnet) === '10.244.4.0/24'));
    assert.equal(added.lease.ipv6Subnet && formatCidr(added.lease.ipv6Subnet), 'fd00:10:244:4::/64');
    assert.equal(added.lease.attrs.publicIPv6 && formatIP(added.lease.attrs.publicIPv6), '2001:2::14');
    assert.deepEqual(added.lease.attrs.backendV6Data, { VNI: 1, VtepMAC: '0a:58:c6:12:06:0e' });

    // Registered again under the same IPv4 podCIDR with another IPv6 one: a new lease, the old one gone.
    events.length = 0;
    await deleteNode('wk6-d');
    await createNode('wk6-d', ['10.244.4.0/24', 'fd00:10:244:14::/64'], flannelDualAnnotations({ publicIP: '198.18.0.14', publicIPv6: '2001:2::14', mac4: '0a:58:c6:12:00:0e', mac6: '0a:58:c6:12:06:0e' }));
    await waitFor('wk6-d under its new IPv6 podCIDR', () => leaseAt(view, '10.244.4.0/24')?.ipv6Subnet?.ip.value === parseIP('fd00:10:244:14::').value);
    assert.deepEqual(events.map((e) => `${e.type} ${formatCidr(e.lease.subnet)} ${e.lease.ipv6Subnet ? formatCidr(e.lease.ipv6Subnet) : '-'}`),
      ['removed 10.244.4.0/24 fd00:10:244:4::/64', 'added 10.244.4.0/24 fd00:10:244:14::/64']);

    // backend-v6-data someone broke: the peer is dropped, the warning names Node and annotation.
    await api().mergePatch('/api/v1/nodes/wk6-a', { metadata: { annotations: { [`${ANN}/backend-v6-data`]: '{VNI:1, oops' } } });
    await waitFor('wk6-a dropped', () => leaseAt(view, '10.244.1.0/24') === undefined);
    const bad = logged().find((l) => l.level === 'warn' && l.node === 'wk6-a');
    assert.match(bad?.reason ?? '', /annotation flannel\.alpha\.coreos\.com\/backend-v6-data is not JSON/);
    await api().mergePatch('/api/v1/nodes/wk6-a', { metadata: { annotations: { [`${ANN}/backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:58:c6:12:06:0b"}' } } });
    await waitFor('wk6-a back', () => leaseAt(view, '10.244.1.0/24')?.ipv6Subnet !== undefined);
    assert.equal(view.resyncs, relists, 'every change came through the watch');
  });

  it('the own node: waits for its IPv6 podCIDR, then publishes public-ipv6 and backend-v6-data; peers read the dual-stack lease; its annotations are put back, and all taken off on release', async () => {
    await createNode('wk6-self', ['10.244.10.0/24']);
    const s = store(DUAL_CONF, 'wk6-self');
    const me = leaser(s, leaserOptions(s, DUAL_TEXT, {
      publicIPv6: parseIP('2001:2::10'), backendData: { VtepMAC: '0a:58:c6:12:00:0a' }, backendV6Data: { VtepMAC: '0a:58:c6:12:06:0a' },
    }));
    const started = me.start();
    const waiting = await waitFor('the leaser waiting for the IPv6 podCIDR', () => (me.status.type === 'waiting' && /IPv6/.test(me.status.reason) ? me.status.reason : undefined));
    assert.match(waiting, /^Node wk6-self has spec\.podCIDRs 10\.244\.10\.0\/24 but no IPv6 one, which the network config's IPv6Network fd00:10:244::\/56 needs; a Node's podCIDRs are fixed once set/);
    // What the reason says about the API server: it refuses the IPv6 podCIDR on this Node.
    await assert.rejects(api().mergePatch('/api/v1/nodes/wk6-self', { spec: { podCIDRs: ['10.244.10.0/24', 'fd00:10:244:10::/64'] } }), /may not change podCIDR/);
    assert.equal((await annotationsOf('wk6-self'))[`${ANN}/public-ip`], undefined, 'nothing published while waiting');

    await deleteNode('wk6-self');
    await createNode('wk6-self', ['10.244.10.0/24', 'fd00:10:244:10::/64']);
    const lease = await started;
    assert.equal(formatCidr(lease.subnet), '10.244.10.0/24');
    assert.equal(lease.ipv6Subnet && formatCidr(lease.ipv6Subnet), 'fd00:10:244:10::/64');
    assert.equal(me.status.type, 'ready');
    assert.deepEqual(await annotationsOf('wk6-self'), {
      [`${ANN}/backend-data`]: '{"VtepMAC":"0a:58:c6:12:00:0a"}',
      [`${ANN}/backend-v6-data`]: '{"VtepMAC":"0a:58:c6:12:06:0a"}',
      [`${ANN}/backend-type`]: 'vxlan',
      [`${ANN}/kube-subnet-manager`]: 'true',
      [`${ANN}/public-ip`]: '198.18.0.10',
      [`${ANN}/public-ipv6`]: '2001:2::10',
    });

    const peerView = await waitFor('the own node in the peers\' view', () => leaseAt(view, '10.244.10.0/24'));
    assert.deepEqual(showLease(peerView), {
      subnet: '10.244.10.0/24', ipv6Subnet: 'fd00:10:244:10::/64', publicIP: '198.18.0.10', publicIPv6: '2001:2::10',
      backendType: 'vxlan', backendData: { VtepMAC: '0a:58:c6:12:00:0a' }, backendV6Data: { VtepMAC: '0a:58:c6:12:06:0a' },
    });

    const own = watch(me.watchOthers(() => {}));
    await own.start();
    assert.equal(leaseAt(own, '10.244.10.0/24'), undefined, 'the own lease is not a peer');
    assert.ok(leaseAt(own, '10.244.2.0/24')?.ipv6Subnet, 'the peers are, dual-stack');

    // Someone takes the addresses off: the entry vanishes, the leaser puts them back.
    await api().mergePatch('/api/v1/nodes/wk6-self', { metadata: { annotations: { [`${ANN}/public-ip`]: null, [`${ANN}/public-ipv6`]: null } } });
    await waitFor('the annotations back', async () => {
      const a = await annotationsOf('wk6-self');
      return a[`${ANN}/public-ip`] === '198.18.0.10' && a[`${ANN}/public-ipv6`] === '2001:2::10';
    });
    assert.equal(me.status.type, 'ready');

    await me.stop({ release: true });
    const left = Object.keys(await annotationsOf('wk6-self')).filter((k) => k.startsWith(`${ANN}/`));
    assert.deepEqual(left, [], 'every annotation the leaser published is gone');
    await waitFor('the released node gone from the peers\' view', () => leaseAt(view, '10.244.10.0/24') === undefined);
  });

  it('a Node registered again with another IPv6 podCIDR is fatal for its leaser: seen in a listing, and through a running watch', async () => {
    const mine = flannelDualAnnotations({ publicIP: '198.18.0.20', publicIPv6: '2001:2::20', mac4: '0a:58:c6:12:00:14', mac6: '0a:58:c6:12:06:14' });
    await createNode('wk6-mv', ['10.244.20.0/24', 'fd00:10:244:20::/64'], mine);
    const s = store(DUAL_CONF, 'wk6-mv');
    const me = leaser(s, leaserOptions(s, DUAL_TEXT, {
      publicIP: parseIP('198.18.0.20'), publicIPv6: parseIP('2001:2::20'),
      backendData: { VNI: 1, VtepMAC: '0a:58:c6:12:00:14' }, backendV6Data: { VNI: 1, VtepMAC: '0a:58:c6:12:06:14' },
    }));
    await me.start();
    // Replaced while this node's watch was away (`kubectl replace --force` keeps the annotations):
    // the listing shows its IPv4 subnet, with another IPv6 one.
    await deleteNode('wk6-mv');
    await createNode('wk6-mv', ['10.244.20.0/24', 'fd00:10:244:21::/64'], mine);
    const w = watch(me.watchOthers(() => {}));
    await w.start();
    const fatal = await waitFor('the leaser fatal', () => (me.status.type === 'fatal' ? me.status.error.message : undefined));
    assert.match(fatal, /own pod subnet lost: Node wk6-mv's IPv6 spec\.podCIDR is now fd00:10:244:21::\/64, not fd00:10:244:20::\/64/);

    await createNode('wk6-mv2', ['10.244.22.0/24', 'fd00:10:244:22::/64']);
    const s2 = store(DUAL_CONF, 'wk6-mv2');
    const me2 = leaser(s2, leaserOptions(s2, DUAL_TEXT, { publicIP: parseIP('198.18.0.22'), publicIPv6: parseIP('2001:2::22') }));
    await me2.start();
    const w2 = watch(me2.watchOthers(() => {}));
    await w2.start();
    const published = await annotationsOf('wk6-mv2');
    await deleteNode('wk6-mv2');
    await createNode('wk6-mv2', ['10.244.22.0/24', 'fd00:10:244:23::/64'], published);
    // The watch sees the deletion first; whether the leaser's look at the Node comes before or
    // after it is back is the API server's timing.
    const fatal2 = await waitFor('the second leaser fatal', () => (me2.status.type === 'fatal' ? me2.status.error.message : undefined));
    assert.match(fatal2, /Node wk6-mv2 was deleted|Node wk6-mv2's IPv6 spec\.podCIDR is now fd00:10:244:23::\/64/);
  });

  it('IPv6-only network: the lease is the IPv6 podCIDR, published as public-ipv6 and backend-v6-data only; a podCIDR outside IPv6Network is refused', async () => {
    await createNode('wk6-six', ['fd00:20:0:5::/64']);
    const s = store(V6_CONF, 'wk6-six');
    // A host with no IPv4 underlay is known by its IPv6 address.
    const me = leaser(s, leaserOptions(s, V6_TEXT, { publicIP: parseIP('2001:2::30'), backendData: null, backendV6Data: { VtepMAC: '0a:58:c6:12:06:1e' } }));
    const lease = await me.start();
    assert.equal(formatCidr(lease.subnet), 'fd00:20:0:5::/64');
    assert.equal(lease.ipv6Subnet, lease.subnet);
    assert.deepEqual(await annotationsOf('wk6-six'), {
      [`${ANN}/backend-type`]: 'vxlan',
      [`${ANN}/backend-v6-data`]: '{"VtepMAC":"0a:58:c6:12:06:1e"}',
      [`${ANN}/kube-subnet-manager`]: 'true',
      [`${ANN}/public-ipv6`]: '2001:2::30',
    });

    // Another node's view of the IPv6-only network.
    const { entries } = await store(V6_CONF).listSubnets();
    const six = entries.find((e) => formatCidr(e.subnet) === 'fd00:20:0:5::/64');
    assert.ok(six, 'listed');
    const p = parseLease(six);
    assert.ok(p.ok, p.ok ? '' : p.reason);
    assert.deepEqual(showLease(p.lease), {
      subnet: 'fd00:20:0:5::/64', ipv6Subnet: 'fd00:20:0:5::/64', publicIP: '2001:2::30', publicIPv6: '2001:2::30',
      backendType: 'vxlan', backendData: null, backendV6Data: { VtepMAC: '0a:58:c6:12:06:1e' },
    });

    await createNode('wk6-out', ['fd00:99::/64']);
    const s2 = store(V6_CONF, 'wk6-out');
    const out = leaser(s2, leaserOptions(s2, V6_TEXT, { publicIP: parseIP('2001:2::31') }));
    await assert.rejects(out.start(), /Node wk6-out: IPv6 spec\.podCIDR fd00:99::\/64 is outside the network config's IPv6Network fd00:20::\/56/);
    assert.equal(out.status.type, 'fatal');
  });
});

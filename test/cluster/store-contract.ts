// One contract every SubnetStore passes, run against the file store and a real etcd.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Cidr, formatCidr, formatIP, nthSubnet, parseCidr, parseIP, subnetKey } from '../../src/net/ip.js';
import { createLogger } from '../../src/log.js';
import type { SubnetStore } from '../../src/store/types.js';
import { parseNetworkConfig } from '../../src/store/config.js';
import { encodeLeaseAttrs, parseLease } from '../../src/store/lease.js';
import { LeaseManager, type ManagerStatus } from '../../src/store/lease-manager.js';
import { LeaseWatcher, type LeaseEvent } from '../../src/store/watch.js';

export interface StoreFactory {
  /** A fresh store on a prefix no other test uses. */
  open(prefix: string): SubnetStore;
  /**
   * Removes a subnet's entry the way an operator would by hand, not through the SubnetStore
   * (etcdctl del; rm of the lease file), so nothing but the store itself can announce it.
   */
  removeByHand(prefix: string, subnet: Cidr): Promise<void>;
  /**
   * Writes `value` at `<prefix>/subnets/<key>` under a 60 s lease the way another program would
   * (flanneld's put-if-absent with an etcd lease; a lease file dropped into the file store),
   * for keys weft never writes itself, such as flanneld's dual-stack ones.
   */
  putByHand(prefix: string, key: string, value: string): Promise<void>;
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

export function uniquePrefix(): string {
  return `/weft-test/${randomBytes(4).toString('hex')}`;
}

const attrs = (ip: string, backendType = 'host-gw') => encodeLeaseAttrs({
  publicIP: parseIP(ip), publicIPv6: undefined, backendType, backendData: null,
});

/** Waits until `pred` holds, polling every 10 ms. */
export async function until(what: string, pred: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Lease values byte for byte as flanneld v0.20 through v0.28 writes them: pkg/lease's LeaseAttrs
 * through encoding/json — PublicIPv6 is a *ip.IP6 without omitempty, so an IPv4-only lease carries
 * `"PublicIPv6":null`; BackendType and BackendData are omitempty; vxlan's BackendData is
 * {"VNI","VtepMAC"} (vxlanLeaseAttrs); host-gw publishes no data, and udp (like alloc) not even
 * a BackendType.
 */
export const FLANNELD_LEASES = [
  { subnet: '10.244.21.0/24', publicIP: '198.18.0.21', backendType: 'vxlan', value: '{"PublicIP":"198.18.0.21","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:f5:62:5c:1b:0a"}}' },
  { subnet: '10.244.22.0/24', publicIP: '198.18.0.22', backendType: 'host-gw', value: '{"PublicIP":"198.18.0.22","PublicIPv6":null,"BackendType":"host-gw"}' },
  { subnet: '10.244.23.0/24', publicIP: '198.18.0.23', backendType: '', value: '{"PublicIP":"198.18.0.23","PublicIPv6":null}' },
] as const;

/** A dual-stack flanneld lease (EnableIPv6): its key names both subnets, its value both addresses. */
export const FLANNELD_DUAL_STACK_LEASE = {
  key: '10.244.25.0-24&fd00:10:244:25::-64',
  subnet: '10.244.25.0/24',
  value: '{"PublicIP":"198.18.0.25","PublicIPv6":"fd00:198:18::25","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:f5:62:5c:1b:25"},"BackendV6Data":{"VNI":1,"VtepMAC":"8e:f5:62:5c:1b:26"}}',
} as const;

const fatalMessage = (s: ManagerStatus): string => (s.type === 'fatal' ? s.error.message : `status ${s.type}`);

const quietLog = () => {
  const lines: string[] = [];
  return { lines, log: createLogger({}, { write: (l) => { lines.push(l); } }) };
};

export function storeContract(name: string, factory: StoreFactory): void {
  describe(`SubnetStore contract: ${name}`, () => {
    const opened: SubnetStore[] = [];
    const open = (prefix = uniquePrefix()) => {
      const s = factory.open(prefix);
      opened.push(s);
      return s;
    };
    before(async () => { await factory.setup?.(); });
    after(async () => {
      await Promise.all(opened.map((s) => s.close()));
      await factory.teardown?.();
    });

    it('stores and returns the network config', async () => {
      const s = open();
      assert.equal(await s.getConfig(), undefined);
      await s.putConfig('{"Network":"10.244.0.0/16"}');
      assert.equal(await s.getConfig(), '{"Network":"10.244.0.0/16"}');
    });

    it('writes a subnet only if absent, and lists it', async () => {
      const s = open();
      const sub = parseCidr('10.244.3.0/24');
      const first = await s.writeSubnet(sub, attrs('198.18.0.1'), 60, { type: 'absent' });
      assert.equal(first.type, 'written');
      const second = await s.writeSubnet(sub, attrs('198.18.0.2'), 60, { type: 'absent' });
      assert.deepEqual(second, { type: 'conflict' });
      const got = await s.getSubnet(sub);
      assert.equal(got?.value, attrs('198.18.0.1'));
      const { entries } = await s.listSubnets({ withExpiry: true });
      assert.deepEqual(entries.map((e) => formatCidr(e.subnet)), ['10.244.3.0/24']);
      const exp = entries[0]?.expiresAt;
      assert.ok(typeof exp === 'number' && exp > Date.now() + 50_000 && exp <= Date.now() + 61_000, `expiresAt ${exp}`);
    });

    it('bulk writes 1000 subnets if absent: one verdict per item in the items\' order, taken keys kept as they were', async () => {
      const s = open();
      const net = parseCidr('10.96.0.0/12');
      const items = Array.from({ length: 1000 }, (_, i) => ({ subnet: nthSubnet(net, 24, i), value: attrs(`198.18.${i >> 8}.${i & 255}`) }));
      // Taken beforehand, spread over several transactions' worth of keys (etcd: 128 per transaction).
      const taken = new Set([3, 130, 131, 600, 999]);
      for (const i of taken) assert.equal((await s.writeSubnet(items[i]!.subnet, attrs('198.19.0.1'), 60, { type: 'absent' })).type, 'written');
      const results = await s.writeSubnetsIfAbsent(items, 60);
      assert.equal(results.length, items.length);
      results.forEach((r, i) => {
        if (taken.has(i)) assert.deepEqual(r, { type: 'conflict' }, `item ${i}`);
        else {
          assert.equal(r.type, 'written', `item ${i}`);
          if (r.type === 'written') assert.deepEqual([formatCidr(r.held.subnet), r.held.value], [formatCidr(items[i]!.subnet), items[i]!.value], `item ${i}`);
        }
      });
      const { entries } = await s.listSubnets();
      assert.equal(entries.length, items.length);
      const byKey = new Map(entries.map((e) => [formatCidr(e.subnet), e.value]));
      items.forEach((it, i) => assert.equal(byKey.get(formatCidr(it.subnet)), taken.has(i) ? attrs('198.19.0.1') : it.value, `stored ${i}`));
    });

    it('keeps a reservation without TTL and deletes on request', async () => {
      const s = open();
      const sub = parseCidr('10.244.7.0/24');
      assert.equal((await s.writeSubnet(sub, attrs('198.18.0.7'), null, { type: 'absent' })).type, 'written');
      const { entries } = await s.listSubnets({ withExpiry: true });
      assert.equal(entries[0]?.expiresAt, null);
      assert.equal(await s.deleteSubnet(sub), true);
      assert.equal(await s.deleteSubnet(sub), false);
      assert.equal(await s.getSubnet(sub), undefined);
    });

    it('replaces an entry only at the revision the writer saw', async () => {
      const s = open();
      const sub = parseCidr('10.244.4.0/24');
      const w = await s.writeSubnet(sub, attrs('198.18.0.4'), 60, { type: 'absent' });
      assert.equal(w.type, 'written');
      if (w.type !== 'written') return;
      const stale = await s.writeSubnet(sub, attrs('198.18.0.4'), 60, { type: 'revision', revision: w.held.revision - 1n });
      assert.equal(stale.type, 'conflict');
      const ok = await s.writeSubnet(sub, attrs('198.18.0.4'), 60, { type: 'revision', revision: w.held.revision });
      assert.equal(ok.type, 'written');
    });

    it('renews a held lease and reports it lost once deleted or taken over', async () => {
      const s = open();
      const sub = parseCidr('10.244.5.0/24');
      const w = await s.writeSubnet(sub, attrs('198.18.0.5'), 30, { type: 'absent' });
      assert.equal(w.type, 'written');
      if (w.type !== 'written') return;
      const r = await s.renewSubnet(w.held);
      assert.equal(r.type, 'renewed');
      // Another writer takes the key over (a restart of "our" node elsewhere): we lost it.
      const cur = await s.getSubnet(sub);
      const over = await s.writeSubnet(sub, attrs('198.18.0.5'), 30, { type: 'revision', revision: cur!.revision });
      assert.equal(over.type, 'written');
      const lost = await s.renewSubnet(w.held);
      assert.equal(lost.type, 'lost');
      if (over.type !== 'written') return;
      assert.equal(await s.releaseSubnet(w.held), false, 'a stale holder must not delete the new owner');
      assert.equal(await s.deleteSubnet(sub), true);
      const gone = await s.renewSubnet(over.held);
      assert.equal(gone.type, 'lost');
      assert.match(gone.type === 'lost' ? gone.reason : '', /removed/);
    });

    it('releases a held lease', async () => {
      const s = open();
      const sub = parseCidr('10.244.6.0/24');
      const w = await s.writeSubnet(sub, attrs('198.18.0.6'), 30, { type: 'absent' });
      if (w.type !== 'written') assert.fail('not written');
      assert.equal(await s.releaseSubnet(w.held), true);
      assert.equal(await s.getSubnet(sub), undefined);
    });

    it('watches: added, updated, removed, garbage skipped with a warning, own lease filtered', async () => {
      const prefix = uniquePrefix();
      const writer = open(prefix);
      const reader = open(prefix);
      await writer.writeSubnet(parseCidr('10.244.1.0/24'), attrs('198.18.0.1'), 60, { type: 'absent' });
      const events: LeaseEvent[] = [];
      const { lines, log } = quietLog();
      const own = parseCidr('10.244.9.0/24');
      const w = new LeaseWatcher({ store: reader, onEvent: (e) => events.push(e), ownSubnet: () => own, log });
      try {
        await w.start();
        assert.deepEqual(events.map((e) => `${e.type} ${formatCidr(e.lease.subnet)}`), ['added 10.244.1.0/24']);
        await writer.writeSubnet(own, attrs('198.18.0.9'), 60, { type: 'absent' });
        await writer.writeSubnet(parseCidr('10.244.2.0/24'), attrs('198.18.0.2'), 60, { type: 'absent' });
        await until('second lease', () => events.length === 2);
        await writer.writeSubnet(parseCidr('10.244.66.0/24'), '{not json', 60, { type: 'absent' });
        await writer.writeSubnet(parseCidr('10.244.67.0/24'), JSON.stringify({ PublicIP: 'nope', BackendType: 'vxlan' }), 60, { type: 'absent' });
        await writer.writeSubnet(parseCidr('10.244.68.0/24'), JSON.stringify({ PublicIP: '198.18.0.68', BackendType: 'vxlan', BackendData: { VtepMAC: 'zz' } }), 60, { type: 'absent' });
        const cur = await writer.getSubnet(parseCidr('10.244.2.0/24'));
        await writer.writeSubnet(parseCidr('10.244.2.0/24'), attrs('198.18.0.22'), 60, { type: 'revision', revision: cur!.revision });
        await writer.deleteSubnet(parseCidr('10.244.1.0/24'));
        await until('update and removal', () => events.length === 5);
        // BackendData is the backend's to check (a vxlan agent skips 10.244.68.0 with its own
        // warning); the store passes it on as written.
        assert.deepEqual(events.map((e) => `${e.type} ${formatCidr(e.lease.subnet)}`),
          ['added 10.244.1.0/24', 'added 10.244.2.0/24', 'added 10.244.68.0/24', 'added 10.244.2.0/24', 'removed 10.244.1.0/24']);
        const updated = events[3];
        assert.equal(updated?.type === 'added' ? updated.lease.attrs.publicIP.value : 0n, parseIP('198.18.0.22').value);
        const warnings = lines.map((l) => JSON.parse(l) as { level: string; subnet?: string; reason?: string })
          .filter((l) => l.level === 'warn');
        assert.deepEqual(warnings.map((l) => l.subnet).sort(), ['10.244.66.0/24', '10.244.67.0/24']);
        assert.match(warnings.find((l) => l.subnet === '10.244.67.0/24')?.reason ?? '', /PublicIP/);
        assert.deepEqual(w.leases().map((l) => formatCidr(l.subnet)).sort(), ['10.244.2.0/24', '10.244.68.0/24']);
      } finally {
        await w.close();
      }
    });

    it('expires a lease that is not renewed, and watchers see it removed', async () => {
      const prefix = uniquePrefix();
      const writer = open(prefix);
      const reader = open(prefix);
      const events: LeaseEvent[] = [];
      const w = new LeaseWatcher({ store: reader, onEvent: (e) => events.push(e), log: quietLog().log });
      try {
        await w.start();
        const sub = parseCidr('10.244.12.0/24');
        const t0 = Date.now();
        await writer.writeSubnet(sub, attrs('198.18.0.12'), 2, { type: 'absent' });
        await until('added', () => events.length === 1);
        // Never before the TTL; how soon after depends on the store's expiry sweep and the load,
        // so only a generous eventual deadline here (bench/store.ts is where speed is measured).
        await until('removed after TTL', () => events.length === 2, 30_000);
        const took = Date.now() - t0;
        assert.equal(events[1]?.type, 'removed');
        assert.ok(took >= 1900, `removed after ${took} ms, before its 2 s TTL`);
        assert.equal(await writer.getSubnet(sub), undefined);
        assert.deepEqual((await writer.listSubnets()).entries, []);
      } finally {
        await w.close();
      }
    });

    it('100 racing acquirers on a /16 get 100 distinct /24s', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const config = parseNetworkConfig('{"Network":"10.100.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}');
      const managers = Array.from({ length: 100 }, (_, i) => new LeaseManager({
        store, config, publicIP: parseIP(`198.18.1.${i + 1}`), backendType: 'host-gw', ttlSeconds: 120, log: quietLog().log,
      }));
      try {
        const leases = await Promise.all(managers.map((m) => m.start()));
        const keys = new Set(leases.map((l) => subnetKey(l.subnet)));
        assert.equal(keys.size, 100);
        const listed = (await store.listSubnets()).entries.map((e) => subnetKey(e.subnet));
        assert.deepEqual(new Set(listed), keys);
      } finally {
        await Promise.all(managers.map((m) => m.stop()));
      }
    });

    it('a /28 of /30s holds 4 nodes; the 5th is out of subnets', async () => {
      const store = open();
      const config = parseNetworkConfig('{"Network":"10.200.0.0/28","SubnetLen":30,"SubnetMin":"10.200.0.0","Backend":{"Type":"host-gw"}}');
      const mk = (i: number) => new LeaseManager({
        store, config, publicIP: parseIP(`198.18.2.${i}`), backendType: 'host-gw', ttlSeconds: 120, log: quietLog().log,
      });
      const ms = [1, 2, 3, 4, 5].map(mk);
      try {
        const four = await Promise.all(ms.slice(0, 4).map((m) => m.start()));
        assert.deepEqual(four.map((l) => formatCidr(l.subnet)).sort(),
          ['10.200.0.0/30', '10.200.0.12/30', '10.200.0.4/30', '10.200.0.8/30']);
        await assert.rejects(ms[4]!.start(), /out of subnets: all 4 \/30 subnets of 10\.200\.0\.0\/28/);
      } finally {
        await Promise.all(ms.map((m) => m.stop()));
      }
    });

    it('a restarted node gets its own lease back; a new node prefers its previous subnet', async () => {
      const store = open();
      const config = parseNetworkConfig('{"Network":"10.150.0.0/16","Backend":{"Type":"host-gw"}}');
      const opts = { store, config, publicIP: parseIP('198.18.3.1'), backendType: 'host-gw', ttlSeconds: 120, log: quietLog().log };
      const a = new LeaseManager(opts);
      const first = await a.start();
      await a.stop();
      const again = new LeaseManager(opts);
      const second = await again.start();
      assert.equal(formatCidr(second.subnet), formatCidr(first.subnet));
      const prev = new LeaseManager({ ...opts, publicIP: parseIP('198.18.3.2'), previousSubnet: parseCidr('10.150.77.0/24') });
      assert.equal(formatCidr((await prev.start()).subnet), '10.150.77.0/24');
      await Promise.all([again.stop(), prev.stop({ release: true })]);
      assert.equal(await store.getSubnet(parseCidr('10.150.77.0/24')), undefined, 'released on stop');
    });

    it('treats removal of its own lease as fatal, with a clear message', async () => {
      const store = open();
      const config = parseNetworkConfig('{"Network":"10.160.0.0/16","Backend":{"Type":"host-gw"}}');
      const statuses: ManagerStatus[] = [];
      const m = new LeaseManager({
        store, config, publicIP: parseIP('198.18.4.1'), backendType: 'host-gw', ttlSeconds: 120,
        log: quietLog().log, onStatus: (s) => statuses.push(s),
      });
      const lease = await m.start();
      const w = m.watchOthers(() => {});
      try {
        await w.start();
        await store.deleteSubnet(lease.subnet);
        await until('fatal status', () => m.status.type === 'fatal');
        const st = m.status;
        assert.match(st.type === 'fatal' ? st.error.message : '', /own subnet lease lost: lease 10\.160\.\d+\.0\/24 was removed/);
      } finally {
        await w.close();
        await m.stop();
      }
    });

    it('reads leases byte for byte as flanneld v0.20-v0.28 writes them ("PublicIPv6": null)', async () => {
      const prefix = uniquePrefix();
      const writer = open(prefix);
      const reader = open(prefix);
      for (const l of FLANNELD_LEASES) {
        assert.equal((await writer.writeSubnet(parseCidr(l.subnet), l.value, 60, { type: 'absent' })).type, 'written', l.subnet);
      }
      const { entries } = await reader.listSubnets();
      for (const l of FLANNELD_LEASES) {
        const e = entries.find((x) => formatCidr(x.subnet) === l.subnet);
        assert.equal(e?.value, l.value, `${l.subnet} is stored as written`);
        const p = parseLease(e!);
        assert.ok(p.ok, p.ok ? '' : p.reason);
        assert.deepEqual([formatIP(p.lease.attrs.publicIP), p.lease.attrs.publicIPv6, p.lease.attrs.backendType], [l.publicIP, undefined, l.backendType]);
      }
      const vx = parseLease(entries.find((x) => formatCidr(x.subnet) === '10.244.21.0/24')!);
      assert.deepEqual(vx.ok && vx.lease.attrs.backendData, { VNI: 1, VtepMAC: '8e:f5:62:5c:1b:0a' });
      const events: LeaseEvent[] = [];
      const { lines, log } = quietLog();
      const w = new LeaseWatcher({ store: reader, onEvent: (e) => events.push(e), log });
      try {
        await w.start();
        const late = { subnet: '10.244.24.0/24', value: '{"PublicIP":"198.18.0.24","PublicIPv6":null,"BackendType":"host-gw"}' };
        await writer.writeSubnet(parseCidr(late.subnet), late.value, 60, { type: 'absent' });
        await until('the lease written after the listing', () => events.length === FLANNELD_LEASES.length + 1);
        assert.deepEqual(events.map((e) => `${e.type} ${formatCidr(e.lease.subnet)}`).sort(),
          [...FLANNELD_LEASES.map((l) => l.subnet), late.subnet].map((s) => `added ${s}`).sort());
        assert.deepEqual(lines.filter((l) => l.includes('"warn"')), [], 'no flanneld lease is skipped as unreadable');
      } finally {
        await w.close();
      }
    });

    it('reads a dual-stack lease under flanneld\'s key (10.244.25.0-24&fd00:10:244:25::-64) as its IPv4 subnet', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const dual = FLANNELD_DUAL_STACK_LEASE;
      const events: LeaseEvent[] = [];
      const { lines, log } = quietLog();
      const w = new LeaseWatcher({ store, onEvent: (e) => events.push(e), log });
      try {
        await w.start();
        await factory.putByHand(prefix, dual.key, dual.value);
        await until('the dual-stack lease', () => events.length === 1);
        const ev = events[0]!;
        assert.equal(`${ev.type} ${formatCidr(ev.lease.subnet)}`, `added ${dual.subnet}`);
        assert.equal(formatIP(ev.lease.attrs.publicIP), '198.18.0.25');
        assert.equal(ev.lease.attrs.publicIPv6 && formatIP(ev.lease.attrs.publicIPv6), 'fd00:198:18::25');
        assert.deepEqual(ev.lease.attrs.backendData, { VNI: 1, VtepMAC: '8e:f5:62:5c:1b:25' });
        assert.equal(ev.lease.ipv6Subnet && formatCidr(ev.lease.ipv6Subnet), 'fd00:10:244:25::/64');
        assert.deepEqual(ev.lease.attrs.backendV6Data, { VNI: 1, VtepMAC: '8e:f5:62:5c:1b:26' });
        assert.deepEqual((await store.listSubnets()).entries.map((e) => formatCidr(e.subnet)), [dual.subnet]);
        assert.equal((await store.getSubnet(parseCidr(dual.subnet)))?.value, dual.value);
        // Taken: nobody is handed its IPv4 subnet, and the operator's release finds it.
        assert.deepEqual(await store.writeSubnet(parseCidr(dual.subnet), attrs('198.18.0.99'), 60, { type: 'absent' }), { type: 'conflict' });
        assert.equal(await store.deleteSubnet(parseCidr(dual.subnet)), true);
        await until('its removal', () => events.length === 2);
        assert.equal(`${events[1]!.type} ${formatCidr(events[1]!.lease.subnet)}`, `removed ${dual.subnet}`);
        assert.equal(await store.getSubnet(parseCidr(dual.subnet)), undefined);
        assert.deepEqual(lines.filter((l) => l.includes('"warn"')), []);
      } finally {
        await w.close();
      }
    });

    it('dual-stack network: the lease manager leases an IPv4 and an IPv6 subnet under flanneld\'s "<v4>&<v6>" key, takes it back after a restart, and releases it', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const config = parseNetworkConfig('{"Network":"10.162.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:162::/56","Backend":{"Type":"vxlan"}}');
      const mk = (ip: string, ip6: string) => new LeaseManager({
        store, config, publicIP: parseIP(ip), publicIPv6: parseIP(ip6), backendType: 'vxlan', ttlSeconds: 600,
        backendData: { VtepMAC: '0a:00:00:00:00:04' }, backendV6Data: { VtepMAC: '0a:00:00:00:00:06' }, log: quietLog().log,
      });
      const a = mk('198.18.5.1', '2001:2::5:1');
      const b = mk('198.18.5.2', '2001:2::5:2');
      const la = await a.start();
      const lb = await b.start();
      assert.ok(la.ipv6Subnet && lb.ipv6Subnet, 'both leases have an IPv6 subnet');
      assert.equal(la.ipv6Subnet.prefix, 64);
      assert.notEqual(formatCidr(la.subnet), formatCidr(lb.subnet));
      assert.notEqual(formatCidr(la.ipv6Subnet), formatCidr(lb.ipv6Subnet));
      const listed = (await store.listSubnets()).entries;
      const entryA = listed.find((e) => formatCidr(e.subnet) === formatCidr(la.subnet));
      assert.equal(entryA?.ipv6Subnet && formatCidr(entryA.ipv6Subnet), formatCidr(la.ipv6Subnet), 'the key names both subnets');
      const parsed = entryA && parseLease(entryA);
      assert.ok(parsed?.ok);
      assert.equal(parsed.lease.attrs.publicIPv6 && formatIP(parsed.lease.attrs.publicIPv6), '2001:2::5:1');
      assert.deepEqual(parsed.lease.attrs.backendV6Data, { VtepMAC: '0a:00:00:00:00:06' });
      // Its IPv4 subnet is held whatever the other key form: a plain write of it conflicts, and
      // so does a dual-stack one with another IPv6 half.
      assert.deepEqual(await store.writeSubnet(la.subnet, attrs('198.18.5.9'), 60, { type: 'absent' }), { type: 'conflict' });
      assert.deepEqual(await store.writeSubnet(la.subnet, attrs('198.18.5.9'), 60, { type: 'absent' }, parseCidr('fd00:162:0:ff::/64')), { type: 'conflict' });
      // A restart (the same public IP) takes the same pair back.
      await a.stop();
      const again = mk('198.18.5.1', '2001:2::5:1');
      const la2 = await again.start();
      assert.equal(formatCidr(la2.subnet), formatCidr(la.subnet));
      assert.equal(la2.ipv6Subnet && formatCidr(la2.ipv6Subnet), formatCidr(la.ipv6Subnet));
      await again.renewOnce();
      assert.equal(again.status.type, 'ready');
      await again.stop({ release: true });
      await b.stop({ release: true });
      assert.deepEqual((await store.listSubnets()).entries, [], 'released under the dual-stack key');
    });

    it('an own IPv4-only lease is replaced by a dual-stack one when IPv6 is enabled, keeping its IPv4 subnet', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const v4 = parseNetworkConfig('{"Network":"10.163.0.0/16","Backend":{"Type":"host-gw"}}');
      const dual = parseNetworkConfig('{"Network":"10.163.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:163::/56","Backend":{"Type":"host-gw"}}');
      const first = new LeaseManager({ store, config: v4, publicIP: parseIP('198.18.6.1'), backendType: 'host-gw', ttlSeconds: 600, log: quietLog().log });
      const l1 = await first.start();
      assert.equal(l1.ipv6Subnet, undefined);
      await first.stop();
      const second = new LeaseManager({ store, config: dual, publicIP: parseIP('198.18.6.1'), publicIPv6: parseIP('2001:2::6:1'), backendType: 'host-gw', ttlSeconds: 600, log: quietLog().log });
      const l2 = await second.start();
      assert.equal(formatCidr(l2.subnet), formatCidr(l1.subnet));
      assert.ok(l2.ipv6Subnet);
      const entries = (await store.listSubnets()).entries;
      assert.equal(entries.length, 1, 'the IPv4-only key is gone');
      assert.equal(entries[0]?.ipv6Subnet && formatCidr(entries[0].ipv6Subnet), formatCidr(l2.ipv6Subnet));
      await second.stop({ release: true });
    });

    it('a dual-stack network turned IPv6-only: the own dual-stack lease is replaced by an IPv6 one (its IPv6 subnet kept), and others\' IPv6 halves stay taken', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const dual = parseNetworkConfig('{"Network":"10.165.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:165::/61","IPv6SubnetMin":"fd00:165:0:1::","IPv6SubnetMax":"fd00:165:0:4::","Backend":{"Type":"host-gw"}}');
      const only = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:165::/61","IPv6SubnetMin":"fd00:165:0:1::","IPv6SubnetMax":"fd00:165:0:4::","Backend":{"Type":"host-gw"}}');
      const mk = (config: typeof dual, ip: string, ip6: string) => new LeaseManager({ store, config, publicIP: parseIP(ip), publicIPv6: parseIP(ip6), backendType: 'host-gw', ttlSeconds: 600, log: quietLog().log });
      // Three dual-stack nodes hold three of the four IPv6 /64s.
      const others = [mk(dual, '198.18.8.2', '2001:2::8:2'), mk(dual, '198.18.8.3', '2001:2::8:3')];
      for (const o of others) await o.start();
      const me = mk(dual, '198.18.8.1', '2001:2::8:1');
      const before = await me.start();
      await me.stop();
      const after = await mk(only, '198.18.8.1', '2001:2::8:1').start();
      assert.equal(formatCidr(after.subnet), formatCidr(before.ipv6Subnet!), 'its IPv6 subnet kept');
      const keys = (await store.listSubnets()).entries.map((e) => `${formatCidr(e.subnet)}${e.ipv6Subnet && e.ipv6Subnet !== e.subnet ? `&${formatCidr(e.ipv6Subnet)}` : ''}`);
      assert.equal(keys.length, 3, `the old dual-stack lease is gone: ${keys.join(', ')}`);
      // A fourth node on the IPv6-only config gets the one /64 no dual-stack lease holds.
      const fourth = await mk(only, '198.18.8.4', '2001:2::8:4').start();
      const held = new Set((await store.listSubnets()).entries.map((e) => formatCidr(e.ipv6Subnet ?? e.subnet)));
      assert.equal(held.size, 4, 'four distinct IPv6 subnets');
      assert.ok(held.has(formatCidr(fourth.subnet)));
    });

    it('IPv6-only network: the lease is keyed by its IPv6 subnet and publishes PublicIP 0.0.0.0 beside PublicIPv6', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const config = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:164::/56","Backend":{"Type":"host-gw"}}');
      const m = new LeaseManager({ store, config, publicIP: parseIP('2001:2::7:1'), backendType: 'host-gw', ttlSeconds: 600, log: quietLog().log });
      const l = await m.start();
      assert.equal(l.subnet.ip.family, 6);
      assert.equal(l.ipv6Subnet && formatCidr(l.ipv6Subnet), formatCidr(l.subnet));
      const [e] = (await store.listSubnets()).entries;
      assert.equal(e && formatCidr(e.subnet), formatCidr(l.subnet));
      assert.deepEqual(JSON.parse(e?.value ?? '{}'), { PublicIP: '0.0.0.0', PublicIPv6: '2001:2::7:1', BackendType: 'host-gw' });
      const p = e && parseLease(e);
      assert.ok(p?.ok);
      assert.equal(formatIP(p.lease.attrs.publicIP), '2001:2::7:1', 'known by its IPv6 address');
      await m.stop({ release: true });
      assert.deepEqual((await store.listSubnets()).entries, []);
    });

    it('notices its own lease removed by hand at once, not at the next renewal', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const config = parseNetworkConfig('{"Network":"10.161.0.0/16","Backend":{"Type":"host-gw"}}');
      const m = new LeaseManager({ store, config, publicIP: parseIP('198.18.4.2'), backendType: 'host-gw', ttlSeconds: 600, log: quietLog().log });
      const lease = await m.start();
      const w = m.watchOthers(() => {});
      try {
        await w.start();
        await factory.removeByHand(prefix, lease.subnet);
        // The next renewal is 5 minutes away: only a watch of the own key notices this.
        await until('fatal status', () => m.status.type === 'fatal', 10_000);
        const st = m.status;
        assert.match(st.type === 'fatal' ? st.error.message : '', new RegExp(`own subnet lease lost: lease ${formatCidr(lease.subnet).replace(/\./g, '\\.')} was removed`));
      } finally {
        await w.close();
        await m.stop();
      }
    });

    it('a second holder of its own public IP takes the lease over: the first stops at once, naming why', async () => {
      const prefix = uniquePrefix();
      const store = open(prefix);
      const other = open(prefix);
      const config = parseNetworkConfig('{"Network":"10.162.0.0/16","Backend":{"Type":"host-gw"}}');
      const opts = { config, publicIP: parseIP('198.18.4.3'), backendType: 'host-gw', ttlSeconds: 600 };
      const first = new LeaseManager({ ...opts, store, log: quietLog().log });
      const lease = await first.start();
      const w = first.watchOthers(() => {});
      const second = new LeaseManager({ ...opts, store: other, log: quietLog().log });
      try {
        await w.start();
        const taken = await second.start();
        assert.equal(formatCidr(taken.subnet), formatCidr(lease.subnet), 'the same public IP reuses the lease (a restart)');
        // Its next renewal is 5 minutes away: only a watch of the own key notices this.
        await until('the first holder stops', () => first.status.type === 'fatal', 10_000);
        assert.match(fatalMessage(first.status), /taken over by another writer.*public IP 198\.18\.4\.3/);
        assert.equal(second.status.type, 'ready');
      } finally {
        await w.close();
        await Promise.all([first.stop(), second.stop()]);
      }
    });

    it('its own renewals are not mistaken for someone else\'s writes', async () => {
      const store = open();
      const config = parseNetworkConfig('{"Network":"10.163.0.0/16","Backend":{"Type":"host-gw"}}');
      let renewals = 0;
      const counted = Object.create(store) as SubnetStore;
      counted.renewSubnet = (h) => { renewals++; return store.renewSubnet(h); };
      const m = new LeaseManager({ store: counted, config, publicIP: parseIP('198.18.4.4'), backendType: 'host-gw', ttlSeconds: 600, renewEverySeconds: 0.1, log: quietLog().log });
      await m.start();
      const w = m.watchOthers(() => {});
      try {
        await w.start();
        await until('ten renewals', () => renewals >= 10);
        assert.equal(m.status.type, 'ready', fatalMessage(m.status));
      } finally {
        await w.close();
        await m.stop();
      }
    });
  });
}

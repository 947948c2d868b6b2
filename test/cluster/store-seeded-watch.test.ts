// The lease manager hands the listing it chose its subnet from to its first watcher, so a
// (re)starting agent lists the store once, not twice. What must still hold: every other lease is
// delivered, a change made between that listing and the watch's start is not missed, a removal of
// the node's own lease after it is still noticed, and the own key's absence from the (older) seed
// is not mistaken for a removal.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, nthSubnet, parseCidr, parseIP } from '../../src/net/ip.js';
import { createLogger } from '../../src/log.js';
import { parseNetworkConfig } from '../../src/store/config.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { encodeLeaseAttrs } from '../../src/store/lease.js';
import { LeaseManager, type ManagerStatus } from '../../src/store/lease-manager.js';
import type { SubnetStore } from '../../src/store/types.js';
import { uniquePrefix, until } from './store-contract.js';

const attrs = (ip: string) => encodeLeaseAttrs({ publicIP: parseIP(ip), publicIPv6: undefined, backendType: 'host-gw', backendData: null });
const quiet = createLogger({}, { write: () => {} });

/** The store with its listSubnets and renewSubnet calls counted. */
function counting(store: FileStore): { store: SubnetStore; lists: () => number; renewals: () => number } {
  let lists = 0;
  let renewals = 0;
  const wrapped = Object.create(store) as FileStore;
  wrapped.listSubnets = (o) => { lists++; return store.listSubnets(o); };
  wrapped.renewSubnet = (h) => { renewals++; return store.renewSubnet(h); };
  return { store: wrapped, lists: () => lists, renewals: () => renewals };
}

describe('lease manager → watcher listing hand-off', () => {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'wc2-seeded-')); });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  it('lists once, misses nothing written after the listing, and still sees its own removal', async () => {
    const prefix = uniquePrefix();
    const other = new FileStore({ dir, prefix });
    const net = parseCidr('10.90.0.0/16');
    const config = parseNetworkConfig(JSON.stringify({ Network: formatCidr(net), Backend: { Type: 'host-gw' } }));
    const first = Array.from({ length: 50 }, (_, i) => ({ subnet: nthSubnet(net, 24, i), value: attrs(`198.18.30.${i + 1}`) }));
    await other.writeSubnetsIfAbsent(first, 600);

    const c = counting(new FileStore({ dir, prefix }));
    const statuses: ManagerStatus[] = [];
    const m = new LeaseManager({
      store: c.store, config, publicIP: parseIP('198.18.31.1'), backendType: 'host-gw', ttlSeconds: 600,
      log: quiet, onStatus: (s) => statuses.push(s),
    });
    const held = new Set<string>();
    const w = m.watchOthers.bind(m);
    try {
      const lease = await m.start();
      assert.equal(c.lists(), 1, 'acquiring lists once');
      // Between the manager's listing and the watch: one more lease, one removed.
      const late = nthSubnet(net, 24, 200);
      await other.writeSubnet(late, attrs('198.18.30.201'), 600, { type: 'absent' });
      await other.deleteSubnet(first[0]!.subnet);

      const watcher = w((e) => { if (e.type === 'added') held.add(formatCidr(e.lease.subnet)); else held.delete(formatCidr(e.lease.subnet)); });
      try {
        await watcher.start();
        assert.equal(c.lists(), 1, 'the watcher took the manager\'s listing instead of listing again');
        const want = new Set([...first.slice(1).map((x) => formatCidr(x.subnet)), formatCidr(late)]);
        await until('late write and removal delivered', () => held.size === want.size && [...want].every((k) => held.has(k)));
        assert.ok(!held.has(formatCidr(lease.subnet)), 'own lease is not a peer');
        await new Promise((r) => setTimeout(r, 150));
        assert.equal(c.renewals(), 0, 'the own key missing from the older listing is not taken for a removal');

        await other.deleteSubnet(lease.subnet);
        await until('own removal noticed as fatal', () => m.status.type === 'fatal');
        assert.ok(statuses.some((s) => s.type === 'fatal'));

        // A second watcher has no seed: it lists for itself.
        const again = m.watchOthers(() => {});
        try {
          await again.start();
          assert.equal(c.lists(), 2);
        } finally {
          await again.close();
        }
      } finally {
        await watcher.close();
      }
    } finally {
      await m.stop();
      await other.close();
    }
  });
});

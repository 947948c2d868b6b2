// One contract for the revisioned key/value core every store has (src/store/core.ts), and for the
// KeyValueStore view over it; run against the file store and a real etcd by store.test.ts.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { KvCore, KvEvent } from '../../src/store/core.js';
import { keyValueView, type KeyValueEvent } from '../../src/store/kv.js';
import { uniquePrefix, until } from './store-contract.js';

export interface KvCoreFactory {
  /** A fresh core on a prefix no other test uses. */
  open(prefix: string): KvCore;
  /** The bytes stored for `<prefix>/<key>`, read beside the store (etcdctl get; cat of the file). */
  readByHand(prefix: string, key: string): Promise<string | undefined>;
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

const show = (ev: KvEvent): string =>
  ev.type === 'put' ? `put ${ev.entry.key}=${ev.entry.value}` : ev.type === 'delete' ? `del ${ev.key}` : 'resync';

export function kvCoreContract(name: string, factory: KvCoreFactory): void {
  describe(`key/value core contract: ${name}`, () => {
    const opened: KvCore[] = [];
    const open = (prefix = uniquePrefix()) => {
      const c = factory.open(prefix);
      opened.push(c);
      return c;
    };
    before(async () => { await factory.setup?.(); });
    after(async () => {
      await Promise.all(opened.map((c) => c.close()));
      await factory.teardown?.();
    });

    it('keeps the layout of DESIGN.md: a key is <prefix>/<key> holding the value as written', async () => {
      const prefix = uniquePrefix();
      const kv = open(prefix);
      const value = '{"metadata":{"name":"web","namespace":"prod"},"spec":{"podSelector":{}}}';
      await kv.put('policies/prod/web', value);
      await kv.put('namespaces/prod', '{"name":"prod","labels":{}}');
      assert.equal(await factory.readByHand(prefix, 'policies/prod/web'), value);
      assert.equal(await factory.readByHand(prefix, 'namespaces/prod'), '{"name":"prod","labels":{}}');
      assert.equal((await kv.get('policies/prod/web'))?.value, value);
      assert.equal(await kv.get('policies/prod/none'), undefined);
    });

    it('lists a prefix sorted, at a revision that every later write exceeds', async () => {
      const kv = open();
      await kv.put('endpoints/b/ns/pod/eth0', 'b');
      await kv.put('endpoints/a/ns/pod/eth0', 'a');
      await kv.put('policies/ns/p', 'p');
      const l = await kv.list('endpoints/');
      assert.deepEqual(l.entries.map((e) => `${e.key}=${e.value}`), ['endpoints/a/ns/pod/eth0=a', 'endpoints/b/ns/pod/eth0=b']);
      for (const e of l.entries) assert.ok(e.revision <= l.revision, `${e.key} at ${e.revision}, listing at ${l.revision}`);
      const w = await kv.put('endpoints/c/ns/pod/eth0', 'c');
      assert.ok(w.type === 'written' && w.revision > l.revision);
      assert.deepEqual((await kv.list('nothing/')).entries, []);
      await assert.rejects(kv.list('endpoints'), /must end in '\/'/);
      await assert.rejects(kv.get('policies/../x'), /invalid store key/);
    });

    it('put-if-absent and put-if-revision decide by the key\'s last write; so does a conditional delete', async () => {
      const kv = open();
      const first = await kv.put('namespaces/dev', 'v1', { expect: { type: 'absent' } });
      assert.equal(first.type, 'written');
      assert.equal((await kv.put('namespaces/dev', 'other', { expect: { type: 'absent' } })).type, 'conflict');
      const got = await kv.get('namespaces/dev');
      assert.equal(got?.value, 'v1');
      const second = await kv.put('namespaces/dev', 'v2', { expect: { type: 'revision', revision: got!.revision } });
      assert.equal(second.type, 'written');
      assert.equal((await kv.put('namespaces/dev', 'v3', { expect: { type: 'revision', revision: got!.revision } })).type, 'conflict', 'a stale revision loses');
      // A write to another key moves the store's revision but not this key's.
      await kv.put('namespaces/other', 'x');
      const now = await kv.get('namespaces/dev');
      assert.equal(now?.value, 'v2');
      assert.equal((await kv.delete('namespaces/dev', { expect: { type: 'revision', revision: got!.revision } })), false);
      assert.equal((await kv.delete('namespaces/dev', { expect: { type: 'revision', revision: now!.revision } })), true);
      assert.equal(await kv.get('namespaces/dev'), undefined);
      assert.equal(await kv.delete('namespaces/dev'), false);
      assert.equal((await kv.put('namespaces/dev', 'v4', { expect: { type: 'revision', revision: now!.revision } })).type, 'conflict', 'a deleted key has no revision to match');
    });

    it('a lease key carries a TTL and an owner; a delete by another owner is refused', async () => {
      const kv = open();
      const w = await kv.put('subnets/10.99.1.0-24', '{"PublicIP":"198.18.99.1"}', { expect: { type: 'absent' }, ttlSeconds: 30 });
      assert.ok(w.type === 'written');
      assert.notEqual(w.owner, '');
      assert.ok(w.expiresAt !== null && w.expiresAt > Date.now());
      assert.equal((await kv.get('subnets/10.99.1.0-24'))?.owner, w.owner);
      assert.equal(await kv.delete('subnets/10.99.1.0-24', { owner: `${w.owner}1` }), false);
      assert.equal(await kv.delete('subnets/10.99.1.0-24', { owner: w.owner }), true);
      assert.equal(await kv.get('subnets/10.99.1.0-24'), undefined);
    });

    it('a watch from a listing\'s revision delivers every later change under its prefix, in order', async () => {
      const kv = open();
      await kv.put('policies/a/one', '1');
      await kv.put('policies/a/gone', 'g');
      const { revision } = await kv.list('policies/');
      // Written after the listing but before the watch exists: still delivered.
      await kv.put('policies/a/two', '2');
      const events: KvEvent[] = [];
      const held = new Map<string, string>([['policies/a/one', '1'], ['policies/a/gone', 'g']]);
      const w = kv.watch('policies/', revision, (ev) => {
        events.push(ev);
        if (ev.type === 'put') held.set(ev.entry.key, ev.entry.value);
        else if (ev.type === 'delete') held.delete(ev.key);
      });
      try {
        await until('policies/a/two', () => held.has('policies/a/two'));
        await kv.put('namespaces/a', 'not watched');
        await kv.put('policies/a/one', '1b');
        await kv.delete('policies/a/gone');
        const want = JSON.stringify([['policies/a/one', '1b'], ['policies/a/two', '2']]);
        await until('the watch to converge', () => JSON.stringify([...held].sort()) === want);
        // A store may fold several changes of one key into its last state, but never reorders.
        const revs = events.map((ev) => (ev.type === 'put' ? ev.entry.revision : ev.type === 'delete' ? ev.revision : -1n));
        assert.deepEqual(revs, [...revs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), events.map(show).join(', '));
        assert.ok(events.every((ev) => ev.type !== 'resync' && (ev.type === 'put' ? ev.entry.key : ev.key).startsWith('policies/')), events.map(show).join(', '));
      } finally {
        await w.close();
      }
    });

    it('the key/value view: a snapshot, then changes; the same keys as the core', async () => {
      const core = open();
      const view = keyValueView(core);
      await view.put('namespaces/x', '{"name":"x"}');
      const events: KeyValueEvent[] = [];
      const w = view.watch('namespaces/', (ev) => events.push(ev));
      try {
        await until('snapshot', () => events.length > 0);
        assert.deepEqual(events[0], { type: 'snapshot', entries: [{ key: 'namespaces/x', value: '{"name":"x"}' }] });
        await view.put('namespaces/y', '{"name":"y"}');
        assert.equal(await view.delete('namespaces/x'), true);
        await until('put and delete', () => events.length >= 3);
        assert.deepEqual(events.slice(1), [{ type: 'put', key: 'namespaces/y', value: '{"name":"y"}' }, { type: 'delete', key: 'namespaces/x' }]);
        assert.equal((await core.get('namespaces/y'))?.value, '{"name":"y"}');
        assert.deepEqual(await view.list('namespaces/'), [{ key: 'namespaces/y', value: '{"name":"y"}' }]);
      } finally {
        await w.close();
      }
    });
  });
}

// File-store specifics: several processes sharing one directory, and watchers that outlive a
// rotation of the change log (the file store's compaction) without missing a removal.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, formatIP, nthSubnet, parseCidr, parseIP, subnetKey } from '../../src/net/ip.js';
import { createLogger } from '../../src/log.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { encodeLeaseAttrs } from '../../src/store/lease.js';
import { LeaseWatcher, type LeaseEvent } from '../../src/store/watch.js';
import { keyValueView, type KeyValueEvent } from '../../src/store/kv.js';
import { uniquePrefix, until } from './store-contract.js';

const attrs = (ip: string) => encodeLeaseAttrs({ publicIP: parseIP(ip), publicIPv6: undefined, backendType: 'host-gw', backendData: null });
const quiet = createLogger({}, { write: () => {} });

describe('file store', () => {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'weft-filestore-')); });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  it('watchers miss nothing across change-log rotations', async () => {
    const prefix = uniquePrefix();
    const writer = new FileStore({ dir, prefix, logRotateBytes: 300 });
    const reader = new FileStore({ dir, prefix, logRotateBytes: 300 });
    const held = new Map<string, string>();
    const w = new LeaseWatcher({
      store: reader, log: quiet,
      onEvent: (e: LeaseEvent) => {
        if (e.type === 'added') held.set(formatCidr(e.lease.subnet), e.lease.attrs.publicIP.value.toString());
        else held.delete(formatCidr(e.lease.subnet));
      },
    });
    try {
      await w.start();
      const net = parseCidr('10.70.0.0/16');
      for (let i = 0; i < 60; i++) {
        await writer.writeSubnet(nthSubnet(net, 24, i), attrs(`198.18.20.${i + 1}`), 60, { type: 'absent' });
        if (i % 3 === 0) await writer.deleteSubnet(nthSubnet(net, 24, i));
      }
      const expected = (await writer.listSubnets()).entries.map((e) => formatCidr(e.subnet)).sort();
      assert.equal(expected.length, 40);
      await until('watcher converges', () => JSON.stringify([...held.keys()].sort()) === JSON.stringify(expected));
      assert.ok(w.resyncs >= 1, 'the log rotated at least once under the watcher');
    } finally {
      await w.close();
      await Promise.all([writer.close(), reader.close()]);
    }
  });

  it('one change log: lease and key/value watchers see each other\'s writers, in one revision order', async () => {
    const prefix = uniquePrefix();
    const writer = new FileStore({ dir, prefix });
    const reader = new FileStore({ dir, prefix });
    const leases = new Set<string>();
    const w = new LeaseWatcher({
      store: reader, log: quiet,
      onEvent: (e) => { if (e.type === 'added') leases.add(formatCidr(e.lease.subnet)); else leases.delete(formatCidr(e.lease.subnet)); },
    });
    const kv = keyValueView(reader);
    const policies = new Map<string, string>();
    const kw = kv.watch('policies/', (ev: KeyValueEvent) => {
      if (ev.type === 'snapshot') { policies.clear(); for (const e of ev.entries) policies.set(e.key, e.value); }
      else if (ev.type === 'put') policies.set(ev.key, ev.value);
      else if (ev.type === 'delete') policies.delete(ev.key);
    });
    try {
      await w.start();
      const l1 = await writer.writeSubnet(parseCidr('10.75.1.0/24'), attrs('198.18.25.1'), 60, { type: 'absent' });
      const p1 = await writer.put('policies/prod/web', '{"v":1}');
      await writer.put('policies/prod/db', '{"v":1}');
      await writer.delete('policies/prod/web');
      await writer.writeSubnet(parseCidr('10.75.2.0/24'), attrs('198.18.25.2'), 60, { type: 'absent' });
      await until('lease watcher converges', () => leases.size === 2);
      await until('key/value watcher converges', () => JSON.stringify([...policies]) === JSON.stringify([['policies/prod/db', '{"v":1}']]));
      assert.ok(l1.type === 'written' && p1.type === 'written' && p1.revision === l1.held.revision + 1n, 'one revision sequence for every key');
      const lines = readFileSync(join(writer.where, 'changes.log'), 'utf8').trim().split('\n').filter((l) => !l.startsWith('#'));
      assert.deepEqual(lines.map((l) => l.split(' ').slice(1, 3).join(' ')),
        ['put 10.75.1.0-24', 'put policies/prod/web', 'put policies/prod/db', 'del policies/prod/web', 'put 10.75.2.0-24']);
      assert.equal(existsSync(join(writer.where, 'kv-changes.log')), false, 'no second log');
    } finally {
      await kw.close();
      await w.close();
      await Promise.all([writer.close(), reader.close()]);
    }
  });

  it('a key/value watcher whose log rotated under it re-lists and misses no delete', async () => {
    const prefix = uniquePrefix();
    const writer = new FileStore({ dir, prefix, logRotateBytes: 200 });
    const reader = new FileStore({ dir, prefix, logRotateBytes: 200 });
    const kv = keyValueView(reader);
    const held = new Map<string, string>();
    let snapshots = 0;
    const kw = kv.watch('endpoints/', (ev: KeyValueEvent) => {
      if (ev.type === 'snapshot') { snapshots++; held.clear(); for (const e of ev.entries) held.set(e.key, e.value); }
      else if (ev.type === 'put') held.set(ev.key, ev.value);
      else if (ev.type === 'delete') held.delete(ev.key);
    });
    try {
      await until('first snapshot', () => snapshots === 1);
      for (let i = 0; i < 40; i++) await writer.put(`endpoints/node-${i}/ns/pod/eth0`, `{"i":${i}}`);
      await until('puts seen', () => held.size === 40);
      const before = snapshots;
      // Rounds of deletes, each while the reader's event loop is held up past its poll: by the
      // time it reads, the log it was tailing has been replaced more than once, and only a new
      // listing can tell it what went away in between.
      for (let round = 0; round < 4; round++) {
        for (let i = round * 10; i < round * 10 + 10; i++) await writer.delete(`endpoints/node-${i}/ns/pod/eth0`);
        await writer.put(`endpoints/round-${round}/ns/pod/eth0`, '{}');
        const t = Date.now();
        while (Date.now() - t < 60) { /* hold the loop */ }
        await new Promise((r) => setTimeout(r, 50));
      }
      const deleted = 40 - 4;
      await until('every delete seen', () => held.size === 40 - deleted);
      const want = (await kv.list('endpoints/')).map((e) => e.key);
      assert.deepEqual([...held.keys()].sort(), want);
      assert.ok(snapshots > before, 'the rotation was answered with a new snapshot');
    } finally {
      await kw.close();
      await Promise.all([writer.close(), reader.close()]);
    }
  });

  it('a put line carries its envelope to watchers; a line without one (an older writer) sends them to the key file', async () => {
    const prefix = uniquePrefix();
    const store = new FileStore({ dir, prefix });
    const held = new Map<string, string>();
    const w = new LeaseWatcher({
      store, log: quiet,
      onEvent: (e) => { if (e.type === 'added') held.set(formatCidr(e.lease.subnet), formatIP(e.lease.attrs.publicIP)); else held.delete(formatCidr(e.lease.subnet)); },
    });
    try {
      await w.start();
      await store.writeSubnetsIfAbsent([{ subnet: parseCidr('10.72.1.0/24'), value: attrs('198.18.22.1') }], 60);
      await store.writeSubnet(parseCidr('10.72.2.0/24'), attrs('198.18.22.2'), 60, { type: 'absent' });
      const log = readFileSync(join(store.where, 'changes.log'), 'utf8').trim().split('\n').filter((l) => !l.startsWith('#'));
      assert.equal(log.length, 2);
      for (const line of log) {
        const [, op, key, ...rest] = line.split(' ');
        assert.equal(op, 'put');
        assert.deepEqual(JSON.parse(rest.join(' ')), JSON.parse(readFileSync(join(store.where, 'subnets', key!), 'utf8')), 'the line holds the envelope written');
      }
      await until('both leases seen', () => held.size === 2);
      // An older writer: the key's file, the revision, then a line naming only the key.
      const key = subnetKey(parseCidr('10.72.3.0/24'));
      const rev = BigInt(readFileSync(join(store.where, 'rev'), 'utf8').trim()) + 1n;
      writeFileSync(join(store.where, 'subnets', key), JSON.stringify({ value: attrs('198.18.22.3'), expiresAt: Date.now() + 60_000, revision: String(rev), token: 'old' }));
      writeFileSync(join(store.where, 'rev'), String(rev));
      appendFileSync(join(store.where, 'changes.log'), `${rev} put ${key}\n`);
      await until('the old-format line is seen', () => held.get('10.72.3.0/24') === '198.18.22.3');
      assert.equal(held.get('10.72.1.0/24'), '198.18.22.1');
      await store.deleteSubnet(parseCidr('10.72.1.0/24'));
      await until('the delete is seen', () => !held.has('10.72.1.0/24'));
    } finally {
      await w.close();
      await store.close();
    }
  });

  it('a damaged rev file does not restart revisions: running watchers still see a new node\'s lease', async () => {
    // Garbage, an empty file, a number from long ago (a restored backup), no file at all.
    for (const damage of ['garbage\n', '', '1', undefined]) {
      const prefix = uniquePrefix();
      const first = new FileStore({ dir, prefix });
      const watching = new FileStore({ dir, prefix });
      const held = new Set<string>();
      const w = new LeaseWatcher({ store: watching, log: quiet, onEvent: (e) => { if (e.type === 'added') held.add(formatCidr(e.lease.subnet)); else held.delete(formatCidr(e.lease.subnet)); } });
      try {
        let last = 0n;
        for (let i = 1; i <= 5; i++) {
          const r = await first.writeSubnet(parseCidr(`10.74.${i}.0/24`), attrs(`198.18.24.${i}`), 60, { type: 'absent' });
          if (r.type === 'written') last = r.held.revision;
        }
        await first.deleteSubnet(parseCidr('10.74.5.0/24'));
        await w.start();
        assert.equal(held.size, 4);
        const rev = join(first.where, 'rev');
        if (damage === undefined) rmSync(rev); else writeFileSync(rev, damage);
        // A third node joins through a store of its own.
        const third = new FileStore({ dir, prefix });
        const r = await third.writeSubnet(parseCidr('10.74.9.0/24'), attrs('198.18.24.9'), 60, { type: 'absent' });
        await third.close();
        assert.equal(r.type, 'written');
        assert.ok(r.type === 'written' && r.held.revision > last + 1n, `damage ${JSON.stringify(damage)}: new revision ${r.type === 'written' ? r.held.revision : '-'} must follow ${last + 1n} (the delete)`);
        await until(`watchers see the third node (rev damage ${JSON.stringify(damage)})`, () => held.has('10.74.9.0/24'), 3000);
      } finally {
        await w.close();
        await Promise.all([first.close(), watching.close()]);
      }
    }
  });

  it('a garbage envelope on disk is skipped with a warning and blocks nobody else', async () => {
    const prefix = uniquePrefix();
    const store = new FileStore({ dir, prefix });
    const lines: string[] = [];
    writeFileSync(join(store.where, 'subnets', subnetKey(parseCidr('10.71.5.0/24'))), '\u0000garbage');
    await store.writeSubnet(parseCidr('10.71.6.0/24'), attrs('198.18.21.6'), 60, { type: 'absent' });
    const events: LeaseEvent[] = [];
    const w = new LeaseWatcher({ store, onEvent: (e) => events.push(e), log: createLogger({}, { write: (l) => { lines.push(l); } }) });
    try {
      await w.start();
      assert.deepEqual(events.map((e) => formatCidr(e.lease.subnet)), ['10.71.6.0/24']);
      assert.ok(lines.some((l) => l.includes('"warn"') && l.includes('10.71.5.0/24')));
      const conflict = await store.writeSubnet(parseCidr('10.71.5.0/24'), attrs('198.18.21.5'), 60, { type: 'absent' });
      assert.equal(conflict.type, 'conflict', 'an unreadable entry still holds its key');
    } finally {
      await w.close();
      await store.close();
    }
  });

  it('processes sharing the directory race safely and see each other within 100 ms', async () => {
    const prefix = uniquePrefix();
    const store = new FileStore({ dir, prefix });
    const events: { at: number; subnet: string }[] = [];
    const w = new LeaseWatcher({ store, log: quiet, onEvent: (e) => { if (e.type === 'added') events.push({ at: Date.now(), subnet: formatCidr(e.lease.subnet) }); } });
    await w.start();
    // Four child processes each put-if-absent the same 20 subnets: every subnet has one winner.
    const script = `
      import { FileStore } from ${JSON.stringify(new URL('../../src/store/file/file-store.js', import.meta.url).href)};
      import { nthSubnet, parseCidr } from ${JSON.stringify(new URL('../../src/net/ip.js', import.meta.url).href)};
      const s = new FileStore({ dir: process.argv[1], prefix: process.argv[2] });
      let won = 0;
      for (let i = 0; i < 20; i++) {
        const r = await s.writeSubnet(nthSubnet(parseCidr('10.72.0.0/16'), 24, i),
          JSON.stringify({ PublicIP: '198.18.22.' + process.argv[3], BackendType: 'host-gw' }), 60, { type: 'absent' });
        if (r.type === 'written') { won++; process.stdout.write(Date.now() + ' ' + i + '\\n'); }
      }
      await s.close();
    `;
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const runChild = (n: number) => new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir, prefix, String(n)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`child ${n} exited ${code}`))));
    });
    try {
      const outs = await Promise.all([1, 2, 3, 4].map(runChild));
      const wins = outs.flatMap((o) => o.trim().split('\n').filter((l) => l !== '').map((l) => l.split(' ')));
      assert.equal(wins.length, 20, 'each subnet won exactly once');
      assert.equal(new Set(wins.map((x) => x[1])).size, 20);
      await until('watcher saw all 20', () => events.length === 20, 2000);
      for (const [at, i] of wins) {
        const seen = events.find((e) => e.subnet === formatCidr(nthSubnet(parseCidr('10.72.0.0/16'), 24, Number(i))));
        assert.ok(seen, `subnet #${i} seen`);
        assert.ok(seen.at - Number(at) <= 100, `subnet #${i} seen ${seen.at - Number(at)} ms after its write`);
      }
    } finally {
      await w.close();
      await store.close();
    }
  });

  it('a watcher that starts while another process writes misses nothing (listing/watch hand-over)', async () => {
    const prefix = uniquePrefix();
    const n = 150;
    const script = `
      import { FileStore } from ${JSON.stringify(new URL('../../src/store/file/file-store.js', import.meta.url).href)};
      import { nthSubnet, parseCidr } from ${JSON.stringify(new URL('../../src/net/ip.js', import.meta.url).href)};
      const s = new FileStore({ dir: process.argv[1], prefix: process.argv[2] });
      for (let i = 0; i < Number(process.argv[3]); i++) {
        await s.writeSubnet(nthSubnet(parseCidr('10.73.0.0/16'), 24, i),
          JSON.stringify({ PublicIP: '198.18.23.1', BackendType: 'host-gw' }), 60, { type: 'absent' });
      }
      await s.close();
    `;
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir, prefix, String(n)], { env, stdio: 'ignore' });
    const done = new Promise<number | null>((resolve) => child.on('exit', resolve));
    // Watchers start one after another while the writer runs: each hand-over from its listing to
    // its watch is a chance to lose a write that lands in between.
    const watchers: Array<{ w: LeaseWatcher; store: FileStore; held: Set<string> }> = [];
    try {
      let exited = false;
      void done.then(() => { exited = true; });
      while (!exited && watchers.length < 40) {
        const store = new FileStore({ dir, prefix });
        const held = new Set<string>();
        const w = new LeaseWatcher({ store, log: quiet, onEvent: (e) => { if (e.type === 'added') held.add(formatCidr(e.lease.subnet)); else held.delete(formatCidr(e.lease.subnet)); } });
        await w.start();
        watchers.push({ w, store, held });
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(await done, 0, 'writer finished');
      assert.ok(watchers.length >= 2, 'watchers started while the writer ran');
      for (const [i, { held }] of watchers.entries()) {
        await until(`watcher #${i} holds all ${n} leases`, () => held.size === n, 5000);
      }
    } finally {
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
      for (const { w, store } of watchers) { await w.close(); await store.close(); }
    }
  });
});

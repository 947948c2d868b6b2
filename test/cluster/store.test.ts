// The shared SubnetStore and key/value core contracts against both implementations: the file
// store in a temp dir and a real single-member etcd on loopback.
import { mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { subnetKey } from '../../src/net/ip.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { EtcdStore } from '../../src/store/etcd/etcd-store.js';
import { startEtcd, type EtcdCluster } from '../../src/store/etcd/local-etcd.js';
import { storeContract } from './store-contract.js';
import { kvCoreContract } from './kv-contract.js';

let dir = '';
storeContract('file', {
  async setup() { dir = mkdtempSync(join(tmpdir(), 'weft-store-')); },
  open: (prefix) => new FileStore({ dir, prefix }),
  // rm of the lease file: no change-log line says so.
  async removeByHand(prefix, subnet) { unlinkSync(join(dir, ...prefix.split('/').filter((p) => p !== ''), 'subnets', subnetKey(subnet))); },
  // A lease file dropped in by hand: no change-log line, as from any program but the store.
  async putByHand(prefix, key, value) {
    const envelope = { value, expiresAt: Date.now() + 60_000, revision: '1', token: 'by-hand' };
    writeFileSync(join(dir, ...prefix.split('/').filter((p) => p !== ''), 'subnets', key), JSON.stringify(envelope));
  },
  async teardown() { rmSync(dir, { recursive: true, force: true }); },
});

let etcd: EtcdCluster | undefined;
storeContract('etcd', {
  async setup() { etcd = await startEtcd(1); },
  open: (prefix) => new EtcdStore({ endpoints: etcd!.endpoints, prefix }),
  // etcdctl del, through a client of its own.
  async removeByHand(prefix, subnet) {
    const client = new Etcd3({ hosts: etcd!.endpoints });
    try { await client.delete().key(`${prefix}/subnets/${subnetKey(subnet)}`).exec(); } finally { client.close(); }
  },
  // flanneld's createSubnet: put-if-absent (version 0) bound to a lease of its own.
  async putByHand(prefix, key, value) {
    const client = new Etcd3({ hosts: etcd!.endpoints });
    try {
      const lease = await client.leaseClient.leaseGrant({ TTL: 60, ID: 0 });
      const k = `${prefix}/subnets/${key}`;
      const r = await client.if(k, 'Version', '==', 0).then(client.put(k).value(value).lease(String(lease.ID))).commit();
      if (!r.succeeded) throw new Error(`${k} exists`);
    } finally { client.close(); }
  },
  async teardown() { await etcd?.stop(); },
});

let kvDir = '';
kvCoreContract('file', {
  async setup() { kvDir = mkdtempSync(join(tmpdir(), 'weft-kv-')); },
  open: (prefix) => new FileStore({ dir: kvDir, prefix }),
  async readByHand(prefix, key) {
    try { return readFileSync(join(kvDir, ...prefix.split('/'), ...key.split('/')), 'utf8'); } catch { return undefined; }
  },
  async teardown() { rmSync(kvDir, { recursive: true, force: true }); },
});

let kvEtcd: EtcdCluster | undefined;
kvCoreContract('etcd', {
  async setup() { kvEtcd = await startEtcd(1); },
  open: (prefix) => new EtcdStore({ endpoints: kvEtcd!.endpoints, prefix }),
  async readByHand(prefix, key) {
    const client = new Etcd3({ hosts: kvEtcd!.endpoints });
    try { return (await client.get(`${prefix}/${key}`).string()) ?? undefined; } finally { client.close(); }
  },
  async teardown() { await kvEtcd?.stop(); },
});

// The shared SubnetStore contract against both implementations: the file store in a temp dir
// and a real single-member etcd on loopback.
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { subnetKey } from '../../src/net/ip.js';
import { FileStore } from '../../src/store/file/file-store.js';
import { EtcdStore } from '../../src/store/etcd/etcd-store.js';
import { startEtcd, type EtcdCluster } from './etcd-helper.js';
import { storeContract } from './store-contract.js';

let dir = '';
storeContract('file', {
  async setup() { dir = mkdtempSync(join(tmpdir(), 'weft-store-')); },
  open: (prefix) => new FileStore({ dir, prefix }),
  // rm of the lease file: no change-log line says so.
  async removeByHand(prefix, subnet) { unlinkSync(join(dir, ...prefix.split('/').filter((p) => p !== ''), 'subnets', subnetKey(subnet))); },
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
  async teardown() { await etcd?.stop(); },
});

// The shared SubnetStore contract against both implementations: the file store in a temp dir
// and a real single-member etcd on loopback.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/store/file/file-store.js';
import { EtcdStore } from '../../src/store/etcd/etcd-store.js';
import { startEtcd, type EtcdCluster } from './etcd-helper.js';
import { storeContract } from './store-contract.js';

let dir = '';
storeContract('file', {
  async setup() { dir = mkdtempSync(join(tmpdir(), 'weft-store-')); },
  open: (prefix) => new FileStore({ dir, prefix }),
  async teardown() { rmSync(dir, { recursive: true, force: true }); },
});

let etcd: EtcdCluster | undefined;
storeContract('etcd', {
  async setup() { etcd = await startEtcd(1); },
  open: (prefix) => new EtcdStore({ endpoints: etcd!.endpoints, prefix }),
  async teardown() { await etcd?.stop(); },
});

// Where a lab's store is, as store settings and as the flags an operator would type: the file
// store in the lab's state dir, its etcd, or its kube-apiserver (reachable from the lab's hosts
// only). doctor and the web view open it so.
import { DEFAULT_PREFIX, storeSettingsFrom, type StoreSettings } from '../store/flags.js';
import { kubeStoreArgs } from './kube.js';
import { parseLabName } from './naming.js';
import { LabDirs, type LabRecord } from './state.js';

export function labStore(rec: LabRecord): { settings: StoreSettings; flags: string } {
  const dirs = LabDirs.of(parseLabName(rec.name));
  if (rec.store === 'file') return { settings: { type: 'file', dir: dirs.store, prefix: DEFAULT_PREFIX }, flags: `--store file --store-dir ${dirs.store}` };
  const args = rec.store === 'etcd' ? ['--store', 'etcd', '--etcd-endpoints', rec.etcdUrl ?? ''] : kubeStoreArgs(dirs);
  const values: Record<string, string> = {};
  for (let i = 0; i + 1 < args.length; i += 2) values[(args[i] ?? '').replace(/^--/, '')] = args[i + 1] ?? '';
  return { settings: storeSettingsFrom(values, {}), flags: args.join(' ') };
}

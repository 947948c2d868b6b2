// The store flags shared by weftd and weftctl (--store, --etcd-*, --store-dir, --prefix), each
// also settable as env WEFTD_<FLAG> (e.g. WEFTD_ETCD_ENDPOINTS); a flag beats its env var.
import { CniCode, WeftError } from '../errors.js';
import type { SubnetStore } from './types.js';

export const DEFAULT_PREFIX = '/weft/network';
export const DEFAULT_STORE_DIR = '/var/lib/weft/store';
export const DEFAULT_ETCD_ENDPOINTS = 'http://127.0.0.1:2379';

/** node:util parseArgs options for the store flags; spread into a command's own options. */
export const storeFlagOptions = {
  store: { type: 'string' },
  'etcd-endpoints': { type: 'string' },
  'etcd-cafile': { type: 'string' },
  'etcd-certfile': { type: 'string' },
  'etcd-keyfile': { type: 'string' },
  'etcd-username': { type: 'string' },
  'etcd-password': { type: 'string' },
  'store-dir': { type: 'string' },
  prefix: { type: 'string' },
} as const;

type StoreFlag = keyof typeof storeFlagOptions;

export const storeFlagsHelp = `Store flags (each also as env WEFTD_<FLAG>, e.g. WEFTD_ETCD_ENDPOINTS):
  --store etcd|file          where leases live (default file)
  --etcd-endpoints URLS      comma-separated etcd client URLs (default ${DEFAULT_ETCD_ENDPOINTS})
  --etcd-cafile FILE         CA bundle for etcd TLS
  --etcd-certfile FILE       client certificate for etcd TLS
  --etcd-keyfile FILE        client key for etcd TLS
  --etcd-username NAME       etcd user (with --etcd-password)
  --etcd-password PASS       etcd password
  --store-dir DIR            file store directory (default ${DEFAULT_STORE_DIR})
  --prefix PATH              key prefix (default ${DEFAULT_PREFIX})`;

export type StoreSettings =
  | {
    readonly type: 'etcd';
    readonly endpoints: string[];
    readonly prefix: string;
    readonly caFile?: string;
    readonly certFile?: string;
    readonly keyFile?: string;
    readonly username?: string;
    readonly password?: string;
  }
  | { readonly type: 'file'; readonly dir: string; readonly prefix: string };

function envName(flag: StoreFlag): string {
  return `WEFTD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/** Reads the store flags from parsed values (parseArgs) with env fallback. */
export function storeSettingsFrom(
  values: Partial<Record<string, unknown>>,
  env: NodeJS.ProcessEnv = process.env,
): StoreSettings {
  const get = (flag: StoreFlag): string | undefined => {
    const v = values[flag];
    if (typeof v === 'string') return v;
    const e = env[envName(flag)];
    return e === undefined || e === '' ? undefined : e;
  };
  const prefix = get('prefix') ?? DEFAULT_PREFIX;
  if (!prefix.startsWith('/') || prefix.length < 2 || prefix.includes('..')) {
    throw new WeftError(CniCode.InvalidEnvironment, `--prefix: expected an absolute key path like ${DEFAULT_PREFIX}, got ${JSON.stringify(prefix)}`);
  }
  const kind = get('store') ?? 'file';
  if (kind === 'file') {
    for (const f of ['etcd-endpoints', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'etcd-username', 'etcd-password'] as const) {
      if (typeof values[f] === 'string') throw new WeftError(CniCode.InvalidEnvironment, `--${f} needs --store etcd`);
    }
    return { type: 'file', dir: get('store-dir') ?? DEFAULT_STORE_DIR, prefix };
  }
  if (kind !== 'etcd') throw new WeftError(CniCode.InvalidEnvironment, `--store: expected etcd or file, got ${JSON.stringify(kind)}`);
  if (typeof values['store-dir'] === 'string') throw new WeftError(CniCode.InvalidEnvironment, '--store-dir needs --store file');
  const endpoints = (get('etcd-endpoints') ?? DEFAULT_ETCD_ENDPOINTS).split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const e of endpoints) {
    if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new WeftError(CniCode.InvalidEnvironment, `--etcd-endpoints: expected URLs like http://127.0.0.1:2379, got ${JSON.stringify(e)}`);
  }
  if (endpoints.length === 0) throw new WeftError(CniCode.InvalidEnvironment, '--etcd-endpoints: no endpoint given');
  const optional = <K extends string>(key: K, v: string | undefined): { [P in K]?: string } =>
    (v === undefined ? {} : { [key]: v }) as { [P in K]?: string };
  const username = get('etcd-username');
  const password = get('etcd-password');
  if (password !== undefined && username === undefined) throw new WeftError(CniCode.InvalidEnvironment, '--etcd-password needs --etcd-username');
  return {
    type: 'etcd', endpoints, prefix,
    ...optional('caFile', get('etcd-cafile')),
    ...optional('certFile', get('etcd-certfile')),
    ...optional('keyFile', get('etcd-keyfile')),
    ...optional('username', username),
    ...optional('password', password),
  };
}

/** Opens the configured store. The etcd client is loaded only when needed. */
export async function openStore(s: StoreSettings): Promise<SubnetStore> {
  if (s.type === 'file') {
    const { FileStore } = await import('./file/file-store.js');
    return new FileStore({ dir: s.dir, prefix: s.prefix });
  }
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const { type: _type, ...opts } = s;
  return new EtcdStore(opts);
}

// The store flags shared by weftd and weftctl (--store, --etcd-*, --store-dir, --prefix), each
// also settable as env WEFTD_<FLAG> (e.g. WEFTD_ETCD_ENDPOINTS); a flag beats its env var.
import { CniCode, WeftError } from '../errors.js';
import type { SubnetStore } from './types.js';
import { didYouMean } from '../suggest.js';

/**
 * A store flag (or its WEFTD_* env value) that is wrong: a usage error, so weftd and weftctl
 * exit 2 for it as for any other bad flag.
 */
export class StoreFlagError extends WeftError {
  constructor(message: string) {
    super(CniCode.InvalidEnvironment, message);
  }
}

const STORE_KINDS = ['etcd', 'file', 'kube'] as const;


/** Kept here (not imported from kube/) so a command that never opens the kube store never loads it. */
export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';
export const DEFAULT_NET_CONFIG = '/etc/weft/net-conf.json';

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
  kubeconfig: { type: 'string' },
  'net-config': { type: 'string' },
  'kube-annotation-prefix': { type: 'string' },
} as const;

type StoreFlag = keyof typeof storeFlagOptions;

export const storeFlagsHelp = `Store flags (each also as env WEFTD_<FLAG>, e.g. WEFTD_ETCD_ENDPOINTS):
  --store etcd|file|kube     where leases live (default file)
  --etcd-endpoints URLS      comma-separated etcd client URLs (default ${DEFAULT_ETCD_ENDPOINTS})
  --etcd-cafile FILE         CA bundle for etcd TLS
  --etcd-certfile FILE       client certificate for etcd TLS
  --etcd-keyfile FILE        client key for etcd TLS
  --etcd-username NAME       etcd user (with --etcd-password)
  --etcd-password PASS       etcd password
  --store-dir DIR            file store directory (default ${DEFAULT_STORE_DIR})
  --prefix PATH              key prefix (default ${DEFAULT_PREFIX})
  --store kube: the Kubernetes API server. Subnets are Node.spec.podCIDRs, published
  attributes are Node annotations (flannel's), policies come from NetworkPolicy objects:
  --kubeconfig FILE          kubeconfig (default $KUBECONFIG, else the in-cluster service
                             account)
  --net-config FILE          the network config file, flannel's net-conf.json keys (default
                             ${DEFAULT_NET_CONFIG})
  --kube-annotation-prefix P Node annotation prefix (default ${DEFAULT_ANNOTATION_PREFIX}, flannel's)`;

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
  | { readonly type: 'file'; readonly dir: string; readonly prefix: string }
  | {
    readonly type: 'kube';
    readonly kubeconfig?: string;
    readonly netConfig: string;
    readonly annotationPrefix: string;
    /** This node's Node (weftd sets it; listing needs none). */
    readonly nodeName?: string;
    readonly prefix: string;
  };

const ETCD_FLAGS = ['etcd-endpoints', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'etcd-username', 'etcd-password'] as const;
const KUBE_FLAGS = ['kubeconfig', 'net-config', 'kube-annotation-prefix'] as const;

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
    throw new StoreFlagError(`--prefix: expected an absolute key path like ${DEFAULT_PREFIX}, got ${JSON.stringify(prefix)}`);
  }
  const kind = get('store') ?? 'file';
  const refuse = (flags: readonly StoreFlag[], needs: string) => {
    for (const f of flags) if (typeof values[f] === 'string') throw new StoreFlagError(`--${f} needs --store ${needs}`);
  };
  if (kind !== 'kube') refuse(KUBE_FLAGS, 'kube');
  if (kind !== 'file') refuse(['store-dir'], 'file');
  if (kind !== 'etcd') refuse(ETCD_FLAGS, 'etcd');
  if (kind === 'file') return { type: 'file', dir: get('store-dir') ?? DEFAULT_STORE_DIR, prefix };
  if (kind === 'kube') {
    const annotationPrefix = get('kube-annotation-prefix') ?? DEFAULT_ANNOTATION_PREFIX;
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(annotationPrefix)) {
      throw new StoreFlagError(`--kube-annotation-prefix: expected a DNS subdomain like ${DEFAULT_ANNOTATION_PREFIX}, got ${JSON.stringify(annotationPrefix)}`);
    }
    const kubeconfig = get('kubeconfig');
    return { type: 'kube', ...(kubeconfig !== undefined && { kubeconfig }), netConfig: get('net-config') ?? DEFAULT_NET_CONFIG, annotationPrefix, prefix };
  }
  if (kind !== 'etcd') {
    throw new StoreFlagError(`--store: expected etcd, file or kube, got ${JSON.stringify(kind)}${didYouMean(kind, STORE_KINDS)}`);
  }
  const endpoints = (get('etcd-endpoints') ?? DEFAULT_ETCD_ENDPOINTS).split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const e of endpoints) {
    if (!/^https?:\/\/[^/]+\/?$/.test(e)) throw new StoreFlagError(`--etcd-endpoints: expected URLs like http://127.0.0.1:2379, got ${JSON.stringify(e)}`);
  }
  if (endpoints.length === 0) throw new StoreFlagError('--etcd-endpoints: no endpoint given');
  const optional = <K extends string>(key: K, v: string | undefined): { [P in K]?: string } =>
    (v === undefined ? {} : { [key]: v }) as { [P in K]?: string };
  const username = get('etcd-username');
  const password = get('etcd-password');
  if (password !== undefined && username === undefined) throw new StoreFlagError('--etcd-password needs --etcd-username');
  return {
    type: 'etcd', endpoints, prefix,
    ...optional('caFile', get('etcd-cafile')),
    ...optional('certFile', get('etcd-certfile')),
    ...optional('keyFile', get('etcd-keyfile')),
    ...optional('username', username),
    ...optional('password', password),
  };
}

export interface OpenOptions {
  /**
   * Whether opening may create the store (the file store's directory); default true. Commands
   * that only read or delete pass false, so a mistyped --store-dir is an error naming the path
   * rather than a new, empty store left behind.
   */
  readonly create?: boolean;
}

/** Opens the configured store. The etcd client is loaded only when needed. */
export async function openStore(s: StoreSettings, opts: OpenOptions = {}): Promise<SubnetStore> {
  if (s.type === 'file') {
    const { FileStore } = await import('./file/file-store.js');
    return new FileStore({ dir: s.dir, prefix: s.prefix, create: opts.create ?? true });
  }
  if (s.type === 'kube') {
    const { KubeStore } = await import('./kube/kube-store.js');
    return new KubeStore({
      ...(s.kubeconfig !== undefined && { kubeconfig: s.kubeconfig }), netConfig: s.netConfig, annotationPrefix: s.annotationPrefix,
      ...(s.nodeName !== undefined && { nodeName: s.nodeName }),
    });
  }
  const { EtcdStore } = await import('./etcd/etcd-store.js');
  const { type: _type, ...etcdOpts } = s;
  return new EtcdStore(etcdOpts);
}

/** The store flags given, as an operator would type them after a command (no password), for fixes printed. */
export function storeFlagText(values: Record<string, unknown>): string {
  return Object.keys(storeFlagOptions).flatMap((k) => (typeof values[k] === 'string' && !k.includes('password') ? [`--${k} ${String(values[k])}`] : [])).join(' ');
}

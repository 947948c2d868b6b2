// Where the API server is and who we are to it: a kubeconfig file (kubectl's format: the current
// context's cluster and user) or, inside a pod, the in-cluster service-account mount. Everything
// is read and checked here, so the client itself deals only in bytes and a server URL.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CniCode, WeftError } from '../errors.js';

export const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export type KubeCredentials =
  | { readonly type: 'cert'; readonly cert: Buffer; readonly key: Buffer }
  /** A fixed token (kubeconfig `token`). */
  | { readonly type: 'token'; readonly token: string }
  /**
   * A token file re-read as it changes: projected service-account tokens are rotated by the
   * kubelet (hourly), and a client holding the first one would be refused after it expires.
   */
  | { readonly type: 'token-file'; readonly path: string }
  | { readonly type: 'none' };

export interface KubeConnection {
  /** https://host:port, no trailing slash. */
  readonly server: string;
  readonly ca: Buffer | undefined;
  readonly insecureSkipTLSVerify: boolean;
  readonly credentials: KubeCredentials;
  /** Where it came from, for messages: the kubeconfig path or "in-cluster". */
  readonly source: string;
}

function bad(source: string, msg: string): WeftError {
  return new WeftError(CniCode.InvalidEnvironment, `kubeconfig ${source}: ${msg}`);
}

type Named<T> = { name?: unknown } & Record<string, T>;

function pick(list: unknown, name: string, what: string, source: string): Record<string, unknown> {
  if (!Array.isArray(list)) throw bad(source, `no ${what}s`);
  const found = (list as Named<unknown>[]).find((e) => e?.name === name);
  const inner = found?.[what];
  if (typeof inner !== 'object' || inner === null) throw bad(source, `${what} ${JSON.stringify(name)} not found`);
  return inner as Record<string, unknown>;
}

function str(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** A file named in a kubeconfig, relative to the kubeconfig's own directory (as kubectl reads it). */
function readRelative(base: string, path: string, source: string, what: string): Buffer {
  const full = isAbsolute(path) ? path : resolve(dirname(base), path);
  try {
    return readFileSync(full);
  } catch (err) {
    throw bad(source, `cannot read ${what} ${full}: ${(err as Error).message}`);
  }
}

/** Reads a kubeconfig file: the current context (or `context`), its cluster and user. */
export function loadKubeconfig(path: string, context?: string): KubeConnection {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'));
  } catch (err) {
    throw bad(path, (err as Error).message);
  }
  if (typeof doc !== 'object' || doc === null) throw bad(path, 'not a kubeconfig');
  const cfg = doc as Record<string, unknown>;
  const ctxName = context ?? (typeof cfg['current-context'] === 'string' ? cfg['current-context'] : undefined);
  if (ctxName === undefined || ctxName === '') throw bad(path, 'no current-context');
  const ctx = pick(cfg.contexts, ctxName, 'context', path);
  const clusterName = str(ctx, 'cluster');
  if (clusterName === undefined) throw bad(path, `context ${JSON.stringify(ctxName)} names no cluster`);
  const cluster = pick(cfg.clusters, clusterName, 'cluster', path);
  const server = str(cluster, 'server');
  if (server === undefined || !/^https?:\/\/[^/]+/.test(server)) throw bad(path, `cluster ${JSON.stringify(clusterName)}: server must be an http(s) URL, got ${JSON.stringify(cluster.server)}`);
  const caData = str(cluster, 'certificate-authority-data');
  const caFile = str(cluster, 'certificate-authority');
  const ca = caData !== undefined ? Buffer.from(caData, 'base64') : caFile !== undefined ? readRelative(path, caFile, path, 'certificate-authority') : undefined;

  const userName = str(ctx, 'user');
  const user = userName === undefined ? {} : pick(cfg.users, userName, 'user', path);
  let credentials: KubeCredentials = { type: 'none' };
  const certData = str(user, 'client-certificate-data');
  const certFile = str(user, 'client-certificate');
  const keyData = str(user, 'client-key-data');
  const keyFile = str(user, 'client-key');
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  if (certData !== undefined || certFile !== undefined) {
    const cert = certData !== undefined ? Buffer.from(certData, 'base64') : readRelative(path, certFile!, path, 'client-certificate');
    const key = keyData !== undefined ? Buffer.from(keyData, 'base64') : keyFile !== undefined ? readRelative(path, keyFile, path, 'client-key') : undefined;
    if (key === undefined) throw bad(path, `user ${JSON.stringify(userName)}: client certificate without client key`);
    credentials = { type: 'cert', cert, key };
  } else if (token !== undefined) {
    credentials = { type: 'token', token };
  } else if (tokenFile !== undefined) {
    credentials = { type: 'token-file', path: isAbsolute(tokenFile) ? tokenFile : resolve(dirname(path), tokenFile) };
  } else if (user.exec !== undefined || user['auth-provider'] !== undefined) {
    throw bad(path, `user ${JSON.stringify(userName)}: exec and auth-provider credentials are not supported; use a client certificate or a token`);
  }
  return {
    server: server.replace(/\/+$/, ''),
    ca,
    insecureSkipTLSVerify: cluster['insecure-skip-tls-verify'] === true,
    credentials,
    source: path,
  };
}

/** The pod's own service account, as kubelet mounts it (what client-go's InClusterConfig reads). */
export function inClusterConnection(env: NodeJS.ProcessEnv = process.env, dir = IN_CLUSTER_DIR): KubeConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new WeftError(CniCode.InvalidEnvironment, 'no kubeconfig given (--kubeconfig or KUBECONFIG) and not running in a pod (KUBERNETES_SERVICE_HOST/PORT unset)');
  }
  let ca: Buffer;
  try {
    ca = readFileSync(`${dir}/ca.crt`);
    readFileSync(`${dir}/token`);
  } catch (err) {
    throw new WeftError(CniCode.InvalidEnvironment, `in-cluster config: cannot read the service account mount ${dir}: ${(err as Error).message}`);
  }
  const h = host.includes(':') ? `[${host}]` : host;
  return { server: `https://${h}:${port}`, ca, insecureSkipTLSVerify: false, credentials: { type: 'token-file', path: `${dir}/token` }, source: 'in-cluster' };
}

/** --kubeconfig, else $KUBECONFIG (its first entry), else the in-cluster mount. */
export function resolveKubeConnection(kubeconfig: string | undefined, env: NodeJS.ProcessEnv = process.env): KubeConnection {
  const path = kubeconfig ?? env.KUBECONFIG?.split(':').find((p) => p !== '');
  return path !== undefined ? loadKubeconfig(path) : inClusterConnection(env);
}

// weftd's HTTP endpoints: /healthz (the process is alive and serving), /readyz (200 only once
// lease, subnet.env, rules and backend are in place and the store is reachable; JSON details
// either way), /metrics, and the agent's own JSON documents (/peers, /<backend>/status). One
// handler serves them on --health-addr (TCP) and on --api-socket (a unix socket, reachable from
// any network namespace).
import { createHash } from 'node:crypto';
import { createServer, type RequestListener, type Server } from 'node:http';
import { CniCode, WeftError } from '../errors.js';
import { dirname } from 'node:path';
import type { Registry } from 'prom-client';
import { mkdirp } from '../fs/mkdir.js';
import { claimSocketPath, listenPrivate, removeSocketIfOurs } from './unix-socket.js';

export interface Readiness {
  readonly ready: boolean;
  readonly details: Record<string, unknown>;
}

export interface HealthServer {
  readonly address: string;
  close(): Promise<void>;
}

export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new WeftError(CniCode.InvalidEnvironment, `--health-addr: expected host:port (e.g. 127.0.0.1:9417), got ${JSON.stringify(s)}`);
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** A JSON document (or a promise of one) for a path other than the built-in ones (undefined: not found). */
export type ExtraRoute = (path: string, query: URLSearchParams) => unknown;

function extraDoc(extra: ExtraRoute, path: string, query: URLSearchParams): unknown {
  try {
    return extra(path, query);
  } catch {
    return undefined;
  }
}

/** What a request for an unknown path is told. */
export const NOT_FOUND = 'not found: try /healthz, /readyz, /metrics, /peers, /traffic, /flows, /policy/counters or /<backend>/status (e.g. /bgp/status)\n';

/** The one request handler behind --health-addr and --api-socket. */
export function healthHandler(readiness: () => Readiness, registry: Registry, extra?: ExtraRoute): RequestListener {
  return (req, res) => {
    const [path, search] = (req.url ?? '/').split('?');
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const r = readiness();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ ready: r.ready, ...r.details }) + '\n');
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: unknown) => res.writeHead(500).end(String(err)),
      );
    } else {
      const doc = path !== undefined && extra !== undefined ? extraDoc(extra, path, new URLSearchParams(search ?? '')) : undefined;
      const send = (d: unknown) => {
        if (d === undefined) { res.writeHead(404, { 'content-type': 'text/plain' }).end(NOT_FOUND); return; }
        // An ETag per document, so a poller (the web view asks every weftd each second) is told
        // "unchanged" in a few bytes instead of re-reading thousands of peers.
        const text = JSON.stringify(d) + '\n';
        const etag = `"${createHash('sha1').update(text).digest('base64url').slice(0, 16)}"`;
        if (req.headers['if-none-match'] === etag) res.writeHead(304, { etag }).end();
        else res.writeHead(200, { 'content-type': 'application/json', etag }).end(text);
      };
      // Documents read from the kernel (e.g. /policy/counters) come as promises.
      if (doc instanceof Promise) doc.then(send, (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err instanceof Error ? err.message : String(err)}\n`));
      else send(doc);
    }
  };
}

function closer(server: Server): () => Promise<void> {
  return () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
}

export async function startHealthServer(addr: string, handler: RequestListener): Promise<HealthServer> {
  const { host, port } = parseHostPort(addr);
  const server: Server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new WeftError(CniCode.InvalidEnvironment, `--health-addr ${addr}: cannot listen: ${err.message}`)));
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const address = typeof a === 'object' && a ? `${a.address}:${a.port}` : addr;
  return { address, close: closer(server) };
}

/**
 * The same handler on a unix socket (mode 0600; a stale socket replaced, a live one refused),
 * removed again by close(). A unix socket is reachable from every network namespace, so tools
 * can ask a weftd that runs in another one (a lab host) without entering it.
 */
export async function startApiSocket(path: string, handler: RequestListener): Promise<HealthServer> {
  const what = 'API socket';
  const server: Server = createServer(handler);
  let ino: number;
  try {
    mkdirp(dirname(path));
    await claimSocketPath(path, what);
    ino = await listenPrivate(server, path, what);
  } catch (err) {
    throw err instanceof WeftError ? err : WeftError.wrap(err, CniCode.IoFailure, `--api-socket ${path}: cannot listen`);
  }
  const close = closer(server);
  return {
    address: `unix:${path}`,
    close: async () => {
      await removeSocketIfOurs(path, ino);
      await close();
    },
  };
}

// The web view's HTTP server: the page (dist/ui, built from src/ui/web), the model as JSON, the
// model's changes as server-sent events, and doctor's path check. Read-only: the only POST runs
// doctor, which reads. It binds where it is told (loopback by default, see weftctl ui); requests
// naming another Host are refused so a web page elsewhere cannot read it through DNS rebinding.
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { parseHostPort } from '../agent/http.js';
import { claimSocketPath, listenPrivate, removeSocketIfOurs } from '../agent/unix-socket.js';
import type { UiDoctorReport, UiDoctorRequest, UiModel } from './model.js';

/** weftd's health address is 9417; the view sits beside it. */
export const DEFAULT_UI_ADDR = '127.0.0.1:9418';

export interface ModelSource {
  /** The current model as JSON (made once per model, whatever the number of pages). */
  currentJson(): string;
  subscribe(l: (m: UiModel) => void): () => void;
}

export interface UiServerOptions {
  /** host:port, or unix:/path (weftctl ui's own proxy in front of a lab host's namespace). */
  readonly listen: string;
  /**
   * The host the browser reaches the view by, for the Host check: the listen host, or (behind
   * weftctl ui's proxy, listening on a unix socket) the proxy's.
   */
  readonly publicHost?: string;
  readonly feed: ModelSource;
  readonly doctor: (req: UiDoctorRequest) => Promise<UiDoctorReport>;
  /** Where index.html, app.js and style.css are; default dist/ui beside this module's tsc output. */
  readonly assets?: URL;
}

export interface UiServer {
  /** http://host:port/ (or unix:/path) */
  readonly url: string;
  close(): Promise<void>;
}

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

const API_PATHS = ['/api/model', '/api/events', '/api/doctor'];
const MAX_EVENT_CLIENTS = 64;
/** doctor starts ip and nft in several namespaces: a few at a time, the rest told to retry. */
const MAX_DOCTORS = 2;
/** A page that reads slower than the models come is dropped past this much unsent; it reconnects. */
const MAX_UNSENT_MODELS = 2;
const MAX_BODY = 8 * 1024;

const doctorRequest = z.object({
  src: z.string().min(1).max(300),
  dst: z.string().min(1).max(300),
  protocol: z.enum(['ICMP', 'TCP', 'UDP', 'SCTP']).optional(),
  port: z.number().int().min(1).max(65535).optional(),
}).strict();

/** dist/ui, found from this module's tsc path (a bundle keeps that path for import.meta.url). */
export function defaultAssets(moduleUrl: string = import.meta.url): URL {
  return new URL('../../ui/', moduleUrl);
}

function loadAssets(dir: URL): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const { file } of Object.values(ASSETS)) {
    const url = new URL(file, dir);
    if (!existsSync(url)) throw new WeftError(CniCode.InvalidEnvironment, `the web view's ${file} is not at ${url.pathname}: build it (bash scripts/build.sh)`);
    out.set(file, readFileSync(url));
  }
  return out;
}

/**
 * Names a browser may use for this view: loopback always; the listen address itself; with a
 * wildcard bind (the operator opened it), any IP literal and this machine's own name. Any other
 * name is a page elsewhere reaching the view through DNS rebinding.
 */
export function hostAllowed(header: string | undefined, publicHost: string): boolean {
  if (header === undefined) return false;
  const host = header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d+$/, '');
  if (host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host) || host === publicHost) return true;
  if (publicHost !== '0.0.0.0' && publicHost !== '::') return false;
  return isIP(host) !== 0 || host === hostname() || host === hostname().split('.')[0];
}

/** http://host:port/ of a listening server (an IPv6 host in brackets). */
export function serverUrl(server: { address(): string | AddressInfo | null }, fallback: string): string {
  const a = server.address();
  return typeof a === 'object' && a ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/` : fallback;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) { reject(new WeftError(CniCode.InvalidNetworkConfig, `request body over ${MAX_BODY} bytes`)); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: ServerResponse, status: number, doc: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...SECURITY_HEADERS }).end(JSON.stringify(doc));
}

export async function startUiServer(o: UiServerOptions): Promise<UiServer> {
  const assets = loadAssets(o.assets ?? defaultAssets());
  const unixPath = o.listen.startsWith('unix:') ? o.listen.slice('unix:'.length) : undefined;
  const tcp = unixPath === undefined ? parseHostPort(o.listen) : undefined;
  const publicHost = o.publicHost ?? tcp?.host ?? '127.0.0.1';
  const clients = new Set<ServerResponse>();
  const send = (c: ServerResponse, frame: string): void => {
    // A page that does not keep up would have every model buffered here: drop it instead.
    if (c.writableLength > MAX_UNSENT_MODELS * frame.length) { c.destroy(); clients.delete(c); return; }
    c.write(frame);
  };
  let doctors = 0;

  const events = (req: IncomingMessage, res: ServerResponse): void => {
    if (clients.size >= MAX_EVENT_CLIENTS) { sendJson(res, 503, { error: `more than ${MAX_EVENT_CLIENTS} pages follow this view` }); return; }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...SECURITY_HEADERS });
    res.write(`retry: 1000\n\nevent: model\ndata: ${o.feed.currentJson()}\n\n`);
    clients.add(res);
    req.on('close', () => clients.delete(res));
  };

  const doctor = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (!(req.headers['content-type'] ?? '').startsWith('application/json')) { sendJson(res, 415, { error: 'POST /api/doctor takes application/json' }); return; }
    let body: UiDoctorRequest;
    try {
      const parsed = doctorRequest.safeParse(JSON.parse(await readBody(req)));
      if (!parsed.success) throw new WeftError(CniCode.InvalidNetworkConfig, `bad doctor request: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`);
      body = parsed.data as UiDoctorRequest;
    } catch (err) {
      sendJson(res, 400, { error: err instanceof Error ? err.message : String(err) });
      return;
    }
    if (doctors >= MAX_DOCTORS) { sendJson(res, 429, { error: `${MAX_DOCTORS} path checks are running; try again in a moment` }); return; }
    doctors += 1;
    try {
      sendJson(res, 200, await o.doctor(body));
    } catch (err) {
      // A pod doctor cannot find is the caller's mistake; anything else is ours.
      const w = WeftError.wrap(err);
      sendJson(res, w.code === CniCode.InvalidEnvironment ? 400 : 500, { error: w.message });
    } finally {
      doctors -= 1;
    }
  };

  const server: Server = createServer((req, res) => {
    if (!hostAllowed(req.headers.host, publicHost)) { sendJson(res, 403, { error: `Host ${JSON.stringify(req.headers.host ?? '')} is not this view's` }); return; }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const asset = ASSETS[path];
    if (req.method === 'GET' && asset) {
      res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache', ...SECURITY_HEADERS }).end(assets.get(asset.file));
    } else if (req.method === 'GET' && path === '/api/model') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', ...SECURITY_HEADERS }).end(o.feed.currentJson());
    } else if (req.method === 'GET' && path === '/api/events') {
      events(req, res);
    } else if (req.method === 'POST' && path === '/api/doctor') {
      void doctor(req, res);
    } else if (ASSETS[path] || API_PATHS.includes(path)) {
      sendJson(res, 405, { error: `${req.method ?? '?'} ${path}: not allowed here` });
    } else {
      sendJson(res, 404, { error: `not found: ${path}` });
    }
  });
  let ino: number | undefined;
  if (unixPath !== undefined) {
    await claimSocketPath(unixPath, 'web view socket');
    ino = await listenPrivate(server, unixPath, 'web view socket');
  } else if (tcp) {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) => reject(new WeftError(CniCode.InvalidEnvironment, `cannot listen on ${o.listen}: ${err.message}`)));
      server.listen(tcp.port, tcp.host, () => resolve());
    });
  }
  const url = unixPath !== undefined ? `unix:${unixPath}` : serverUrl(server, o.listen);
  const unsubscribe = o.feed.subscribe(() => {
    const frame = `event: model\ndata: ${o.feed.currentJson()}\n\n`;
    for (const c of clients) send(c, frame);
  });
  const ping = setInterval(() => { for (const c of clients) send(c, ': ping\n\n'); }, 15_000);
  ping.unref();
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      clearInterval(ping);
      unsubscribe();
      for (const c of clients) c.end();
      clients.clear();
      server.closeAllConnections();
      server.close(() => { if (unixPath !== undefined && ino !== undefined) void removeSocketIfOurs(unixPath, ino).then(resolve, resolve); else resolve(); });
    }),
  };
}

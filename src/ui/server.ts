// The web view's HTTP server: the page (dist/ui, built from src/ui/web), the model as JSON, the
// model's changes as server-sent events, and doctor's path check. Read-only: the only POST runs
// doctor, which reads. It binds where it is told (loopback by default, see weftctl ui); requests
// naming another Host are refused so a web page elsewhere cannot read it through DNS rebinding.
import { chmodSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { parseHostPort } from '../agent/http.js';
import type { UiDoctorReport, UiDoctorRequest, UiModel } from './model.js';

/** weftd's health address is 9417; the view sits beside it. */
export const DEFAULT_UI_ADDR = '127.0.0.1:9418';

export interface ModelSource {
  current(): UiModel;
  subscribe(l: (m: UiModel) => void): () => void;
}

export interface UiServerOptions {
  /** host:port, or unix:/path (weftctl ui's own proxy in front of a lab host's namespace). */
  readonly listen: string;
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
 * Names a browser may use for this view: loopback always, the listen address itself when it is
 * one, any name when the operator bound every address. Anything else is a page elsewhere reaching
 * it through DNS rebinding.
 */
function hostAllowed(header: string | undefined, listenHost: string): boolean {
  if (header === undefined) return false;
  const host = header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d+$/, '');
  if (host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)) return true;
  if (listenHost === '0.0.0.0' || listenHost === '::') return true;
  return host === listenHost;
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
  // One serialisation per model, shared by every page.
  let cached: { seq: number; json: string } | undefined;
  const modelJson = (m: UiModel): string => {
    if (cached?.seq !== m.seq) cached = { seq: m.seq, json: JSON.stringify(m) };
    return cached.json;
  };
  const clients = new Set<ServerResponse>();
  const unsubscribe = o.feed.subscribe((m) => {
    const frame = `event: model\ndata: ${modelJson(m)}\n\n`;
    for (const c of clients) c.write(frame);
  });
  const ping = setInterval(() => { for (const c of clients) c.write(': ping\n\n'); }, 15_000);
  ping.unref();

  const events = (req: IncomingMessage, res: ServerResponse): void => {
    if (clients.size >= MAX_EVENT_CLIENTS) { sendJson(res, 503, { error: `more than ${MAX_EVENT_CLIENTS} pages follow this view` }); return; }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...SECURITY_HEADERS });
    res.write(`retry: 1000\n\nevent: model\ndata: ${modelJson(o.feed.current())}\n\n`);
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
    try {
      sendJson(res, 200, await o.doctor(body));
    } catch (err) {
      // A pod doctor cannot find is the caller's mistake; anything else is ours.
      const w = WeftError.wrap(err);
      sendJson(res, w.code === CniCode.InvalidEnvironment ? 400 : 500, { error: w.message });
    }
  };

  const server: Server = createServer((req, res) => {
    if (tcp !== undefined && !hostAllowed(req.headers.host, tcp.host)) { sendJson(res, 403, { error: `Host ${JSON.stringify(req.headers.host ?? '')} is not this view's` }); return; }
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const asset = ASSETS[path];
    if (req.method === 'GET' && asset) {
      res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache', ...SECURITY_HEADERS }).end(assets.get(asset.file));
    } else if (req.method === 'GET' && path === '/api/model') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', ...SECURITY_HEADERS }).end(modelJson(o.feed.current()));
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
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new WeftError(CniCode.InvalidEnvironment, `cannot listen on ${o.listen}: ${err.message}`)));
    if (unixPath !== undefined) {
      rmSync(unixPath, { force: true });
      server.listen(unixPath, () => { chmodSync(unixPath, 0o600); resolve(); });
    } else if (tcp) {
      server.listen(tcp.port, tcp.host, () => resolve());
    }
  });
  const a = server.address();
  const url = unixPath !== undefined ? `unix:${unixPath}`
    : typeof a === 'object' && a ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/` : o.listen;
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      clearInterval(ping);
      unsubscribe();
      for (const c of clients) c.end();
      clients.clear();
      server.closeAllConnections();
      server.close(() => { if (unixPath !== undefined) rmSync(unixPath, { force: true }); resolve(); });
    }),
  };
}

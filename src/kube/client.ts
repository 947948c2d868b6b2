// A thin Kubernetes API client: JSON requests and watch streams over node:https with a
// keep-alive agent. Why not @kubernetes/client-node: measured here, 2.0.x does not load on
// Node 20 (its undici needs zstd from Node 22) and 1.4.0 adds 74-83 MB of RSS and ~0.9 s to
// start-up on import, more than weftd's whole footprint; weftd needs five verbs on five
// resources. What it must keep of the real API is here: resourceVersion, bookmarks, 410 Gone,
// the API's Status errors (their messages name the verb and resource RBAC refused), and auth by
// client certificate, bearer token or the rotating in-cluster token.
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { CniCode, WeftError } from '../errors.js';
import type { KubeConnection } from './config.js';

/** An API answer other than success: the HTTP status and the API's Status reason travel along. */
export class KubeError extends WeftError {
  constructor(readonly httpStatus: number, readonly reason: string, msg: string) {
    super(CniCode.Store, msg);
  }
}

export interface RequestOptions {
  readonly body?: unknown;
  /** Content type of the body (patches): default application/json. */
  readonly contentType?: string;
  readonly timeoutMs?: number;
}

/** One line of a watch stream, as the API sends it. */
export interface WatchLine {
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  readonly object: Record<string, unknown>;
}

export interface WatchStream {
  close(): void;
}

export interface WatchHandlers {
  /** The server accepted the watch (HTTP 200): the stream is live. */
  onOpen?(): void;
  onLine(line: WatchLine): void;
  /** The stream ended: err undefined when the server closed it cleanly (timeoutSeconds). */
  onEnd(err: WeftError | undefined): void;
}

const DEFAULT_TIMEOUT_MS = 15_000;

/** The Status object's message, else the body's start, else the HTTP status line. */
function statusMessage(status: number, body: string): { reason: string; message: string } {
  try {
    const s = JSON.parse(body) as { kind?: string; reason?: string; message?: string };
    if (s.kind === 'Status' && typeof s.message === 'string') return { reason: s.reason ?? '', message: s.message };
  } catch { /* not JSON */ }
  return { reason: '', message: `HTTP ${status}${body ? `: ${body.slice(0, 200)}` : ''}` };
}

export class KubeClient {
  private readonly agent: http.Agent;
  private readonly url: URL;
  private token: { value: string; mtimeMs: number } | undefined;

  constructor(readonly conn: KubeConnection) {
    this.url = new URL(conn.server);
    const tls = this.url.protocol === 'https:';
    const opts: https.AgentOptions = { keepAlive: true, maxSockets: 16 };
    if (tls) {
      if (conn.ca) opts.ca = conn.ca;
      if (conn.insecureSkipTLSVerify) opts.rejectUnauthorized = false;
      if (conn.credentials.type === 'cert') {
        opts.cert = conn.credentials.cert;
        opts.key = conn.credentials.key;
      }
    }
    this.agent = tls ? new https.Agent(opts) : new http.Agent(opts);
  }

  get server(): string {
    return this.conn.server;
  }

  private authorization(): string | undefined {
    const c = this.conn.credentials;
    if (c.type === 'token') return `Bearer ${c.token}`;
    if (c.type !== 'token-file') return undefined;
    let mtimeMs = 0;
    try {
      mtimeMs = statSync(c.path).mtimeMs;
    } catch (err) {
      throw new WeftError(CniCode.InvalidEnvironment, `cannot read the API token ${c.path}: ${(err as Error).message}`);
    }
    if (this.token?.mtimeMs !== mtimeMs) this.token = { value: readFileSync(c.path, 'utf8').trim(), mtimeMs };
    return `Bearer ${this.token.value}`;
  }

  private open(method: string, path: string, headers: Record<string, string>): http.ClientRequest {
    const auth = this.authorization();
    const mod = this.url.protocol === 'https:' ? https : http;
    return mod.request({
      protocol: this.url.protocol, hostname: this.url.hostname, port: this.url.port, method, path, agent: this.agent,
      headers: { Accept: 'application/json', 'User-Agent': 'weft', ...(auth !== undefined && { Authorization: auth }), ...headers },
    });
  }

  /** A request with a JSON answer; any status but 2xx throws a KubeError naming the request. */
  request<T = Record<string, unknown>>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    return new Promise<T>((resolvePromise, reject) => {
      const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
      let req: http.ClientRequest;
      try {
        req = this.open(method, path, payload ? { 'Content-Type': opts.contentType ?? 'application/json', 'Content-Length': String(payload.length) } : {});
      } catch (err) {
        reject(err);
        return;
      }
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const timer = setTimeout(() => req.destroy(new WeftError(CniCode.Timeout, `${method} ${this.conn.server}${path}: no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => { clearTimeout(timer); reject(this.wrap(err, method, path)); });
        res.on('end', () => {
          clearTimeout(timer);
          const body = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) {
            const s = statusMessage(status, body);
            reject(new KubeError(status, s.reason, `${method} ${path}: ${s.message}`));
            return;
          }
          try {
            resolvePromise((body === '' ? {} : JSON.parse(body)) as T);
          } catch {
            reject(new KubeError(status, 'BadResponse', `${method} ${path}: the answer is not JSON`));
          }
        });
      });
      req.on('error', (err) => { clearTimeout(timer); reject(this.wrap(err, method, path)); });
      req.end(payload);
    });
  }

  private wrap(err: unknown, method: string, path: string): WeftError {
    if (err instanceof WeftError) return err;
    return new WeftError(CniCode.Store, `${method} ${this.conn.server}${path}: ${err instanceof Error ? err.message : String(err)}`);
  }

  get<T = Record<string, unknown>>(path: string, opts?: RequestOptions): Promise<T> {
    return this.request<T>('GET', path, opts);
  }

  /** A JSON merge patch (RFC 7386): the simplest to build by hand and safe for maps like annotations. */
  mergePatch<T = Record<string, unknown>>(path: string, patch: unknown, opts?: Omit<RequestOptions, 'body' | 'contentType'>): Promise<T> {
    return this.request<T>('PATCH', path, { ...opts, body: patch, contentType: 'application/merge-patch+json' });
  }

  /**
   * Opens a watch: `query` carries resourceVersion, allowWatchBookmarks, timeoutSeconds. Lines
   * arrive as they are complete; a stream quiet for `idleMs` (no event, no bookmark) is taken as
   * dead — a vanished API server (or a half-open TCP connection) sends no FIN.
   */
  watch(path: string, query: Record<string, string>, handlers: WatchHandlers, idleMs: number): WatchStream {
    const qs = new URLSearchParams({ ...query, watch: '1' }).toString();
    let ended = false;
    const end = (err: WeftError | undefined) => {
      if (ended) return;
      ended = true;
      clearTimeout(idle);
      handlers.onEnd(err);
    };
    let idle: NodeJS.Timeout = setTimeout(() => {}, 0);
    let req: http.ClientRequest;
    try {
      req = this.open('GET', `${path}?${qs}`, {});
    } catch (err) {
      queueMicrotask(() => end(this.wrap(err, 'WATCH', path)));
      return { close: () => end(undefined) };
    }
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => req.destroy(new WeftError(CniCode.Timeout, `WATCH ${path}: nothing for ${idleMs} ms`)), idleMs);
    };
    arm();
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const s = statusMessage(status, Buffer.concat(chunks).toString('utf8'));
          end(new KubeError(status, s.reason, `WATCH ${path}: ${s.message}`));
        });
        res.on('error', (err) => end(this.wrap(err, 'WATCH', path)));
        return;
      }
      handlers.onOpen?.();
      let pending = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        arm();
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const text = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (text.trim() === '' || ended) continue;
          let line: WatchLine;
          try {
            line = JSON.parse(text) as WatchLine;
          } catch {
            req.destroy(new WeftError(CniCode.Store, `WATCH ${path}: a line is not JSON: ${text.slice(0, 80)}`));
            return;
          }
          handlers.onLine(line);
        }
      });
      res.on('end', () => end(undefined));
      res.on('error', (err) => end(this.wrap(err, 'WATCH', path)));
      res.on('aborted', () => end(new WeftError(CniCode.Store, `WATCH ${path}: connection lost`)));
    });
    req.on('error', (err) => end(this.wrap(err, 'WATCH', path)));
    req.end();
    return {
      // The consumer hears the end of a stream it closed too: it may be awaiting it.
      close: () => {
        if (ended) return;
        req.destroy();
        end(undefined);
      },
    };
  }

  close(): void {
    this.agent.destroy();
  }
}

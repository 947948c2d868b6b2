// Talking to weftd over its --health-addr (/healthz, /readyz, /peers, /bgp/status): where it is
// (a flag, else env WEFTD_HEALTH_ADDR as weftd itself reads it, else the default) and one GET —
// or over its --api-socket, written `unix:PATH`, which reaches a weftd in any network namespace.
// weftctl status, bgp status and doctor all ask this way.
import { request } from 'node:http';
import { CniCode, WeftError } from '../errors.js';
import { parseHostPort } from '../agent/http.js';

export const DEFAULT_HEALTH_ADDR = '127.0.0.1:9417';

/** The address from a command's --addr, else WEFTD_HEALTH_ADDR, else the default. */
export function healthAddr(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.WEFTD_HEALTH_ADDR;
  return flag ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_HEALTH_ADDR);
}

/** A weftd address: host:port (--health-addr), or unix:PATH (--api-socket). */
function target(addr: string): { socketPath: string } | { host: string; port: number } {
  return addr.startsWith('unix:') ? { socketPath: addr.slice('unix:'.length) } : parseHostPort(addr);
}

export interface WeftdGetOptions {
  /** Sent as If-None-Match: a weftd whose document still has this ETag answers 304, no body. */
  readonly etag?: string;
  /** A longer body is refused (a weftd never sends one; something else on the port might). */
  readonly maxBytes?: number;
}

export interface WeftdAnswer {
  readonly status: number;
  readonly body: string;
  readonly etag?: string;
}

/**
 * GET on weftd's health address or API socket; any HTTP status resolves (the body says why on
 * 503). Not reaching weftd at all — refused, no answer within timeoutMs for the whole exchange —
 * rejects with CniCode.TryAgainLater; an answer that is not one (too long) with another code.
 */
export function weftdGet(addr: string, path: string, timeoutMs = 5000, opts: WeftdGetOptions = {}): Promise<WeftdAnswer> {
  const where = target(addr);
  const flag = 'socketPath' in where ? '--api-socket' : '--health-addr';
  const maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const req = request({ ...where, path, method: 'GET', headers: opts.etag !== undefined ? { 'if-none-match': opts.etag } : {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
        if (body.length > maxBytes) req.destroy(new WeftError(CniCode.DecodeFailure, `${addr}${path}: the answer is over ${maxBytes} bytes`));
      });
      res.on('end', () => {
        clearTimeout(deadline);
        const etag = res.headers.etag;
        resolve({ status: res.statusCode ?? 0, body, ...(typeof etag === 'string' && { etag }) });
      });
    });
    // One deadline for the whole exchange: a socket timeout restarts with every byte.
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (err) => {
      clearTimeout(deadline);
      reject(err instanceof WeftError ? err : new WeftError(CniCode.TryAgainLater, `cannot reach weftd at ${addr} (its ${flag}): ${err.message}`, '', { cause: err }));
    });
    req.end();
  });
}

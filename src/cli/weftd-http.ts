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

/** GET on weftd's health address or API socket; any HTTP status resolves (the body says why on 503). */
export function weftdGet(addr: string, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  const where = target(addr);
  const flag = 'socketPath' in where ? '--api-socket' : '--health-addr';
  return new Promise((resolve, reject) => {
    const req = request({ ...where, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new WeftError(CniCode.TryAgainLater, `cannot reach weftd at ${addr} (its ${flag}): ${err.message}`, '', { cause: err })));
    req.end();
  });
}

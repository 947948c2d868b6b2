// Talking to the local weftd over its --health-addr (/healthz, /readyz, /bgp/status): where it is
// (a flag, else env WEFTD_HEALTH_ADDR as weftd itself reads it, else the default) and one GET.
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

/** GET on weftd's health address; any HTTP status resolves (the body says why on 503). */
export function weftdGet(addr: string, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  const { host, port } = parseHostPort(addr);
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new WeftError(CniCode.TryAgainLater, `cannot reach weftd at ${addr} (its --health-addr): ${err.message}`)));
    req.end();
  });
}

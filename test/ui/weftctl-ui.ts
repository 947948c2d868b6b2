// Starting the real `weftctl ui` for the browser tests and the ui bench: on a free loopback port,
// resolving with the URL it prints. `onChild` has the process at once, so a caller's clean-up can
// stop it even when no URL ever comes.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { cleanEnv } from '../../src/lab/exec.js';

const WEFTCTL = fileURLToPath(new URL('../../../bin/weftctl', import.meta.url));

export function startWeftctlUi(args: readonly string[], onChild: (c: ChildProcess) => void = () => {}, timeoutMs = 30_000): Promise<{ child: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(WEFTCTL, ['ui', ...args, '--listen', '127.0.0.1:0'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    onChild(child);
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`weftctl ui printed no URL within ${timeoutMs} ms: ${out}${err}`)), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      const m = /weft ui: (http:\/\/\S+)/.exec(out);
      if (m?.[1]) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { err += c; });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`weftctl ui exited ${code}: ${out}${err}`)); });
  });
}

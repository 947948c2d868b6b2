// Running a command inside a lab namespace without blocking the event loop (so the progress
// spinner keeps turning and hosts are worked on in parallel).
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The project's bin/ (dist/src/lab → ../../../bin). */
export const BIN_DIR = fileURLToPath(new URL('../../../bin/', import.meta.url));
export const WEFTD_BIN = `${BIN_DIR}weftd`;
export const WEFTCTL_BIN = `${BIN_DIR}weftctl`;
export const CNI_BIN_DIR = `${BIN_DIR}cni`;
/** This directory in dist, for the small scripts run inside namespaces (echo server, probe). */
export const LAB_SCRIPT_DIR = fileURLToPath(new URL('./', import.meta.url));

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

export function execIn(ns: string, argv: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs ?? 30_000} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.on('error', (err) => { stderr += err.message; });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    child.stdin.on('error', () => { /* the command may not read stdin */ });
    child.stdin.end(opts.input ?? '');
  });
}

export function tail(text: string, chars = 1500): string {
  return text.length > chars ? `…${text.slice(-chars)}` : text;
}

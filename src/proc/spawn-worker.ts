// The worker side of SpawnThread (spawn-thread.ts): starts each child process asked for and
// answers with its exit status and output. Starting a process forks this whole process, which
// for weftd (a 100 MB heap) costs milliseconds of kernel time per start; done here, that time is
// spent on this thread and weftd's event loop keeps answering CNI requests and /healthz.
import { spawn } from 'node:child_process';
import { parentPort } from 'node:worker_threads';

export interface SpawnRequest {
  readonly id: number;
  readonly cmd: string;
  readonly argv: readonly string[];
  readonly input: string;
}

export type SpawnReply =
  | { readonly id: number; readonly ok: true; readonly status: number | null; readonly stdout: string; readonly stderr: string }
  | { readonly id: number; readonly ok: false; readonly message: string };

parentPort?.on('message', (req: SpawnRequest) => {
  const post = (r: SpawnReply) => parentPort?.postMessage(r);
  let p;
  try {
    p = spawn(req.cmd, req.argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (err) {
    post({ id: req.id, ok: false, message: err instanceof Error ? err.message : String(err) });
    return;
  }
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  p.stdout.on('data', (c: Buffer) => out.push(c));
  p.stderr.on('data', (c: Buffer) => err.push(c));
  p.once('error', (e) => post({ id: req.id, ok: false, message: e.message }));
  p.once('close', (status) => post({ id: req.id, ok: true, status, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
  p.stdin.on('error', () => {});
  p.stdin.end(req.input);
});

// Child processes started from a worker thread (spawn-worker.ts says why: a fork of a large
// process blocks the thread that forks). weftd turns it on for its nft calls; a one-shot process
// (a CNI plugin, weftctl) starts its few children directly and never pays for the thread.
import { Worker } from 'node:worker_threads';
import { workerScript } from '../worker-script.js';
import type { SpawnReply, SpawnRequest } from './spawn-worker.js';

export interface ChildRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export class SpawnThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, { resolve(r: ChildRun): void; reject(e: Error): void }>();
  private nextId = 1;

  /** Runs `cmd argv` with `input` on stdin; rejects only when it cannot be started. */
  run(cmd: string, argv: readonly string[], input: string): Promise<ChildRun> {
    const w = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.ref();
      w.postMessage({ id, cmd, argv, input } satisfies SpawnRequest);
    });
  }

  private start(): Worker {
    const w = new Worker(workerScript(import.meta.url, 'spawn-worker'));
    this.worker = w;
    w.unref();
    w.on('message', (r: SpawnReply) => {
      const p = this.pending.get(r.id);
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      if (!p) return;
      if (r.ok) p.resolve({ status: r.status, stdout: r.stdout, stderr: r.stderr });
      else p.reject(new Error(r.message));
    });
    // A thread that dies fails what it had; the next call starts a new one.
    const fail = (e: Error) => {
      if (this.worker === w) this.worker = undefined;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`spawn thread exited (${code})`)));
    return w;
  }
}

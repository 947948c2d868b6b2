// Dataplane writes off the main thread (see netlink-writer-worker.ts for why). One worker, one
// batch at a time, in order: a backend awaits each batch before it computes the next, so the
// kernel applies pass N while the event loop takes in the store events for pass N+1 — on two
// cores, the store reading and the kernel work overlap instead of adding up.
//
// When the thread cannot start or dies, apply() falls back to the caller's own socket; a batch
// that was in flight then is re-sent there whole (every op is an idempotent replace or delete).
import { Worker } from 'node:worker_threads';
import type { Netlink, NetlinkOp } from '../netlink/index.js';
import type { Logger } from '../log.js';
import type { WriterData, WriterReply, WriterRequest } from './netlink-writer-worker.js';

/** Per op: undefined when done, else the kernel's refusal as text. */
export type BatchOutcome = (string | undefined)[];

export interface BatchApplier {
  apply(ops: readonly NetlinkOp[]): Promise<BatchOutcome>;
  close(): Promise<void>;
}

/** Applies on the caller's socket, synchronously inside a resolved promise. */
export function inlineApplier(nl: Netlink): BatchApplier {
  return {
    apply: async (ops) => nl.applyBatch(ops).map((e) => e?.message),
    close: async () => {},
  };
}

export class NetlinkWriter implements BatchApplier {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { ops: readonly NetlinkOp[]; resolve(r: BatchOutcome): void; reject(e: Error): void }>();
  private closed = false;

  constructor(private readonly fallback: Netlink, private readonly log?: Logger) {
    try {
      const w = new Worker(new URL('./netlink-writer-worker.js', import.meta.url), { workerData: { nsPath: fallback.nsPath } satisfies WriterData });
      w.unref();
      w.on('message', (r: WriterReply) => this.onReply(r));
      w.on('error', (err) => this.lost(err.message));
      w.on('exit', (code) => this.lost(`exit code ${code}`));
      this.worker = w;
    } catch (err) {
      this.log?.warn('dataplane writer thread did not start; writing from the main thread', { error: err instanceof Error ? err.message : String(err) });
    }
  }

  private onReply(r: WriterReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    if (r.ok) p.resolve([...r.errors]);
    else p.reject(new Error(`dataplane writer: ${r.message}`));
  }

  /** The thread is gone: what it had not answered is applied here. */
  private lost(why: string): void {
    if (!this.worker) return;
    this.worker = undefined;
    if (!this.closed) this.log?.warn('dataplane writer thread stopped; writing from the main thread', { reason: why });
    const left = [...this.pending.values()];
    this.pending.clear();
    for (const p of left) {
      try { p.resolve(this.applyHere(p.ops)); } catch (err) { p.reject(err instanceof Error ? err : new Error(String(err))); }
    }
  }

  private applyHere(ops: readonly NetlinkOp[]): BatchOutcome {
    return this.fallback.applyBatch(ops).map((e) => e?.message);
  }

  apply(ops: readonly NetlinkOp[]): Promise<BatchOutcome> {
    if (ops.length === 0) return Promise.resolve([]);
    const w = this.worker;
    if (!w || this.closed) return Promise.resolve().then(() => this.applyHere(ops));
    const id = this.nextId++;
    return new Promise<BatchOutcome>((resolve, reject) => {
      this.pending.set(id, { ops, resolve, reject });
      w.postMessage({ id, ops } satisfies WriterRequest);
    });
  }

  /** Lets batches in flight finish, then stops the thread. */
  async close(): Promise<void> {
    if (this.closed) return;
    const inFlight = [...this.pending.values()].map((p) => new Promise<void>((done) => {
      const { resolve, reject } = p;
      p.resolve = (r) => { resolve(r); done(); };
      p.reject = (e) => { reject(e); done(); };
    }));
    await Promise.all(inFlight);
    this.closed = true;
    const w = this.worker;
    this.worker = undefined;
    await w?.terminate();
  }
}

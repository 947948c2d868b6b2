// List + watch of one kind of API object, as client-go's reflector does it: list (in pages),
// watch from the list's resourceVersion with bookmarks, re-watch from the last version seen when
// a stream ends, and list again only when the server says that version is gone (410) — so a
// routine reconnect costs one request, not a re-list of 5000 Nodes. Errors back off with jitter.
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../backoff.js';
import { CniCode, WeftError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { type KubeClient, KubeError, type WatchLine } from './client.js';

export interface ObjectMeta {
  readonly name: string;
  readonly namespace?: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly deletionTimestamp?: string;
}

export interface KubeObject {
  readonly metadata: ObjectMeta;
}

export type InformerEvent<T> =
  /** The whole collection: replaces everything the consumer held (first list and every re-list). */
  | { readonly type: 'snapshot'; readonly items: readonly T[]; readonly resourceVersion: string }
  | { readonly type: 'put'; readonly obj: T; readonly resourceVersion: string }
  | { readonly type: 'delete'; readonly obj: T; readonly resourceVersion: string };

export type InformerState =
  | { readonly type: 'connected' }
  | { readonly type: 'disconnected'; readonly reason: string };

export interface InformerOptions<T> {
  readonly client: KubeClient;
  /** The collection, e.g. /api/v1/nodes or /apis/networking.k8s.io/v1/networkpolicies. */
  readonly path: string;
  /** labelSelector, fieldSelector … */
  readonly query?: Readonly<Record<string, string>>;
  readonly onEvent: (ev: InformerEvent<T>) => void;
  readonly onState?: (s: InformerState) => void;
  /**
   * Watch from this version without listing first (the caller listed already). A 410 then ends
   * the informer through onGone instead of a re-list: the caller re-lists its own way.
   */
  readonly from?: string;
  readonly onGone?: (reason: string) => void;
  readonly pageSize?: number;
  /** Server-side watch timeout; default a random 5-10 min, as client-go spreads its re-watches. */
  readonly watchTimeoutSeconds?: number;
  readonly backoff?: Backoff;
  readonly log?: Logger;
}

/** Every object of a collection, page by page; the listing's resourceVersion comes with it. */
export async function listAll<T>(client: KubeClient, path: string, query: Readonly<Record<string, string>> = {}, pageSize = 500): Promise<{ items: T[]; resourceVersion: string }> {
  const items: T[] = [];
  let cont: string | undefined;
  for (;;) {
    const qs = new URLSearchParams({ ...query, limit: String(pageSize), ...(cont !== undefined && { continue: cont }) }).toString();
    let page: { items?: T[]; metadata?: { resourceVersion?: string; continue?: string } };
    try {
      page = await client.get(`${path}?${qs}`, { timeoutMs: 60_000 });
    } catch (err) {
      // The continue token expired between pages: start over, as client-go's pager does.
      if (err instanceof KubeError && err.httpStatus === 410 && cont !== undefined) {
        items.length = 0;
        cont = undefined;
        continue;
      }
      throw err;
    }
    for (const it of page.items ?? []) items.push(it);
    cont = page.metadata?.continue || undefined;
    if (cont === undefined) return { items, resourceVersion: page.metadata?.resourceVersion ?? '' };
  }
}

type WatchOutcome = { readonly type: 'ended' } | { readonly type: 'gone'; readonly reason: string } | { readonly type: 'failed'; readonly error: WeftError };

export class Informer<T extends KubeObject> {
  private resourceVersion: string;
  private closed = false;
  private stream: { close(): void } | undefined;
  private wake: (() => void) | undefined;
  private readonly backoff: Backoff;
  private readonly log: Logger;
  private stateNow: InformerState = { type: 'disconnected', reason: 'not started' };
  private running: Promise<void> | undefined;
  /** Re-lists after 410 Gone, for tests and metrics. */
  relists = 0;

  constructor(private readonly opts: InformerOptions<T>) {
    this.resourceVersion = opts.from ?? '';
    // Ceiling 10 s: an API server back from a restart is found within seconds; jitter spreads
    // a thousand nodes' reconnects over that window.
    this.backoff = opts.backoff ?? new Backoff({ initialMs: 500, maxMs: 10_000 });
    this.log = opts.log ?? createLogger({ component: 'informer', path: opts.path });
  }

  get state(): InformerState {
    return this.stateNow;
  }

  get lastResourceVersion(): string {
    return this.resourceVersion;
  }

  /** Tells a new state, and a new reason for being disconnected (what /readyz should show now). */
  private setState(s: InformerState): void {
    const before = this.stateNow;
    this.stateNow = s;
    const changed = s.type !== before.type || (s.type === 'disconnected' && before.type === 'disconnected' && s.reason !== before.reason);
    if (changed) this.opts.onState?.(s);
  }

  /**
   * Resolves once the first listing was delivered (or at once with `from`); until the API answers
   * it retries with backoff, reporting `disconnected` with the reason — the caller bounds the wait.
   */
  start(): Promise<void> {
    let first: Promise<void>;
    if (this.opts.from !== undefined) first = Promise.resolve();
    else first = this.listUntilDone();
    this.running = first.then(() => this.loop()).catch((err: unknown) => {
      if (!this.closed) this.log.error('informer stopped', { error: err instanceof Error ? err.message : String(err) });
    });
    return first;
  }

  private async listUntilDone(): Promise<void> {
    for (;;) {
      if (this.closed) throw new WeftError(CniCode.Internal, 'informer closed');
      try {
        const { items, resourceVersion } = await listAll<T>(this.opts.client, this.opts.path, this.opts.query, this.opts.pageSize);
        if (this.closed) throw new WeftError(CniCode.Internal, 'informer closed');
        this.resourceVersion = resourceVersion;
        this.backoff.reset();
        this.setState({ type: 'connected' });
        this.opts.onEvent({ type: 'snapshot', items, resourceVersion });
        return;
      } catch (err) {
        if (this.closed) throw err;
        const reason = err instanceof Error ? err.message : String(err);
        // Each new reason once (an RBAC denial would otherwise be logged every 10 s for ever).
        const news = this.stateNow.type !== 'disconnected' || this.stateNow.reason !== reason;
        this.setState({ type: 'disconnected', reason });
        const wait = this.backoff.next();
        if (news) this.log.warn('cannot list; retrying', { path: this.opts.path, reason, retryInMs: wait });
        await this.pause(wait);
      }
    }
  }

  /** A sleep that close() cuts short. */
  private async pause(ms: number): Promise<void> {
    const ac = new AbortController();
    this.wake = () => ac.abort();
    await sleep(ms, undefined, { signal: ac.signal }).catch(() => {});
    this.wake = undefined;
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      const outcome = await this.watchOnce();
      if (this.closed) return;
      if (outcome.type === 'ended') continue;
      if (outcome.type === 'gone') {
        if (this.opts.from !== undefined) {
          this.closed = true;
          this.opts.onGone?.(outcome.reason);
          return;
        }
        this.relists++;
        this.log.info('watch expired; listing again', { path: this.opts.path, reason: outcome.reason });
        await this.listUntilDone();
        continue;
      }
      this.setState({ type: 'disconnected', reason: outcome.error.message });
      const wait = this.backoff.next();
      if (this.backoff.attempts === 1) this.log.warn('watch lost; reconnecting', { path: this.opts.path, reason: outcome.error.message, retryInMs: wait });
      await this.pause(wait);
    }
  }

  private watchOnce(): Promise<WatchOutcome> {
    const timeout = this.opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    return new Promise<WatchOutcome>((resolve) => {
      let outcome: WatchOutcome | undefined;
      this.stream = this.opts.client.watch(this.opts.path, {
        ...this.opts.query,
        ...(this.resourceVersion !== '' && { resourceVersion: this.resourceVersion }),
        allowWatchBookmarks: 'true',
        timeoutSeconds: String(timeout),
      }, {
        onOpen: () => {
          this.backoff.reset();
          this.setState({ type: 'connected' });
        },
        onLine: (line) => {
          if (outcome) return;
          const r = this.apply(line);
          if (r) {
            outcome = r;
            this.stream?.close();
            resolve(r);
          }
        },
        onEnd: (err) => {
          if (outcome) return;
          if (err instanceof KubeError && err.httpStatus === 410) outcome = { type: 'gone', reason: err.message };
          else outcome = err ? { type: 'failed', error: err } : { type: 'ended' };
          resolve(outcome);
        },
      }, (timeout + 30) * 1000);
    });
  }

  /** One watch line; an outcome when it ends the stream (410 or another error). */
  private apply(line: WatchLine): WatchOutcome | undefined {
    const obj = line.object as unknown as T & { code?: number; message?: string; reason?: string };
    if (line.type === 'ERROR') {
      const msg = `${this.opts.path}: ${obj.message ?? 'watch error'}`;
      if (obj.code === 410 || obj.reason === 'Expired' || obj.reason === 'Gone') return { type: 'gone', reason: msg };
      return { type: 'failed', error: new KubeError(obj.code ?? 500, obj.reason ?? '', msg) };
    }
    const rv = obj.metadata?.resourceVersion;
    if (rv !== undefined && rv !== '') this.resourceVersion = rv;
    if (line.type === 'BOOKMARK') return undefined;
    if (line.type === 'DELETED') this.opts.onEvent({ type: 'delete', obj, resourceVersion: this.resourceVersion });
    else this.opts.onEvent({ type: 'put', obj, resourceVersion: this.resourceVersion });
    return undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stream?.close();
    this.wake?.();
    await this.running;
  }
}

// weftd's CNI fast path: a unix socket (mode 0600) where the `weft` plugin hands over
// {env, stdin} and gets back {stdout, exitCode}. Each request runs the standalone weft plugin
// in this process, so a pod costs one socket round trip instead of a cold Node start with zod,
// netlink and the bridge code. weftd lives in the host network namespace like the plugin would,
// so the netlink handles it opens are the same. Requests run concurrently; the IPAM file lock
// serialises what must be serialised (allocation). The socket path is claimed with a lock file
// held for the server's life (SOCKET.lock, naming the owner's PID), so two weftds configured with
// one path cannot both take it.
import { workerScript } from '../worker-script.js';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { z } from 'zod';
import { encodeRawReply, fastPathEnv, type FastPathReply } from '../cni/fastpath-client.js';
import { CniCode, WeftError } from '../errors.js';
import { tryFileLock } from '../fs/lock.js';
import { mkdirp } from '../fs/mkdir.js';
import type { Logger } from '../log.js';
import type { ServiceStarter } from './agent.js';
import { claimSocketPath, listenPrivate, removeSocketIfOurs } from './unix-socket.js';
import { runWeftLocally } from '../plugins/weft/standalone.js';
import type { ContainerInterfaceDeleter, PluginHost } from '../cni/skel.js';
import { standalonePluginHost } from '../plugins/pkg/host.js';
import type { EndpointSink } from '../policy/endpoint-record.js';
import { Worker } from 'node:worker_threads';
import type { BatchReport, DeleteInterfaceBatch, DeleteInterfaceRequest } from './cni-worker.js';

export interface CniServerOptions {
  socketPath: string;
  log: Logger;
  /** A CNI config with prevResult is a few KiB; anything near this is not a CNI request. */
  maxRequestBytes?: number;
  /** How long close() waits for requests in flight before cutting them off. */
  drainTimeoutMs?: number;
  /**
   * A connection must deliver its request within this long (and never pause longer between its
   * bytes): the plugin writes it the moment it connects. Idle connections are closed, not kept.
   */
  requestTimeoutMs?: number;
  /** Runs one request; defaults to the weft plugin in this process. */
  handle?: (env: NodeJS.ProcessEnv, stdin: string) => Promise<FastPathReply>;
  /**
   * Worker threads that delete container interfaces for the default handler (0: inline). Each
   * takes a lone DEL at once or, when all are busy, everything queued as one batch.
   */
  deleteWorkers?: number;
  /**
   * The default handler's plugins announce endpoint records here (weftd: its policy service, so
   * an ADD returns once the pod's policy is in place). Absent: nobody in-process is told.
   */
  endpointSink?: EndpointSink;
}

export interface CniServer {
  readonly socketPath: string;
  /** Requests answered since start, by exit code 0 / non-zero. */
  stats(): { ok: number; failed: number; inFlight: number };
  /** Stops accepting, lets requests in flight finish (bounded), removes the socket. */
  close(): Promise<void>;
}

/**
 * Container-interface deletion on worker threads (see cni-worker.ts for why). A DEL goes to an
 * idle worker at once, so a lone DEL never waits; while every worker is busy, DELs queue here and
 * the next worker to finish takes the whole queue as one batch (one kernel request for all their
 * veths). A worker that dies fails its requests with a CNI error and is replaced on the next call.
 */
function interfaceDeletePool(size: number, log: Logger): { deleter: ContainerInterfaceDeleter; warm(count: number): void; close(): Promise<void> } {
  interface Waiter { resolve(): void; reject(e: Error): void }
  interface Slot { worker: Worker; pending: Map<number, Waiter> }
  const slots: Array<Slot | undefined> = Array.from({ length: size }, () => undefined);
  const queued: Array<{ req: DeleteInterfaceRequest; waiter: Waiter }> = [];
  let nextId = 1;
  let closed = false;
  const dispatch = (slot: Slot): void => {
    const batch = queued.splice(0, queued.length);
    for (const q of batch) slot.pending.set(q.req.id, q.waiter);
    slot.worker.postMessage({ requests: batch.map((q) => q.req) } satisfies DeleteInterfaceBatch);
  };
  const spawnSlot = (i: number): Slot => {
    const worker = new Worker(workerScript(import.meta.url, 'cni-worker'));
    const slot: Slot = { worker, pending: new Map() };
    worker.unref();
    worker.on('message', (report: BatchReport) => {
      for (const r of report.replies) {
        const p = slot.pending.get(r.id);
        slot.pending.delete(r.id);
        if (r.ok) p?.resolve();
        else p?.reject(new WeftError(r.code, r.message, r.details));
      }
      if (report.replies.length > 1) log.debug('cni delete batch', { size: report.replies.length, grouped: report.grouped, ...(report.group !== undefined && { group: report.group }) });
      if (slot.pending.size === 0 && queued.length > 0 && !closed) dispatch(slot);
    });
    const fail = (why: string): void => {
      // 'error' is followed by 'exit': only the first one of them replaces the worker.
      const current = slots[i] === slot;
      if (current) slots[i] = undefined;
      if (slot.pending.size > 0 && !closed) log.warn('cni delete worker stopped with requests pending', { reason: why, pending: slot.pending.size });
      for (const p of slot.pending.values()) p.reject(new WeftError(CniCode.Internal, `weftd's interface deletion worker stopped: ${why}`));
      slot.pending.clear();
      // Whatever queued behind the dead worker goes to a fresh one.
      if (current && queued.length > 0 && !closed) dispatch(spawnSlot(i));
    };
    worker.on('error', (err) => fail(err.message));
    worker.on('exit', (code) => fail(`exit code ${code}`));
    slots[i] = slot;
    return slot;
  };
  // Threads start on demand (each costs weftd ~8-10 MB): a host that never runs pods, or a
  // benchmark of 5000 peers, pays nothing; the first ADD warms one so its DEL finds it ready,
  // and a burst of ADDs warms as many as ran at once (up to the pool's size) so the burst of
  // DELs that follows does not start threads (tens of ms of CPU each) while it runs.
  return {
    warm(count) {
      for (let i = 0; i < Math.min(count, size) && !closed; i++) if (slots[i] === undefined) spawnSlot(i);
    },
    deleter: ({ netns, ifname }) => {
      if (closed) return Promise.reject(new WeftError(CniCode.TryAgainLater, 'weftd is shutting down its CNI server'));
      return new Promise<void>((resolve, reject) => {
        queued.push({ req: { id: nextId++, netns, ifname }, waiter: { resolve, reject } });
        const idle = slots.findIndex((s) => s === undefined || s.pending.size === 0);
        if (idle >= 0) dispatch(slots[idle] ?? spawnSlot(idle));
      });
    },
    async close() {
      closed = true;
      for (const q of queued.splice(0, queued.length)) q.waiter.reject(new WeftError(CniCode.TryAgainLater, 'weftd is shutting down its CNI server'));
      await Promise.all(slots.map((s) => s?.worker.terminate()));
    },
  };
}

/**
 * Two: a lone DEL arriving while a batch is in the kernel still starts at once, and a burst goes
 * as few, large batches. Measured with bench cni (20 parallel DELs): the kernel's deletions are
 * the floor, 1, 2 or 3 workers end a burst equally soon once running, 4 did not help, and each
 * thread started during the first burst cost it ~50 ms.
 */
const DEFAULT_DELETE_WORKERS = 2;

const requestSchema = z.object({ env: z.record(z.string()), stdin: z.string(), reply: z.enum(['json', 'raw']).default('json') });

export async function startCniServer(opts: CniServerOptions): Promise<CniServer> {
  const { socketPath, log } = opts;
  const maxBytes = opts.maxRequestBytes ?? 1 << 20;
  const drainTimeoutMs = opts.drainTimeoutMs ?? 10_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
  // Only for the in-process plugin: a scripted handler never deletes interfaces.
  const deleteWorkers = opts.deleteWorkers ?? DEFAULT_DELETE_WORKERS;
  const pool = opts.handle === undefined && deleteWorkers > 0 ? interfaceDeletePool(deleteWorkers, log) : undefined;
  // This server's own host: another server (or a plugin run beside it) keeps its own.
  const host: PluginHost = {
    deleteContainerInterface: pool?.deleter ?? standalonePluginHost.deleteContainerInterface,
    endpointChanged: opts.endpointSink ?? standalonePluginHost.endpointChanged,
  };
  const handle = opts.handle ?? ((env, stdin) => runWeftLocally(env, stdin, host));
  const releasePool = async (): Promise<void> => {
    await pool?.close();
  };
  const counts = { ok: 0, failed: 0 };
  // ADDs running now, and the most that ran together since the last time none ran.
  let addsInFlight = 0;
  let addBurst = 0;
  const inFlight = new Set<Promise<void>>();
  const sockets = new Set<Socket>();
  /** Connections whose request has not arrived yet: nothing to drain at shutdown. */
  const reading = new Set<Socket>();

  const serve = async (sock: Socket): Promise<void> => {
    const chunks: Buffer[] = [];
    let size = 0;
    reading.add(sock);
    // 1000 connections that never sent a byte held 1036 fds and delayed shutdown by the whole
    // drain timeout: silence ends a connection.
    sock.setTimeout(requestTimeoutMs, () => {
      log.debug('cni connection sent no request, closed', { afterMs: requestTimeoutMs });
      sock.destroy();
    });
    const body = await new Promise<string | undefined>((resolve) => {
      sock.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) {
          log.warn('cni request too large, dropped', { bytes: size });
          sock.destroy();
          resolve(undefined);
          return;
        }
        chunks.push(c);
      });
      sock.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      sock.on('error', () => resolve(undefined));
      sock.on('close', () => resolve(undefined));
    });
    reading.delete(sock);
    if (body === undefined) return;
    // The request is in; running it may take long (an ADD waits for the kernel and IPAM).
    sock.setTimeout(0);
    let parsed: z.infer<typeof requestSchema>;
    try {
      parsed = requestSchema.parse(JSON.parse(body));
    } catch (err) {
      log.warn('malformed cni request, dropped', { error: (err as Error).message });
      sock.destroy();
      return;
    }
    const started = performance.now();
    const env = fastPathEnv(parsed.env);
    const isAdd = env.CNI_COMMAND === 'ADD';
    if (isAdd) {
      addsInFlight++;
      addBurst = Math.max(addBurst, addsInFlight);
      // One worker at once; the rest of a burst's share only once it is over (a thread's start
      // would take CPU from the ADDs themselves).
      pool?.warm(1);
    }
    const reply = await handle(env, parsed.stdin).catch((err: unknown): FastPathReply => {
      // The plugin turns its own failures into CNI errors; this is a bug in the handler itself.
      const e = WeftError.wrap(err, CniCode.Internal, 'weftd CNI server');
      return { stdout: JSON.stringify({ cniVersion: '1.1.0', code: e.code, msg: e.message, details: e.details }) + '\n', exitCode: 1 };
    });
    if (isAdd && --addsInFlight === 0) {
      pool?.warm(addBurst);
      addBurst = 0;
    }
    if (reply.exitCode === 0) counts.ok++;
    else counts.failed++;
    log.debug('cni request', { cmd: env.CNI_COMMAND, containerId: env.CNI_CONTAINERID, exitCode: reply.exitCode, reply: parsed.reply, ms: Math.round((performance.now() - started) * 10) / 10 });
    if (!sock.destroyed) sock.end(parsed.reply === 'raw' ? encodeRawReply(reply) : JSON.stringify(reply));
  };

  const server: Server = createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    const p = serve(sock).finally(() => inFlight.delete(p));
    inFlight.add(p);
  });

  const lockPath = `${socketPath}.lock`;
  let claim: ReturnType<typeof tryFileLock>;
  try {
    mkdirp(dirname(socketPath));
    claim = tryFileLock(lockPath);
  } catch (err) {
    await releasePool();
    throw WeftError.wrap(err, CniCode.IoFailure, `CNI socket ${socketPath}`);
  }
  if ('heldBy' in claim) {
    await releasePool();
    throw new WeftError(CniCode.IoFailure, `CNI socket ${socketPath}: another weftd already serves it (pid ${claim.heldBy}, which holds ${lockPath})`);
  }
  const lock = claim;
  // The lock is the claim; this catches a server that predates claims (or a stale socket).
  try {
    await claimSocketPath(socketPath, 'CNI socket');
  } catch (err) {
    lock.release();
    await releasePool();
    throw err;
  }
  let ino: number;
  try {
    ino = await listenPrivate(server, socketPath, 'CNI socket');
  } catch (err) {
    lock.release();
    await releasePool();
    throw err;
  }
  server.on('error', (err) => log.error('cni server error', { error: err.message }));
  log.info('cni fast path listening', { socket: socketPath });

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    stats: () => ({ ...counts, inFlight: inFlight.size }),
    close() {
      closing ??= (async () => {
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await removeSocketIfOurs(socketPath, ino);
        lock.release();
        for (const s of reading) s.destroy();
        let timer: NodeJS.Timeout | undefined;
        const drained = Promise.all([...inFlight]).then(() => 'drained' as const);
        const timedOut = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), drainTimeoutMs); });
        if ((await Promise.race([drained, timedOut])) === 'timeout') {
          log.warn('cni requests still running at shutdown, cut off', { count: inFlight.size });
          for (const s of sockets) s.destroy();
        }
        clearTimeout(timer);
        await stopped;
        await releasePool();
      })();
      return closing;
    },
  };
}

/**
 * weftd's hook: serve the fast path once the agent is ready, and announce the socket in
 * subnet.env (WEFT_CNI_SOCKET) so plugins configured with a non-default path find it.
 */
export function cniServerService(socketPath: string, endpointSink: EndpointSink): ServiceStarter {
  return async (ctx) => {
    const server = await startCniServer({ socketPath, log: ctx.log.child({ service: 'cni-server' }), endpointSink });
    ctx.setSubnetEnv('WEFT_CNI_SOCKET', socketPath);
    return { close: () => server.close() };
  };
}

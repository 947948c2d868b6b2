// The thread behind NetlinkWriter (netlink-writer.ts): applies batches of dataplane writes on its
// own netlink socket. Netlink writes are synchronous system calls in which the kernel does the
// work (route insertion is most of a large sync), so on weftd's main thread they stop everything
// else; here they run while the main thread reads and parses the next lease events. The socket
// is opened in the namespace of the handle it stands in for (workerData.nsPath), or — when that
// handle is the process's own — in the thread's inherited namespace, which is weftd's.
import { parentPort, workerData } from 'node:worker_threads';
import { Netlink, type NetlinkOp } from '../netlink/index.js';

export interface WriterRequest {
  readonly id: number;
  readonly ops: readonly NetlinkOp[];
}

/** Per op: undefined when done, else the kernel's refusal as text. A thrown error fails all. */
export type WriterReply =
  | { readonly id: number; readonly ok: true; readonly errors: readonly (string | undefined)[] }
  | { readonly id: number; readonly ok: false; readonly message: string };

export interface WriterData {
  readonly nsPath: string | undefined;
}

const { nsPath } = (workerData ?? { nsPath: undefined }) as WriterData;
let nl: Netlink | undefined;

parentPort?.on('message', (req: WriterRequest) => {
  let reply: WriterReply;
  try {
    nl ??= Netlink.open(nsPath);
    reply = { id: req.id, ok: true, errors: nl.applyBatch(req.ops).map((e) => e?.message) };
  } catch (err) {
    reply = { id: req.id, ok: false, message: err instanceof Error ? err.message : String(err) };
  }
  parentPort!.postMessage(reply);
});

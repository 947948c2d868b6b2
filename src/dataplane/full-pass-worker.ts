// The thread DataplaneSync runs its full passes on (see FullPassThread in sync.ts): a full pass
// over thousands of peers dumps and decodes every route, neighbour and FDB entry and writes the
// difference, all with blocking netlink calls, which on weftd's event loop held up CNI requests
// and /healthz for the whole pass. Netlink sockets and the setns they need are per thread, so
// this one opens its own, in the namespace the caller's handle is in.
import { parentPort } from 'node:worker_threads';
import { WeftError } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { type DesiredState, type FullPassOutcome, fullPass } from './sync.js';

export interface FullPassRequest {
  readonly id: number;
  /** The caller's namespace (undefined: this process's own). */
  readonly nsPath: string | undefined;
  readonly want: DesiredState;
  readonly nexthopObjects: boolean | undefined;
}

export type FullPassReply =
  | { readonly id: number; readonly ok: true; readonly outcome: FullPassOutcome }
  | { readonly id: number; readonly ok: false; readonly code: number; readonly message: string; readonly details: string };

let nl: Netlink | undefined;
let nlPath: string | undefined;

function handle(req: FullPassRequest): FullPassReply {
  try {
    if (!nl || nlPath !== req.nsPath) {
      nl?.close();
      nl = undefined;
      nl = Netlink.open(req.nsPath);
      nlPath = req.nsPath;
    }
    return { id: req.id, ok: true, outcome: fullPass(nl, req.want, req.nexthopObjects) };
  } catch (err) {
    const e = WeftError.wrap(err);
    return { id: req.id, ok: false, code: e.code, message: e.message, details: e.details };
  }
}

parentPort?.on('message', (req: FullPassRequest) => {
  parentPort!.postMessage(handle(req));
});

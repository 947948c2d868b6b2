// The thread DataplaneSync runs its full passes on (see FullPassThread in sync.ts): a full pass
// over thousands of peers dumps and decodes every route, neighbour and FDB entry and writes the
// difference, all with blocking netlink calls, which on weftd's event loop held up CNI requests
// and /healthz for the whole pass. Netlink sockets and the setns they need are per thread, so
// this one opens its own, in the namespace the caller's handle is in.
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import { CniCode, WeftError } from '../errors.js';
import { Netlink } from '../netlink/index.js';
import { type DesiredState, type FullPassOutcome, fullPass } from './sync.js';

/** nice(1) increment of this thread against weftd's own. */
const REPAIR_NICE = 10;

export interface FullPassRequest {
  readonly id: number;
  /** The caller's namespace (undefined: this process's own). */
  readonly nsPath: string | undefined;
  /** Absent: the state of the last request, which this thread kept. */
  readonly want?: DesiredState;
  readonly nexthopObjects: boolean | undefined;
}

export type FullPassReply =
  | { readonly id: number; readonly ok: true; readonly outcome: FullPassOutcome }
  | { readonly id: number; readonly ok: false; readonly code: number; readonly message: string; readonly details: string };

// On Linux a priority set with pid 0 is this thread's alone: a repair can wait, the CNI requests
// and probes on weftd's event loop (and the plugins' nft children) should not. Best effort.
try {
  setPriority(0, REPAIR_NICE);
} catch { /* not permitted here: run at the process's priority */ }

let nl: Netlink | undefined;
let nlPath: string | undefined;
let lastWant: DesiredState | undefined;

function handle(req: FullPassRequest): FullPassReply {
  try {
    if (!nl || nlPath !== req.nsPath) {
      nl?.close();
      nl = undefined;
      nl = Netlink.open(req.nsPath);
      nlPath = req.nsPath;
    }
    if (req.want !== undefined) lastWant = req.want;
    if (lastWant === undefined) throw new WeftError(CniCode.Internal, 'full pass asked to repeat a state it never got');
    return { id: req.id, ok: true, outcome: fullPass(nl, lastWant, req.nexthopObjects) };
  } catch (err) {
    const e = WeftError.wrap(err);
    return { id: req.id, ok: false, code: e.code, message: e.message, details: e.details };
  }
}

parentPort?.on('message', (req: FullPassRequest) => {
  parentPort!.postMessage(handle(req));
});

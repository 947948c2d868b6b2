// A worker thread of weftd's CNI server that removes container interfaces. Deleting a veth is
// one synchronous netlink request that the kernel holds for ~20 ms (unregistering a device waits
// for RCU grace periods); on weftd's event loop, 20 parallel DELs would wait for each other in
// turn, where 20 plugin processes let the kernel overlap those waits. Netlink sockets and the
// setns they need are per thread, so each worker has its own.
import { parentPort } from 'node:worker_threads';
import { deleteContainerInterface } from '../container/iface.js';
import { WeftError } from '../errors.js';

export interface DeleteInterfaceRequest {
  id: number;
  netns: string;
  ifname: string;
}

export type DeleteInterfaceReply =
  | { id: number; ok: true }
  | { id: number; ok: false; code: number; message: string; details: string };

parentPort?.on('message', (req: DeleteInterfaceRequest) => {
  let reply: DeleteInterfaceReply;
  try {
    deleteContainerInterface({ netns: req.netns, ifname: req.ifname });
    reply = { id: req.id, ok: true };
  } catch (err) {
    const e = WeftError.wrap(err);
    reply = { id: req.id, ok: false, code: e.code, message: e.message, details: e.details };
  }
  parentPort!.postMessage(reply);
});

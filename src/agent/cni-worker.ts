// A worker thread of weftd's CNI server that removes container interfaces. Removing a veth costs
// the kernel ~20 ms (unregistering a device waits for RCU grace periods), and a netlink request
// blocks its thread for all of it, so this never runs on weftd's event loop.
//
// The kernel pays those waits once per *request*, not per device: RTM_DELLINK for a device group
// unregisters every member together (unregister_netdevice_many). Measured here, 20 veths went in
// ~25 ms that way against ~110–250 ms as 20 single deletes spread over 8 threads. So the server
// hands each worker whatever DELs queued up while it was busy as one batch; the worker puts their
// host-side ends into a fresh device group and deletes that group in one request. A batch of one
// keeps the plain delete (no extra lookups). Netlink sockets and the setns they need are per
// thread, so each worker has its own.
import { parentPort } from 'node:worker_threads';
import { randomInt } from 'node:crypto';
import { deleteContainerInterface } from '../plugins/pkg/iface.js';
import { WeftError } from '../errors.js';
import { Netlink, isNetlinkError } from '../netlink/index.js';
import { netnsExists } from '../netns/index.js';

export interface DeleteInterfaceRequest {
  id: number;
  netns: string;
  ifname: string;
}

/** One message from the server: the DELs to run together. */
export interface DeleteInterfaceBatch {
  requests: DeleteInterfaceRequest[];
}

export type DeleteInterfaceReply =
  | { id: number; ok: true }
  | { id: number; ok: false; code: number; message: string; details: string };

/** How a batch went, for the server's debug log and for tests. */
export interface BatchReport {
  replies: DeleteInterfaceReply[];
  /** Requests whose veth went in the one group delete. */
  grouped: number;
  /** The device group used, when any request was grouped. */
  group?: number;
}

// Groups this worker hands out: high and random, far from the small numbers people name in
// /etc/iproute2/group; each is also checked to be empty before use.
const GROUP_MIN = 0x57ef0000;
const GROUP_SPAN = 0x00100000;

function fail(id: number, err: unknown): DeleteInterfaceReply {
  const e = WeftError.wrap(err);
  return { id, ok: false, code: e.code, message: e.message, details: e.details };
}

/**
 * What to do for one request: nothing (namespace or interface already gone), the host-side
 * index of its veth (provably its peer), or the plain delete inside the container namespace
 * (not a veth, or a peer that is not in our namespace).
 */
type Plan = { type: 'gone' } | { type: 'group'; hostIndex: number } | { type: 'direct' };

function planFor(hostNl: Netlink, req: DeleteInterfaceRequest): Plan {
  if (!req.netns || !netnsExists(req.netns)) return { type: 'gone' };
  const link = Netlink.with(req.netns, (nl) => nl.getLink(req.ifname));
  if (!link) return { type: 'gone' };
  if (link.kind !== 'veth' || link.parentIndex === undefined) return { type: 'direct' };
  // The container end names its peer by an index in some other namespace. It is ours only if
  // our link with that index is a veth whose own peer is this very link in this namespace.
  const host = hostNl.getLink(link.parentIndex);
  if (!host || host.kind !== 'veth' || host.parentIndex !== link.index || host.linkNetnsId === undefined) return { type: 'direct' };
  if (hostNl.netnsIdOf(req.netns) !== host.linkNetnsId) return { type: 'direct' };
  return { type: 'group', hostIndex: host.index };
}

function freshGroup(hostNl: Netlink): number {
  const taken = new Set(hostNl.listLinks().map((l) => l.group));
  for (;;) {
    const g = GROUP_MIN + randomInt(GROUP_SPAN);
    if (!taken.has(g)) return g;
  }
}

/**
 * Deletes the container interfaces of a batch; one reply per request, in order. Every failure
 * stays with its own request: a request that cannot join the group falls back to the plain
 * delete, and when the group delete itself is refused every grouped request does too.
 */
export function deleteContainerInterfaces(requests: readonly DeleteInterfaceRequest[]): BatchReport {
  const direct = (req: DeleteInterfaceRequest): DeleteInterfaceReply => {
    try {
      deleteContainerInterface({ netns: req.netns, ifname: req.ifname });
      return { id: req.id, ok: true };
    } catch (err) {
      return fail(req.id, err);
    }
  };
  if (requests.length < 2) return { replies: requests.map(direct), grouped: 0 };

  return Netlink.with(undefined, (hostNl): BatchReport => {
    const replies = new Map<number, DeleteInterfaceReply>();
    const grouped: DeleteInterfaceRequest[] = [];
    let group: number | undefined;
    for (const req of requests) {
      try {
        const plan = planFor(hostNl, req);
        if (plan.type === 'gone') replies.set(req.id, { id: req.id, ok: true });
        else if (plan.type === 'direct') replies.set(req.id, direct(req));
        else {
          group ??= freshGroup(hostNl);
          try {
            hostNl.setLink(plan.hostIndex, { group });
            grouped.push(req);
          } catch (err) {
            // Vanished since the lookup (a concurrent DEL): done. Anything else: the plain way.
            replies.set(req.id, isNetlinkError(err, 'ENODEV') ? { id: req.id, ok: true } : direct(req));
          }
        }
      } catch (err) {
        replies.set(req.id, fail(req.id, err));
      }
    }
    if (group !== undefined && grouped.length > 0) {
      try {
        // ENODEV (false) means every member vanished meanwhile: also done.
        hostNl.deleteLinkGroup(group);
        for (const req of grouped) replies.set(req.id, { id: req.id, ok: true });
      } catch {
        for (const req of grouped) replies.set(req.id, direct(req));
      }
    }
    return {
      replies: requests.map((r) => replies.get(r.id) ?? fail(r.id, new Error('no outcome recorded'))),
      grouped: grouped.length,
      ...(group !== undefined && grouped.length > 0 && { group }),
    };
  });
}

parentPort?.on('message', (batch: DeleteInterfaceBatch) => {
  let report: BatchReport;
  try {
    report = deleteContainerInterfaces(batch.requests);
  } catch (err) {
    // Opening our own namespace's socket failed: every request of the batch gets the reason.
    report = { replies: batch.requests.map((r) => fail(r.id, err)), grouped: 0 };
  }
  parentPort!.postMessage(report);
});

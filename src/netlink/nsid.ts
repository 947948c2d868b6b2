// RTM_GETNSID: the id a namespace gives another one. IFLA_LINK_NETNSID on a veth names its peer's
// namespace only by such an id, so this is how a caller proves "the peer lives in namespace X".

import { WeftError, CniCode } from '../errors.js';
import { AttrSet, nla } from './attrs.js';
import * as C from './constants.js';
import type { NlMessage, RequestSpec } from './message.js';

/** struct rtgenmsg is one byte; message framing pads it to four. */
const RTGENMSG_LEN = 1;

/** Asks for the id, in the receiving socket's namespace, of the namespace behind nsFd. */
export function nsidGetRequest(nsFd: number): RequestSpec {
  return {
    type: C.RTM_GETNSID,
    flags: C.NLM_F_REQUEST,
    fixed: Buffer.alloc(RTGENMSG_LEN),
    attrs: [nla.u32(C.NETNSA_FD, nsFd)],
  };
}

/** The id from an RTM_NEWNSID reply; undefined when the kernel has not assigned one. */
export function decodeNsid(msg: NlMessage): number | undefined {
  if (msg.payload.length < RTGENMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated nsid message (${msg.payload.length} bytes)`);
  const id = new AttrSet(msg.payload.subarray(4)).i32(C.NETNSA_NSID);
  if (id === undefined) throw new WeftError(CniCode.Netlink, 'nsid reply without NETNSA_NSID');
  return id === C.NETNSA_NSID_NOT_ASSIGNED ? undefined : id;
}

// nf_tables stateful objects over netlink (NETLINK_NETFILTER, subsystem NFNL_SUBSYS_NFTABLES):
// only the one read weft needs on a hot-ish path — every named counter of a table, with its
// value and use count, in one dump (NFT_MSG_GETOBJ). `nft -j list counters` would answer the
// same, but each call starts a process, and weftd forks its whole heap to start one; this is a
// single request on a socket weftd keeps. Writes stay with nft(8) (src/nft/nft.ts).
// nfnetlink's framing is src/netlink/nfnetlink.ts; attribute integers are big endian (unlike
// rtnetlink's).
import { WeftError, CniCode } from '../errors.js';
import { AttrSet, nla } from './attrs.js';
import type { NlMessage, RequestSpec } from './message.js';
import { NETLINK_NETFILTER, NFGENMSG_LEN, NLM_F_DUMP, NLM_F_REQUEST } from './constants.js';
import { nfgenmsg, nfnlType } from './nfnetlink.js';
import { NetlinkSocket } from './socket.js';
import { isNetlinkError } from './error.js';

const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWOBJ = 18;
const NFT_MSG_GETOBJ = 19;
const NFTA_OBJ_TABLE = 1;
const NFTA_OBJ_NAME = 2;
const NFTA_OBJ_TYPE = 3;
const NFTA_OBJ_DATA = 4;
const NFTA_OBJ_USE = 5;
const NFT_OBJECT_COUNTER = 1;
const NFTA_COUNTER_BYTES = 1;
const NFTA_COUNTER_PACKETS = 2;

/** nft's family names as nfgenmsg numbers them (NFPROTO_*). */
export const NFPROTO = { inet: 1, ip: 2, arp: 3, netdev: 5, bridge: 7, ip6: 10 } as const;
export type NfFamily = keyof typeof NFPROTO;

const msgType = (m: number): number => nfnlType(NFNL_SUBSYS_NFTABLES, m);

export interface NftCounter {
  readonly name: string;
  readonly bytes: number;
  readonly packets: number;
  /**
   * How many rules and set or map elements refer to it (NFTA_OBJ_USE). A counter weft keys in a
   * map has exactly one user, its element: 0 means the element is gone.
   */
  readonly use: number;
}

/** Dumps the named counters of one table (the kernel filters by family, table and type). */
export function counterDumpRequest(family: NfFamily, table: string): RequestSpec {
  const fixed = nfgenmsg(NFPROTO[family]);
  return {
    type: msgType(NFT_MSG_GETOBJ),
    flags: NLM_F_REQUEST | NLM_F_DUMP,
    fixed,
    attrs: [nla.str(NFTA_OBJ_TABLE, table), nla.be32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)],
  };
}

/** One NFT_MSG_NEWOBJ of a dump; undefined for an object that is not a counter. */
export function decodeCounter(msg: NlMessage): NftCounter | undefined {
  if (msg.payload.length < NFGENMSG_LEN) throw new WeftError(CniCode.Netlink, `truncated nf_tables object message (${msg.payload.length} bytes)`);
  const a = new AttrSet(msg.payload.subarray(NFGENMSG_LEN));
  const type = a.bytes(NFTA_OBJ_TYPE);
  if (!type || type.length < 4 || type.readUInt32BE(0) !== NFT_OBJECT_COUNTER) return undefined;
  const name = a.str(NFTA_OBJ_NAME);
  const data = a.nested(NFTA_OBJ_DATA);
  if (name === undefined || !data) throw new WeftError(CniCode.Netlink, 'nf_tables counter without a name or data');
  const use = a.bytes(NFTA_OBJ_USE);
  return {
    name,
    bytes: Number(data.be64(NFTA_COUNTER_BYTES) ?? 0n),
    packets: Number(data.be64(NFTA_COUNTER_PACKETS) ?? 0n),
    use: use && use.length >= 4 ? use.readUInt32BE(0) : 0,
  };
}

/** A netfilter netlink socket that reads named counters; one per namespace, kept open. */
export class NftCounterReader {
  private sock: NetlinkSocket | undefined;

  /** nsPath: the namespace whose tables to read (default: the caller's). */
  constructor(private readonly nsPath?: string) {}

  /** The table's counters; [] when the table does not exist. */
  counters(family: NfFamily, table: string): NftCounter[] {
    this.sock ??= NetlinkSocket.open({ protocol: NETLINK_NETFILTER, ...(this.nsPath !== undefined && { nsPath: this.nsPath }) });
    let msgs: NlMessage[];
    try {
      msgs = this.sock.dump(counterDumpRequest(family, table), `list counters of ${family} ${table}`, msgType(NFT_MSG_NEWOBJ));
    } catch (err) {
      // The dump of a table that is not there ends in ENOENT rather than an empty answer.
      if (isNetlinkError(err, 'ENOENT')) return [];
      throw err;
    }
    return msgs.flatMap((m) => {
      const c = decodeCounter(m);
      return c ? [c] : [];
    });
  }

  close(): void {
    this.sock?.close();
    this.sock = undefined;
  }
}

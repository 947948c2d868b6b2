// nfnetlink framing shared by ctnetlink and NFLOG: a message's type is (subsystem << 8) | message,
// and its fixed part is struct nfgenmsg {family u8, version u8, res_id be16} — res_id being the
// NFLOG group, 0 elsewhere.

import { smallBuffer } from './attrs.js';
import { NFGENMSG_LEN, NFNETLINK_V0 } from './constants.js';

export function nfnlType(subsys: number, msg: number): number {
  return (subsys << 8) | msg;
}

export function nfgenmsg(family: number, resId = 0): Buffer {
  const b = smallBuffer(NFGENMSG_LEN);
  b.writeUInt8(family, 0);
  b.writeUInt8(NFNETLINK_V0, 1);
  b.writeUInt16BE(resId, 2);
  return b;
}

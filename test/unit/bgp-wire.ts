// BGP messages written by hand for the codec tests: hex with spaces allowed, the header's
// length field computed, an UPDATE from its three parts.
export const MARKER = 'ff'.repeat(16);

export const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A whole message from its type and body, computing the length field. */
export function msg(type: number, bodyHex: string): Buffer {
  const body = hex(bodyHex);
  const len = 19 + body.length;
  return Buffer.concat([hex(MARKER), Buffer.from([len >> 8, len & 0xff, type]), body]);
}

/** An UPDATE from its withdrawn routes, path attributes and NLRI (each hex), with both lengths. */
export function update(withdrawnHex: string, attrsHex: string, nlriHex: string): Buffer {
  const w = hex(withdrawnHex);
  const a = hex(attrsHex);
  const l2 = (n: number): string => n.toString(16).padStart(4, '0');
  return msg(2, `${l2(w.length)}${withdrawnHex}${l2(a.length)}${attrsHex}${nlriHex}`);
}

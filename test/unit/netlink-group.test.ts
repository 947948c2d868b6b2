// Golden bytes for device groups (IFLA_GROUP on RTM_NEWLINK, RTM_DELLINK by group) and for
// RTM_GETNSID, written out by hand from the uapi structs like test/unit/netlink.test.ts.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeMessage, type RequestSpec } from '../../src/netlink/message.js';
import { encodeAttrs, nla } from '../../src/netlink/attrs.js';
import { decodeLink, ifinfomsg, linkGroupDeleteRequest, linkSetRequest } from '../../src/netlink/link.js';
import { decodeNsid, nsidGetRequest } from '../../src/netlink/nsid.js';
import { CniCode, WeftError } from '../../src/errors.js';
import * as C from '../../src/netlink/constants.js';

function hex(s: string): string {
  return s.split('\n').map((l) => l.replace(/#.*$/, '')).join('').replace(/\s+/g, '');
}

function encode(req: RequestSpec, seq = 1): string {
  return encodeMessage({ ...req, seq }).toString('hex');
}

describe('netlink device groups', () => {
  it('sets a link\'s group with IFLA_GROUP (27) on RTM_NEWLINK', () => {
    assert.equal(
      encode(linkSetRequest(7, { group: 0x57ef0102 })),
      hex(`
        28000000 1000 0500 01000000 00000000   # len 40, RTM_NEWLINK, REQUEST|ACK
        00 00 0000 07000000 00000000 00000000  # index 7, no flag changes
        08001b00 0201ef57                      # IFLA_GROUP 0x57ef0102 (u32 LE)
      `),
    );
  });

  it('deletes a group with RTM_DELLINK, index 0 and IFLA_GROUP (ip link delete group N)', () => {
    assert.equal(
      encode(linkGroupDeleteRequest(4242)),
      hex(`
        28000000 1100 0500 01000000 00000000   # len 40, RTM_DELLINK, REQUEST|ACK
        00 00 0000 00000000 00000000 00000000  # index 0: select by group
        08001b00 92100000                      # IFLA_GROUP 4242
      `),
    );
  });

  it('refuses group 0 (every ordinary device) and values that are not u32', () => {
    for (const bad of [0, -1, 1.5, 2 ** 32]) {
      assert.throws(() => linkGroupDeleteRequest(bad), (e: unknown) => e instanceof WeftError && e.code === CniCode.Netlink && e.message.includes('group'), String(bad));
    }
    assert.throws(() => linkSetRequest(1, { group: -3 }), /device group -3/);
    // Putting a link back into the default group is a legitimate change.
    assert.ok(encode(linkSetRequest(1, { group: 0 })).endsWith(hex('08001b00 00000000')));
  });

  it('decodes a non-default group and leaves the default one out of the Link', () => {
    const msg = (group: number) => ({
      type: C.RTM_NEWLINK, flags: 0, seq: 0, pid: 0,
      payload: Buffer.concat([ifinfomsg({ index: 5, type: 1 }), encodeAttrs([nla.str(C.IFLA_IFNAME, 'v1'), nla.u32(C.IFLA_GROUP, group)])]),
    });
    assert.equal(decodeLink(msg(77)).group, 77);
    assert.equal('group' in decodeLink(msg(0)), false);
  });
});

describe('netlink namespace ids', () => {
  it('asks RTM_GETNSID with a one-byte rtgenmsg (padded) and NETNSA_FD', () => {
    assert.equal(
      encode(nsidGetRequest(9)),
      hex(`
        1c000000 5a00 0100 01000000 00000000   # len 28, RTM_GETNSID (90), REQUEST
        00 000000                              # rtgenmsg family 0 + 3 pad
        08000300 09000000                      # NETNSA_FD 9
      `),
    );
  });

  it('decodes the id from RTM_NEWNSID and "not assigned" (-1) as undefined', () => {
    const reply = (attrs: Buffer) => ({ type: C.RTM_NEWNSID, flags: 0, seq: 1, pid: 0, payload: Buffer.concat([Buffer.alloc(4), attrs]) });
    assert.equal(decodeNsid(reply(Buffer.from(hex('08000100 03000000'), 'hex'))), 3);
    assert.equal(decodeNsid(reply(Buffer.from(hex('08000100 ffffffff'), 'hex'))), undefined);
    assert.throws(() => decodeNsid(reply(Buffer.alloc(0))), /NETNSA_NSID/);
  });
});

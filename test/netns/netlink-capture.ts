// Captures real kernel replies as hex, for the decoder's golden tests in test/unit. Run once
// (as root) and paste the output into test/unit/netlink-fixtures.ts:
//   node dist/test/netns/netlink-capture.js > test/unit/netlink-fixtures.ts
// It builds a small scene in a throwaway namespace with fixed names and MACs, asks the kernel
// for each object through a raw socket, and prints the datagrams exactly as received.

import { Netlink } from '../../src/netlink/netlink.js';
import { native } from '../../src/netlink/native.js';
import { encodeMessage, type RequestSpec } from '../../src/netlink/message.js';
import { linkGetRequest } from '../../src/netlink/link.js';
import { addressDumpRequest } from '../../src/netlink/addr.js';
import { routeDumpRequest, routeRequest } from '../../src/netlink/route.js';
import { fdbDumpRequest, neighDumpRequest } from '../../src/netlink/neigh.js';
import { makeTestNetns } from '../../src/netns/testing.js';
import { NETLINK_ROUTE } from '../../src/netlink/constants.js';
import { parseCidr, parseIP } from '../../src/net/ip.js';

function exchange(nsPath: string, req: RequestSpec): string[] {
  const n = native();
  const fd = n.openNetlinkSocket(nsPath, NETLINK_ROUTE, 2000);
  try {
    n.send(fd, encodeMessage({ ...req, seq: 77 }));
    const out: string[] = [];
    const buf = Buffer.alloc(65536);
    // Read until a datagram ends with DONE/ERROR (type 3 or 2) or a single reply arrives.
    for (;;) {
      const len = n.recv(fd, buf);
      const d = buf.subarray(0, len);
      out.push(d.toString('hex'));
      const types: number[] = [];
      for (let off = 0; off + 16 <= d.length; off += (d.readUInt32LE(off) + 3) & ~3) types.push(d.readUInt16LE(off + 4));
      if (types.some((t) => t === 2 || t === 3) || (req.flags & 0x300) === 0) return out;
    }
  } finally {
    n.close(fd);
  }
}

const ns = makeTestNetns('wdp');
try {
  Netlink.with(ns.path, (nl) => {
    const v = nl.createVeth({ name: 'veth0', peerName: 'veth1', mac: '02:00:00:00:00:01', peerMac: '02:00:00:00:00:02', mtu: 1450, up: true, peerUp: true });
    nl.addAddress(v, parseCidr('10.1.0.1/24'));
    nl.createVxlan({ name: 'vx0', vni: 42, local: parseIP('10.1.0.1'), port: 4789, learning: false, dev: v, mac: '02:00:00:00:00:03' });
    nl.addRoute({ dst: parseCidr('10.7.0.0/16'), gateway: parseIP('10.1.0.254'), oif: v, table: 100, protocol: 200, priority: 50, onlink: true });
    nl.replaceNeigh({ link: v, ip: parseIP('10.1.0.5'), mac: '02:00:00:00:00:05' });
    nl.appendFdb({ link: 'vx0', mac: '00:00:00:00:00:00', dst: parseIP('10.1.0.9') });
  });
  const cases: Record<string, RequestSpec> = {
    vxlanLink: linkGetRequest('vx0'),
    addrDumpV4: addressDumpRequest(4),
    routeDumpTable100: routeDumpRequest({ table: 100, family: 4 }),
    neighDumpV4: neighDumpRequest(4),
    fdbDumpVx0: fdbDumpRequest(),
    errorUnreachableGateway: routeRequest('add', { dst: parseCidr('10.3.0.0/16'), gateway: parseIP('192.0.2.1') }),
  };
  console.log('// Kernel replies captured by test/netns/netlink-capture.ts (sequence number 77).');
  console.log(`// Kernel ${process.env.CAPTURE_KERNEL ?? ''}`.trimEnd());
  console.log('export const captured = {');
  for (const [name, req] of Object.entries(cases)) {
    console.log(`  ${name}: [`);
    for (const d of exchange(ns.path, req)) console.log(`    '${d}',`);
    console.log('  ],');
  }
  console.log('} as const;');
} finally {
  ns.remove();
}

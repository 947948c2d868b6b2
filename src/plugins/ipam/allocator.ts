// Choosing an address: pure logic over a range set and the set of taken addresses. Order matches
// host-local: continue after the last reserved address (round robin), wrap across the ranges of
// the set, skip the gateway, and give up after one full lap. Network and IPv4 broadcast
// addresses are never handed out even when rangeStart/rangeEnd include them.
import { formatIP, ipAdd, ipEquals, lastAddress, type IP } from '../../net/ip.js';
import { rangeContains, type IpRange, type RangeSet } from './config.js';

export interface Candidate {
  ip: IP;
  range: IpRange;
}

function unusable(r: IpRange, ip: IP): boolean {
  if (r.gateway && ipEquals(ip, r.gateway)) return true;
  if (ip.value === r.subnet.ip.value) return true;
  return ip.family === 4 && ipEquals(ip, lastAddress(r.subnet));
}

/**
 * Every usable address of the set once, starting right after `lastReserved` when it lies in the
 * set (so it comes last), else at the first range's start.
 */
export function* candidates(rs: RangeSet, lastReserved?: IP): Generator<Candidate> {
  if (rs.length === 0) return;
  let idx = 0;
  let cur: IP | undefined;
  if (lastReserved) {
    const at = rs.findIndex((r) => rangeContains(r, lastReserved));
    if (at >= 0) {
      idx = at;
      cur = lastReserved;
    }
  }
  const step = (): Candidate => {
    let r = rs[idx] as IpRange;
    if (cur === undefined) {
      cur = r.rangeStart;
    } else if (ipEquals(cur, r.rangeEnd)) {
      idx = (idx + 1) % rs.length;
      r = rs[idx] as IpRange;
      cur = r.rangeStart;
    } else {
      cur = ipAdd(cur, 1);
    }
    return { ip: cur, range: r };
  };
  const first = step();
  let c = first;
  for (;;) {
    if (!unusable(c.range, c.ip)) yield c;
    c = step();
    if (ipEquals(c.ip, first.ip)) return;
  }
}

/** The first candidate not taken, or undefined when the set is exhausted. */
export function pickFree(rs: RangeSet, isTaken: (ip: IP) => boolean, lastReserved?: IP): Candidate | undefined {
  for (const c of candidates(rs, lastReserved)) if (!isTaken(c.ip)) return c;
  return undefined;
}

/** Number of addresses the set can hand out (for STATUS and reports). */
export function usableCount(rs: RangeSet): bigint {
  let n = 0n;
  for (const r of rs) {
    n += r.rangeEnd.value - r.rangeStart.value + 1n;
    const skipped = [r.gateway, r.subnet.ip, r.subnet.ip.family === 4 ? lastAddress(r.subnet) : undefined];
    const seen = new Set<string>();
    for (const ip of skipped) {
      if (ip && rangeContains(r, ip) && !seen.has(formatIP(ip))) {
        seen.add(formatIP(ip));
        n -= 1n;
      }
    }
  }
  return n;
}

export function rangeFor(rs: RangeSet, ip: IP): IpRange | undefined {
  return rs.find((r) => rangeContains(r, ip));
}

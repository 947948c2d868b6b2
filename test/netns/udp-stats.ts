// What the udp suites ask of a prepared backend's pump counters.
import assert from 'node:assert/strict';
import type { PumpStats, UdpBackend } from '../../src/backends/udp/udp.js';

export function statsOf(b: UdpBackend | undefined): PumpStats {
  const s = b?.stats();
  assert.ok(s, 'backend is prepared');
  return s;
}

/** No packet refused as malformed, no TUN or send error: the pump saw only what it should. */
export function assertClean(s: PumpStats, who: string): void {
  assert.equal(s.dropMalformed, 0, `${who}: malformed ${JSON.stringify(s)}`);
  assert.equal(s.tunErrors, 0, `${who}: tun errors ${JSON.stringify(s)}`);
  assert.equal(s.sendErrors, 0, `${who}: send errors ${JSON.stringify(s)}`);
}

// The flow observer: conntrack's new/destroy become one record completed in place, named by pod;
// policy drops from NFLOG become one record per connection until it is quiet; traffic outside the
// cluster network and other programs' log lines are left out.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatIP, parseCidr, parseIP } from '../../src/net/ip.js';
import { DROP_QUIET_MS, FlowObserver } from '../../src/flows/observer.js';
import type { FlowRecord } from '../../src/flows/record.js';
import { formatDenyPrefix } from '../../src/policy/deny-log.js';

const pods: Record<string, { namespace: string; pod: string }> = {
  '10.244.1.2': { namespace: 'lab', pod: 'h0c0' },
  '10.244.2.2': { namespace: 'lab', pod: 'h1c0' },
};

function observer(now: { t: number }, done: FlowRecord[] = []): FlowObserver {
  return new FlowObserver({
    node: 'h0', capacity: 100, network: [parseCidr('10.244.0.0/16')], now: () => now.t,
    podOf: (ip) => pods[formatIP(ip)],
    onRecord: (r) => done.push(r),
  });
}

const tuple = { src: parseIP('10.244.1.2'), dst: parseIP('10.244.2.2'), proto: 6, srcPort: 40000, dstPort: 7 };

describe('flow observer', () => {
  it('a connection: recorded open when conntrack confirms it, completed (and moved to the ring\'s head for cursor readers) when it is destroyed', () => {
    const now = { t: Date.parse('2026-12-07T10:00:00Z') };
    const done: FlowRecord[] = [];
    const o = observer(now, done);
    o.started({ original: tuple, id: 7, startMs: now.t });
    const open = o.ring.after(0).records;
    assert.equal(open.length, 1);
    assert.deepEqual(open[0]?.src, { ip: '10.244.1.2', namespace: 'lab', pod: 'h0c0' });
    assert.equal(open[0]?.end, undefined);
    o.ended({ original: tuple, id: 7, counters: { original: { packets: 10, bytes: 1000 }, reply: { packets: 8, bytes: 600 } }, stopMs: now.t + 1500 });
    const page = o.ring.after(0);
    const [rec] = page.records;
    assert.equal(page.records.length, 1, 'one record, completed');
    assert.equal(o.ring.after(1).records.length, 1, 'a reader past the open record is given the completed one');
    assert.deepEqual({ bytes: rec?.bytes, packets: rec?.packets, proto: rec?.proto, dstPort: rec?.dstPort, verdict: rec?.verdict, start: rec?.start, end: rec?.end },
      { bytes: 1600, packets: 18, proto: 'TCP', dstPort: 7, verdict: 'forwarded', start: '2026-12-07T10:00:00.000Z', end: '2026-12-07T10:00:01.500Z' });
    assert.deepEqual(done, [rec]);
  });

  it('a TCP connection that closed is completed from a dump at once, and again by its destroy minutes later: one record, exported once', () => {
    const now = { t: Date.parse('2026-12-07T10:00:00Z') };
    const done: FlowRecord[] = [];
    const o = observer(now, done);
    o.started({ original: tuple, id: 3, startMs: now.t });
    now.t += 2000;
    o.ended({ original: tuple, id: 3, counters: { original: { packets: 5, bytes: 500 }, reply: { packets: 4, bytes: 300 } } }, false);
    assert.equal(o.isOpen(3), false, 'closed: no second read');
    let [rec] = o.ring.after(0).records;
    assert.deepEqual({ bytes: rec?.bytes, end: rec?.end }, { bytes: 800, end: '2026-12-07T10:00:02.000Z' });
    assert.deepEqual(done, [], 'exported with its destroy');
    now.t += 120_000;
    o.ended({ original: tuple, id: 3, counters: { original: { packets: 6, bytes: 552 }, reply: { packets: 4, bytes: 300 } }, stopMs: now.t });
    assert.equal(o.ring.after(0).records.length, 1);
    [rec] = o.ring.after(0).records;
    assert.deepEqual({ bytes: rec?.bytes, end: rec?.end }, { bytes: 852, end: '2026-12-07T10:00:02.000Z' }, 'the end stays when it closed');
    assert.equal(done.length, 1);
    assert.equal(o.isOpen(3), false);
  });

  it('a destroy never seen start is still recorded; traffic with no end in the network is not', () => {
    const o = observer({ t: 0 });
    o.ended({ original: tuple, id: 9 });
    o.started({ original: { ...tuple, src: parseIP('198.18.0.1'), dst: parseIP('198.18.0.2') }, id: 10 });
    assert.equal(o.ring.size, 1);
  });

  it('policy drops: one record per connection while it keeps trying, naming the policy; then a new one', () => {
    const now = { t: 1_000_000 };
    const done: FlowRecord[] = [];
    const o = observer(now, done);
    const pkt = { prefix: formatDenyPrefix('ingress', ['lab/deny-to-h1']), ip: { ...tuple, length: 60 } };
    o.dropped(pkt);
    now.t += 1000;
    o.dropped(pkt);
    o.dropped({ prefix: 'something else: ', ip: { ...tuple, length: 60 } });
    let recs = o.ring.after(0).records;
    assert.equal(recs.length, 1);
    assert.deepEqual({ verdict: recs[0]?.verdict, policy: recs[0]?.policy, packets: recs[0]?.packets, bytes: recs[0]?.bytes, dst: recs[0]?.dst.pod },
      { verdict: 'dropped', policy: 'lab/deny-to-h1', packets: 2, bytes: 120, dst: 'h1c0' });
    assert.deepEqual(done, [], 'still being counted');
    now.t += DROP_QUIET_MS;
    o.closeQuietDrops();
    assert.equal(done.length, 1);
    o.dropped(pkt);
    recs = o.ring.after(0).records;
    assert.equal(recs.length, 2, 'after a quiet spell, a new record');
  });
});

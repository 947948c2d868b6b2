// Flow records' pure parts: the ring a node keeps, the filters of weftctl flows, and folding two
// nodes' records of one connection into one.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FlowRing } from '../../src/flows/ring.js';
import { flowMatches, mergeFlows } from '../../src/flows/query.js';
import type { FlowRecord } from '../../src/flows/record.js';

const rec = (over: Partial<FlowRecord> = {}): FlowRecord => ({
  src: { ip: '10.244.1.2', namespace: 'lab', pod: 'h0c0' }, dst: { ip: '10.244.2.2', namespace: 'lab', pod: 'h1c0' },
  proto: 'TCP', srcPort: 40000, dstPort: 7, bytes: 100, packets: 2, verdict: 'forwarded',
  start: '2026-12-07T10:00:00.000Z', end: '2026-12-07T10:00:01.000Z', node: 'h0', ...over,
});

describe('flow ring', () => {
  it('hands out what came after a sequence number, and says how many were overwritten unread', () => {
    const ring = new FlowRing(3);
    for (let i = 0; i < 5; i++) ring.push(rec({ srcPort: i }));
    assert.equal(ring.size, 3);
    const page = ring.after(0);
    assert.deepEqual(page.records.map((r) => r.srcPort), [2, 3, 4]);
    assert.equal(page.lost, 2);
    assert.equal(page.next, 5);
    assert.deepEqual(ring.after(5), { records: [], next: 5, lost: 0 });
    ring.push(rec({ srcPort: 5 }));
    assert.deepEqual(ring.after(page.next).records.map((r) => r.srcPort), [5]);
    assert.deepEqual(ring.after(3, 1).records.map((r) => r.srcPort), [3]);
    assert.throws(() => new FlowRing(0), RangeError);
  });
});

describe('flow queries', () => {
  it('filters by pod (namespace/pod or name), namespace, verdict and since', () => {
    const f = rec();
    assert.equal(flowMatches(f, { pod: 'lab/h1c0' }), true);
    assert.equal(flowMatches(f, { pod: 'h0c0' }), true);
    assert.equal(flowMatches(f, { pod: 'other/h0c0' }), false);
    assert.equal(flowMatches(f, { namespace: 'lab' }), true);
    assert.equal(flowMatches(f, { namespace: 'prod' }), false);
    assert.equal(flowMatches(f, { verdict: 'dropped' }), false);
    assert.equal(flowMatches(f, { since: Date.parse('2026-12-07T10:00:00.500Z') }), true, 'it ended after');
    assert.equal(flowMatches(f, { since: Date.parse('2026-12-07T10:00:02Z') }), false);
  });

  it('folds two nodes\' records of one connection: larger counters, drop wins with its policy, both nodes named', () => {
    const atH0 = rec({ bytes: 100, packets: 2, node: 'h0' });
    const atH1 = rec({ bytes: 60, packets: 3, node: 'h1', verdict: 'dropped', policy: 'lab/deny', start: '2026-12-07T10:00:00.300Z', end: '2026-12-07T10:00:02.000Z' });
    const later = rec({ start: '2026-12-07T10:05:00.000Z', end: '2026-12-07T10:05:01.000Z' });
    const merged = mergeFlows([[atH0, later], [atH1]]);
    assert.equal(merged.length, 2);
    const [first, second] = merged;
    assert.deepEqual({ bytes: first?.bytes, packets: first?.packets, verdict: first?.verdict, policy: first?.policy, end: first?.end, node: first?.node },
      { bytes: 100, packets: 3, verdict: 'dropped', policy: 'lab/deny', end: '2026-12-07T10:00:02.000Z', node: 'h0,h1' });
    assert.equal(second, later);
    assert.equal(mergeFlows([[rec(), rec({ srcPort: 1 })]]).length, 2, 'other ports, other connections');
  });
});

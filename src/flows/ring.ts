// weftd's flow records: the last `capacity` records, each with a sequence number, so a reader
// that polls (weftctl flows --follow, the web view) asks for what came after the last one it saw
// and learns when it fell so far behind that some were dropped. A record that is completed later
// moves to the head with a new number (remove + push) without leaving a hole behind: the records
// live in a Map, whose order is the order they were put in, so the capacity counts records kept.
import type { FlowRecord } from './record.js';

export interface FlowPage {
  readonly records: readonly FlowRecord[];
  /** Ask for records after this next time. */
  readonly next: number;
  /** At most this many records after `after` were dropped for room before they were read. */
  readonly lost: number;
}

export class FlowRing {
  private readonly kept = new Map<number, FlowRecord>();
  /** The sequence number the next record gets. */
  private nextSeq = 1;
  /** The highest sequence number dropped for room. */
  private lastDropped = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`flow ring capacity must be a positive integer, got ${capacity}`);
  }

  push(r: FlowRecord): number {
    const seq = this.nextSeq++;
    this.kept.set(seq, r);
    if (this.kept.size > this.capacity) {
      const oldest = this.kept.keys().next().value as number;
      this.kept.delete(oldest);
      this.lastDropped = Math.max(this.lastDropped, oldest);
    }
    return seq;
  }

  /** Takes record `seq` out (it is about to come back at the head); false when it is gone already. */
  remove(seq: number): boolean {
    return this.kept.delete(seq);
  }

  /** Puts r in place of record `seq`, keeping its number; false when it is gone. */
  replace(seq: number, r: FlowRecord): boolean {
    if (!this.kept.has(seq)) return false;
    this.kept.set(seq, r);
    return true;
  }

  get size(): number {
    return this.kept.size;
  }

  /** Records with a sequence number above `after`, oldest first, at most `limit`. */
  after(after: number, limit = this.capacity): FlowPage {
    const records: FlowRecord[] = [];
    let next = after;
    for (const [seq, r] of this.kept) {
      if (seq <= after) continue;
      if (records.length >= limit) break;
      records.push(r);
      next = seq;
    }
    // Nothing more to give: the reader is up to date with every number handed out so far.
    if (records.length < limit) next = Math.max(after, this.nextSeq - 1);
    return { records, next, lost: Math.max(0, this.lastDropped - after) };
  }
}

// weftd's flow records: a ring of the last `capacity` records, each with a sequence number, so a
// reader that polls (weftctl flows --follow) asks for what came after the last one it saw and
// learns when it fell so far behind that some were overwritten.
import type { FlowRecord } from './record.js';

export interface FlowPage {
  readonly records: readonly FlowRecord[];
  /** Ask for records after this next time. */
  readonly next: number;
  /** Records between `after` and the first returned were overwritten before they were read. */
  readonly lost: number;
}

export class FlowRing {
  private readonly buf: Array<FlowRecord | undefined>;
  /** The sequence number the next record gets; record n lives at buf[(n - 1) % capacity]. */
  private nextSeq = 1;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`flow ring capacity must be a positive integer, got ${capacity}`);
    this.buf = new Array<FlowRecord | undefined>(capacity);
  }

  push(r: FlowRecord): number {
    const seq = this.nextSeq++;
    this.buf[(seq - 1) % this.capacity] = r;
    return seq;
  }

  /** Empties record `seq`'s slot (a reader by cursor skips it); false when the ring has moved past it. */
  remove(seq: number): boolean {
    if (seq < 1 || seq >= this.nextSeq || seq <= this.nextSeq - 1 - this.capacity) return false;
    this.buf[(seq - 1) % this.capacity] = undefined;
    return true;
  }

  /** Puts r in place of record `seq`; false when the ring has moved past it. */
  replace(seq: number, r: FlowRecord): boolean {
    if (seq < 1 || seq >= this.nextSeq || seq <= this.nextSeq - 1 - this.capacity) return false;
    this.buf[(seq - 1) % this.capacity] = r;
    return true;
  }

  get size(): number {
    return Math.min(this.nextSeq - 1, this.capacity);
  }

  /** Records with a sequence number above `after`, oldest first, at most `limit`. */
  after(after: number, limit = this.capacity): FlowPage {
    const oldest = Math.max(1, this.nextSeq - this.capacity);
    const from = Math.max(after + 1, oldest);
    const lost = Math.max(0, oldest - (after + 1));
    const to = Math.min(this.nextSeq - 1, from + limit - 1);
    const records: FlowRecord[] = [];
    for (let seq = from; seq <= to; seq++) {
      const r = this.buf[(seq - 1) % this.capacity];
      if (r) records.push(r);
    }
    return { records, next: Math.max(after, to), lost };
  }
}

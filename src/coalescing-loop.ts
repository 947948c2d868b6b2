// One pass at a time, and what is asked while a pass runs is done by one more pass after it —
// weftd's reconcile loop and the policy service's both work this way. Asks merge while owed (the
// agent keeps a full pass over an incremental one; the policy service keeps a repair over a
// plain pass), so a burst of asks during a long pass costs one extra pass, not one per ask.

export class CoalescingLoop<K> {
  private owed: K | undefined;
  private running: Promise<void> | undefined;
  private closed = false;

  /**
   * @param pass  does the work of one pass; its errors are its own to report (a throw still ends
   *              the pass and the loop goes on with what is owed)
   * @param merge what is owed after `next` is asked while `owed` already is (default: `next`)
   */
  constructor(private readonly pass: (kind: K) => Promise<void>, private readonly merge: (owed: K, next: K) => K = (_owed, next) => next) {}

  /** Owes a pass of `kind`, starting it now unless one runs; resolves once it (and any later one owed) has run. */
  request(kind: K): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.owed = this.owed === undefined ? kind : this.merge(this.owed, kind);
    this.running ??= this.drain().finally(() => { this.running = undefined; });
    return this.running;
  }

  /** A pass is running (or about to: owed work starts on the same turn). */
  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Resolves when no pass runs and none is owed. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** No pass starts after this one; what is owed is dropped. */
  close(): void {
    this.closed = true;
    this.owed = undefined;
  }

  private async drain(): Promise<void> {
    while (this.owed !== undefined && !this.closed) {
      const kind = this.owed;
      this.owed = undefined;
      await this.pass(kind).catch(() => undefined);
    }
  }
}

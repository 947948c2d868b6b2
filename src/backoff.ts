// One retry pacing for everything that reconnects (API server watches, start-up retries):
// exponential with full jitter between a floor and a ceiling, reset after a success. Jitter
// keeps a thousand nodes from reconnecting to a restarted API server in the same instant.

export interface BackoffOptions {
  /** First delay (ms); default 200. */
  readonly initialMs?: number;
  /** Ceiling (ms); default 30 s. */
  readonly maxMs?: number;
  readonly multiplier?: number;
  /** Source of randomness in [0, 1), for tests. */
  readonly random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly initial: number;
  private readonly max: number;
  private readonly multiplier: number;
  private readonly random: () => number;

  constructor(opts: BackoffOptions = {}) {
    this.initial = opts.initialMs ?? 200;
    this.max = opts.maxMs ?? 30_000;
    this.multiplier = opts.multiplier ?? 2;
    this.random = opts.random ?? Math.random;
  }

  /** The delay before the next try: half fixed, half random, so it never collapses to ~0. */
  next(): number {
    const cap = Math.min(this.max, this.initial * this.multiplier ** this.attempt);
    this.attempt++;
    return Math.round(cap / 2 + (cap / 2) * this.random());
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}

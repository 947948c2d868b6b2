// The undo stack an ADD keeps: each step that changed something pushes its inverse, and a
// failure runs them newest first. Undo errors are logged, never thrown over the original error.
import type { Logger } from '../log.js';

export class Undo {
  private readonly steps: Array<{ what: string; fn: () => unknown }> = [];

  constructor(private readonly log: Logger) {}

  push(what: string, fn: () => unknown): void {
    this.steps.push({ what, fn });
  }

  /** Success: keep everything. */
  clear(): void {
    this.steps.length = 0;
  }

  async run(): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        this.log.warn('undo step failed', { step: step.what, error: err instanceof Error ? err.message : String(err) });
      }
    }
  }
}

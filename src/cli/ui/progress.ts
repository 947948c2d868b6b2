// Step-by-step progress for long commands: "[3/9] 1.2s  creating containers…" with a spinner on a
// terminal, plain lines otherwise (CI logs, pipes).

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

export class Progress {
  private step = 0;
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private frame = 0;
  private current = '';
  private readonly tty: boolean;

  constructor(private readonly total: number, private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(out.isTTY) && process.env.CI === undefined;
  }

  private elapsed(): string {
    return `${((Date.now() - this.started) / 1000).toFixed(1)}s`;
  }

  private line(mark: string): string {
    return `[${this.step}/${this.total}] ${this.elapsed().padStart(6)} ${mark} ${this.current}`;
  }

  /** Starts the next step; the previous one is shown as done. */
  next(what: string): void {
    this.finishCurrent('✓');
    this.step++;
    this.current = what;
    if (this.tty) {
      this.timer = setInterval(() => {
        this.frame = (this.frame + 1) % FRAMES.length;
        this.out.write(`\r\x1b[2K${this.line(FRAMES[this.frame] ?? '')}`);
      }, 80);
      this.timer.unref();
    } else {
      this.out.write(`${this.line('…')}\n`);
    }
  }

  private finishCurrent(mark: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.current && this.tty) this.out.write(`\r\x1b[2K${this.line(mark)}\n`);
  }

  done(): void {
    this.finishCurrent('✓');
    this.current = '';
  }

  fail(): void {
    this.finishCurrent('✗');
    this.current = '';
  }
}


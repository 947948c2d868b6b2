// "Did you mean": the closest known word to a mistyped one, as git and kubectl offer. Close means
// at most two edits (or one for words of four letters or fewer), so a wild guess suggests nothing.

/** Levenshtein distance (insert, delete, substitute; an adjacent swap counts as one). */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

export function closest(word: string, known: Iterable<string>): string | undefined {
  const limit = word.length <= 4 ? 1 : 2;
  let best: { w: string; d: number } | undefined;
  for (const k of known) {
    const d = distance(word, k);
    if (d <= limit && (!best || d < best.d)) best = { w: k, d };
  }
  return best?.w;
}

/** " (did you mean X?)" or "" — to append to a message about `word`. */
export function didYouMean(word: string, known: Iterable<string>, render: (w: string) => string = (w) => w): string {
  const c = closest(word, known);
  return c === undefined ? '' : ` (did you mean ${render(c)}?)`;
}

/**
 * node:util parseArgs' "Unknown option '--etcd-endpoint'" with the nearest known flag appended;
 * any other message unchanged.
 */
export function explainParseError(message: string, flags: Iterable<string>): string {
  const m = /^Unknown option '--([^'=]+)'/.exec(message);
  if (!m) return message;
  return message.replace(/\. To specify a positional argument.*$/s, '') + didYouMean(m[1]!, flags, (w) => `--${w}`);
}

/** Every --flag a help text mentions: the flags a command takes, without a second list of them. */
export function flagsInHelp(help: string): Set<string> {
  return new Set([...help.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
}

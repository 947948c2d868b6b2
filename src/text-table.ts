// One text table for every command that prints rows (weftctl leases/policy/ns/bgp status, the
// lab's reports): columns padded to their widest cell, two spaces apart, the last column never
// padded (no trailing blanks). Widths are taken from the visible text, so colour codes added for
// a terminal never shift a column.

export type Tone = 'ok' | 'bad' | 'dim' | 'plain';
export interface Cell { readonly text: string; readonly tone?: Tone }

const CODES: Record<Tone, string> = { ok: '\x1b[32m', bad: '\x1b[31;1m', dim: '\x1b[2m', plain: '' };

export interface TableOptions {
  /** A line of '─' under the headers (the lab's reports). */
  readonly rule?: boolean;
  /** Paint cells by their tone (only when writing to a terminal; see useColour). */
  readonly colour?: boolean;
}

export function useColour(out: NodeJS.WriteStream = process.stdout): boolean {
  return Boolean(out.isTTY) && process.env.NO_COLOR === undefined;
}

/** Text in a tone's colour, or as it is when colour is off. */
export function paint(text: string, tone: Tone, colour: boolean): string {
  return colour && tone !== 'plain' ? `${CODES[tone]}${text}\x1b[0m` : text;
}

/** No `head` (an empty list): rows only, e.g. the key/value layout of one object (weftctl status). */
export function renderTable(head: readonly string[], rows: readonly (readonly (Cell | string)[])[], opts: TableOptions = {}): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'string' ? { text: c } : c)));
  const columns = Math.max(head.length, ...cells.map((r) => r.length));
  const widths = Array.from({ length: columns }, (_, i) => Math.max(head[i]?.length ?? 0, ...cells.map((r) => r[i]?.text.length ?? 0)));
  const cell = (c: Cell, w: number, last: boolean) => paint(last ? c.text : c.text.padEnd(w), c.tone ?? 'plain', opts.colour === true);
  const line = (r: readonly Cell[]) => r.map((c, i) => cell(c, widths[i] ?? 0, i === r.length - 1)).join('  ');
  const rule = opts.rule === true ? [widths.map((w) => '─'.repeat(w)).join('  ')] : [];
  const header = head.length > 0 ? [line(head.map((h) => ({ text: h })))] : [];
  return [...header, ...rule, ...cells.map(line)].join('\n') + '\n';
}

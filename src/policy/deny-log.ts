// The NFLOG prefix of packets dropped by a policy's default deny, shared by the compiler that
// writes it into `log prefix "…"` and the flow observer that reads it back from nfnetlink_log
// (NFULA_PREFIX), so both sides agree on one format:
//
//   weft-deny:<direction>:<ns>/<name>[,<ns>/<name>…][,+<N>]
//
// <direction> is `ingress` or `egress`; the names are the policies isolating the endpoint in that
// direction (the ones whose rules none matched), in namespace/name order. The kernel keeps at most
// 127 characters of a prefix (NF_LOG_PREFIXLEN 128 with its NUL; nft refuses longer ones), so the
// list is cut between whole names and `+N` says how many were left out: a name is never cut, as
// half a name would attribute the drop to a policy that may not exist. When not even the first
// name fits, the prefix is `weft-deny:<direction>:+N`. Namespace and policy names are DNS labels
// and subdomains (lowercase letters, digits, '-', '.'), so ':', '/', ',' and '+' never occur
// inside them.

export type DenyDirection = 'ingress' | 'egress';

/** The kernel's limit on a log prefix, in characters (bytes: the text is ASCII). */
export const DENY_PREFIX_MAX = 127;

const HEAD = 'weft-deny:';

export interface DenyPrefix {
  readonly direction: DenyDirection;
  /** The policies named in the prefix ("ns/name"), in order. */
  readonly policies: readonly string[];
  /** How many more policies isolate the endpoint than the prefix could name. */
  readonly omitted: number;
}

/** The prefix for a drop in `direction` by `policies` ("ns/name"), at most DENY_PREFIX_MAX characters. */
export function formatDenyPrefix(direction: DenyDirection, policies: readonly string[]): string {
  const head = `${HEAD}${direction}:`;
  let text = head;
  let named = 0;
  for (const p of policies) {
    const next = named === 0 ? text + p : `${text},${p}`;
    const rest = policies.length - named - 1;
    // Room must stay for the `+N` marker of whatever does not fit after this one.
    const marker = rest > 0 ? `,+${rest}`.length : 0;
    if (next.length + marker > DENY_PREFIX_MAX) break;
    text = next;
    named++;
  }
  const omitted = policies.length - named;
  if (omitted > 0) text += named === 0 ? `+${omitted}` : `,+${omitted}`;
  return text;
}

/** The parts of a prefix formatDenyPrefix wrote; undefined for any other text (another program's log). */
export function parseDenyPrefix(prefix: string): DenyPrefix | undefined {
  // Other tools append a space to their prefixes for syslog; tolerate trailing NULs and blanks.
  const text = prefix.replace(/[\0\s]+$/, '');
  const m = /^weft-deny:(ingress|egress):(.*)$/.exec(text);
  if (!m) return undefined;
  const direction = m[1] as DenyDirection;
  const parts = m[2] === '' ? [] : (m[2] ?? '').split(',');
  let omitted = 0;
  const last = parts.at(-1);
  if (last !== undefined && /^\+\d+$/.test(last)) {
    omitted = Number(last.slice(1));
    parts.pop();
  }
  if (parts.some((p) => !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(p))) return undefined;
  return { direction, policies: parts, omitted };
}

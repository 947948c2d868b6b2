// The error thrown for a kernel refusal: a WeftError (CNI code 101) whose message names the
// operation, the errno and the kernel's own explanation (extended ACK) when it gave one.

import { getSystemErrorMap } from 'node:util';
import { WeftError, CniCode } from '../errors.js';

const errnoNames = new Map<number, { name: string; text: string }>();
for (const [neg, [name, text]] of getSystemErrorMap()) errnoNames.set(-neg, { name, text });

export function errnoName(errno: number): string {
  return errnoNames.get(errno)?.name ?? `errno ${errno}`;
}

export class NetlinkError extends WeftError {
  /** Positive errno from the kernel, e.g. 17 for EEXIST. */
  readonly errno: number;
  /** Symbolic errno, e.g. "EEXIST". */
  readonly errnoCode: string;
  /** The kernel's extended ACK text, when it sent one. */
  readonly extack: string | undefined;

  constructor(operation: string, errno: number, extack?: string) {
    const known = errnoNames.get(errno);
    const what = known ? `${known.text} (${known.name})` : `errno ${errno}`;
    super(CniCode.Netlink, `${operation}: ${what}${extack ? `: ${extack}` : ''}`);
    this.errno = errno;
    this.errnoCode = known?.name ?? `E${errno}`;
    this.extack = extack;
  }
}

export function isNetlinkError(err: unknown, ...codes: string[]): err is NetlinkError {
  return err instanceof NetlinkError && (codes.length === 0 || codes.includes(err.errnoCode));
}

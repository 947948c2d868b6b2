// One deadline helper: a promise that has not settled within `ms` is rejected with a WeftError
// saying so ("WHAT: no answer within MS ms"); the timer is cleared either way.
import { CniCode, WeftError } from './errors.js';

export function withTimeout<T>(p: Promise<T>, ms: number, what?: string, code: CniCode = CniCode.Timeout): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WeftError(code, `${what !== undefined ? `${what}: ` : ''}no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

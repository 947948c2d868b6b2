import type { IPFamily } from '../net/ip.js';
import { WeftError, CniCode } from '../errors.js';
import { AF_INET, AF_INET6 } from './constants.js';

export function afOf(family: IPFamily): number {
  return family === 4 ? AF_INET : AF_INET6;
}

export function familyOfAf(af: number): IPFamily | undefined {
  return af === AF_INET ? 4 : af === AF_INET6 ? 6 : undefined;
}

export function requireFamily(af: number, what: string): IPFamily {
  const f = familyOfAf(af);
  if (!f) throw new WeftError(CniCode.Netlink, `${what}: unexpected address family ${af}`);
  return f;
}

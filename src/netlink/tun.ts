// TUN/TAP devices: the fd carries packets (no packet-info header) for a userspace dataplane.

import { WeftError, CniCode } from '../errors.js';
import { native } from './native.js';
import { IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_TUN } from './constants.js';

export interface TunOptions {
  /** Layer 2 (TAP) instead of layer 3 (TUN). */
  readonly tap?: boolean;
  /** Allow several fds (queues) on one device; each open attaches one more queue. */
  readonly multiQueue?: boolean;
  /** Create the device in this namespace. */
  readonly nsPath?: string;
}

export interface TunDevice {
  readonly fd: number;
  /** The kernel's name for it (it fills in a pattern such as "tun%d"). */
  readonly name: string;
}

export function openTun(name: string, opts: TunOptions = {}): TunDevice {
  const flags = (opts.tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | (opts.multiQueue ? IFF_MULTI_QUEUE : 0);
  try {
    return native().openTun(name, flags, opts.nsPath ?? null);
  } catch (err) {
    throw WeftError.wrap(err, CniCode.Netlink, `open tun device ${name}${opts.nsPath ? ` in ${opts.nsPath}` : ''}`);
  }
}

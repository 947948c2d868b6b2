// sysctl get/set inside a given network namespace. net.* keys are per namespace; the addon opens
// /proc/sys/... while the thread is switched into the target, so the value lands there.

import { WeftError, CniCode } from '../errors.js';
import { native } from '../netlink/native.js';

/**
 * "net.ipv4.ip_forward" or the slash form "net/ipv4/conf/eth0.100/forwarding" (needed when a
 * component, like a VLAN interface name, contains dots).
 */
export function sysctlKeyPath(key: string): string {
  const path = key.includes('/') ? key : key.replaceAll('.', '/');
  if (!/^[A-Za-z0-9_./-]+$/.test(path) || path.startsWith('/') || path.split('/').some((c) => c === '' || c === '..' || c === '.')) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `invalid sysctl key ${JSON.stringify(key)}`);
  }
  return path;
}

export function readSysctl(key: string, nsPath?: string): string {
  try {
    return native().readSysctl(nsPath ?? null, sysctlKeyPath(key)).trim();
  } catch (err) {
    throw WeftError.wrap(err, CniCode.IoFailure, `read sysctl ${key}${nsPath ? ` in ${nsPath}` : ''}`);
  }
}

export function writeSysctl(key: string, value: string | number, nsPath?: string): void {
  try {
    native().writeSysctl(nsPath ?? null, sysctlKeyPath(key), String(value));
  } catch (err) {
    throw WeftError.wrap(err, CniCode.IoFailure, `write sysctl ${key}=${value}${nsPath ? ` in ${nsPath}` : ''}`);
  }
}

// Loads the small N-API addon (native/weft_native.cc) that makes the system calls Node cannot:
// sockets opened inside another network namespace, namespace creation, per-namespace sysctls and
// TUN devices. The path is resolved from this module so it works from src/ (ts-node style) and
// from dist/src/ alike.

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Errors thrown by the addon: a normal Error with the errno details attached. */
export interface NativeError extends Error {
  /** e.g. "ENOENT" */
  code: string;
  /** positive errno value */
  errno: number;
  syscall: string;
}

export interface NativeAddon {
  openNetlinkSocket(nsPath: string | null, protocol: number, timeoutMs?: number): number;
  send(fd: number, buf: Uint8Array): number;
  /**
   * Returns the datagram's real length; larger than buf.length means it was truncated. With
   * dontWait it never blocks and returns -1 when nothing is queued.
   */
  recv(fd: number, buf: Uint8Array, dontWait?: boolean): number;
  close(fd: number): void;
  setSockOptInt(fd: number, level: number, name: number, value: number): void;
  /**
   * Calls back on the JS thread whenever fd is readable (errno 0) or has a pending socket error
   * (errno > 0, e.g. after a netlink overrun). Makes fd non-blocking. Keeps the event loop alive
   * until unwatchReadable; unwatch before closing fd.
   */
  watchReadable(fd: number, callback: (errno: number) => void): NativeWatch;
  unwatchReadable(watch: NativeWatch): void;
  createNetns(path: string): void;
  deleteNetns(path: string): void;
  /** keyPath is relative to /proc/sys, slash separated. */
  readSysctl(nsPath: string | null, keyPath: string): string;
  writeSysctl(nsPath: string | null, keyPath: string, value: string): void;
  openTun(name: string, flags: number, nsPath?: string | null): { fd: number; name: string };
}

declare const nativeWatchBrand: unique symbol;
/** An opaque handle from watchReadable. */
export interface NativeWatch {
  readonly [nativeWatchBrand]: true;
}

export function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as Partial<NativeError>).errno === 'number' && typeof (err as Partial<NativeError>).code === 'string';
}

function findAddon(): string {
  // An installation may keep the addon elsewhere than next to the modules.
  const override = process.env.WEFT_NATIVE_ADDON;
  if (override) return override;
  // src/netlink → ../../build, dist/src/netlink → ../../../build
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'build', 'Release', 'weft_native.node');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error('weft_native.node not found: run `npm run build:native` first');
}

let loaded: NativeAddon | undefined;

/** The addon, loaded on first use so modules that only encode/decode never need it. */
export function native(): NativeAddon {
  if (!loaded) {
    const require = createRequire(import.meta.url);
    loaded = require(findAddon()) as NativeAddon;
  }
  return loaded;
}

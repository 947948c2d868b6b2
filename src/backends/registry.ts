// Backend type → factory. The store's schema registry (src/store/backend-registry.ts) says which
// types a config may name; this one says which of them weftd can run. A backend module adds one
// line to BUILTIN below.
import { CniCode, WeftError } from '../errors.js';
import type { Backend, BackendFactory } from './types.js';
import { vxlanBackend } from './vxlan/vxlan.js';
import { hostGwBackend } from './host-gw/host-gw.js';
import { createUdpBackend } from './udp/udp.js';
import { udpConfig } from '../store/backend-registry.js';
import { bgpBackend } from './bgp/bgp.js';

const BUILTIN: Readonly<Record<string, BackendFactory>> = {
  vxlan: vxlanBackend,
  'host-gw': hostGwBackend,
  udp: (settings) => createUdpBackend(udpConfig.parse(settings)),
  bgp: bgpBackend,
};

const extra = new Map<string, BackendFactory>();

/** Adds a backend at run time (tests, out-of-tree backends). */
export function registerBackendFactory(type: string, factory: BackendFactory): void {
  if (BUILTIN[type] || extra.has(type)) throw new WeftError(CniCode.Internal, `backend ${JSON.stringify(type)} is registered twice`);
  extra.set(type, factory);
}

export function runnableBackendTypes(): string[] {
  return [...Object.keys(BUILTIN), ...extra.keys()];
}

/** A backend for the config's Backend.Type with its (already schema-checked) settings. */
export function createBackend(type: string, settings: unknown): Backend {
  const factory = BUILTIN[type] ?? extra.get(type);
  if (!factory) {
    throw new WeftError(CniCode.InvalidNetworkConfig,
      `network config: Backend.Type: weftd cannot run backend ${JSON.stringify(type)} (available: ${runnableBackendTypes().join(', ')})`);
  }
  return factory(settings);
}

// The one list of backends. The network-config parser asks it which types exist and parses each
// type's keys with its module; the agent asks it for the factory. A new backend is one folder
// exporting a BackendModule and one line in BUILTIN.
import type { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import type { AnyBackendModule, Backend } from './types.js';
import { vxlan } from './vxlan/vxlan.js';
import { hostGw } from './host-gw/host-gw.js';
import { udp } from './udp/udp.js';
import { bgp } from './bgp/bgp.js';

const BUILTIN = [vxlan, hostGw, udp, bgp] as const;

type Builtin = (typeof BUILTIN)[number];
type ConfigOf<M> = M extends { readonly type: infer T; create(config: infer C): Backend } ? { readonly type: T; readonly settings: C; readonly external?: never } : never;

/** The parsed `Backend` of a network config for a built-in type: a union discriminated by type. */
export type BuiltinBackendConfig = ConfigOf<Builtin>;

/** A backend registered at run time (tests, out-of-tree backends): its settings type is its own. */
export interface ExternalBackendConfig {
  readonly type: string;
  readonly settings: unknown;
  readonly external: true;
}

export type BackendConfig = BuiltinBackendConfig | ExternalBackendConfig;

const builtin = new Map<string, AnyBackendModule>(BUILTIN.map((m) => [m.type, m]));
const extra = new Map<string, AnyBackendModule>();

/**
 * Adds a backend at run time; config parsing and the agent then take its type like a built-in
 * one. Returns the undo (tests register per case).
 */
export function registerBackend(module: AnyBackendModule): () => void {
  if (builtin.has(module.type) || extra.has(module.type)) {
    throw new WeftError(CniCode.Internal, `backend ${JSON.stringify(module.type)} is registered twice`);
  }
  extra.set(module.type, module);
  return () => {
    if (extra.get(module.type) === module) extra.delete(module.type);
  };
}

export function backendModule(type: string): AnyBackendModule | undefined {
  return builtin.get(type) ?? extra.get(type);
}

export function backendTypes(): string[] {
  return [...builtin.keys(), ...extra.keys()];
}

/**
 * Parses a network config's `Backend` keys (all but Type) with the module of that type; undefined
 * for a type nobody registered. The caller words the zod issue (it knows the key path).
 */
export function parseBackendKeys(type: string, keys: Readonly<Record<string, unknown>>):
  { readonly success: true; readonly config: BackendConfig } | { readonly success: false; readonly error: z.ZodError } | undefined {
  const own = builtin.get(type);
  const module = own ?? extra.get(type);
  if (!module) return undefined;
  const r = module.config.safeParse(keys);
  if (!r.success) return { success: false, error: r.error };
  // The map pairs each type with its own module, so this is the member of the union for `type`.
  return { success: true, config: own ? { type, settings: r.data } as BuiltinBackendConfig : { type, settings: r.data, external: true } };
}

/** A backend for the config's (already parsed) Backend. */
export function createBackend(config: BackendConfig): Backend {
  const module = backendModule(config.type);
  if (!module) {
    // Only a config parsed while an external module was registered, created after it left.
    throw new WeftError(CniCode.InvalidNetworkConfig,
      `network config: Backend.Type: weftd cannot run backend ${JSON.stringify(config.type)} (available: ${backendTypes().join(', ')})`);
  }
  return module.create(config.settings);
}

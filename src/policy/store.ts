// Where policy objects live in the store and how they are read back:
//   policies/<namespace>/<name>   the NetworkPolicy object as applied (JSON)
//   namespaces/<name>             {"name","labels"}
//   endpoints/…                   endpoint records (written by the weft plugin; any depth)
//   pods/<namespace>/<name>       kube mode: {"labels","namedPorts"} of each Pod
// Reading parses at the edge: a record that does not parse is skipped and reported, so one bad
// key cannot stop a host from enforcing everything else.
import type { KeyValueStore } from '../store/kv.js';
import {
  type Endpoint, type Namespace, type NetworkPolicy, type PolicyWorld, parseEndpoint, parseNamespace, parsePolicy,
} from './model.js';

export const POLICIES = 'policies/';
export const NAMESPACES = 'namespaces/';
export const ENDPOINTS = 'endpoints/';
/** Kube mode only: every pod's labels and named ports (src/store/kube/kube-kv.ts). */
export const PODS = 'pods/';

export const policyKey = (namespace: string, name: string): string => `${POLICIES}${namespace}/${name}`;
export const namespaceKey = (name: string): string => `${NAMESPACES}${name}`;

export interface Skipped {
  readonly key: string;
  readonly reason: string;
}

function decode<T>(key: string, value: string, parse: (v: unknown, where: string) => T, skipped: Skipped[]): T | undefined {
  try {
    return parse(JSON.parse(value) as unknown, `${key}: `);
  } catch (err) {
    skipped.push({ key, reason: err instanceof Error ? err.message : String(err) });
    return undefined;
  }
}

export async function loadPolicies(kv: KeyValueStore, skipped: Skipped[] = []): Promise<NetworkPolicy[]> {
  const out: NetworkPolicy[] = [];
  for (const { key, value } of await kv.list(POLICIES)) {
    const p = decode(key, value, parsePolicy, skipped);
    if (!p) continue;
    if (key !== policyKey(p.namespace, p.name)) skipped.push({ key, reason: `holds ${p.namespace}/${p.name}, which belongs at ${policyKey(p.namespace, p.name)}` });
    else out.push(p);
  }
  return out;
}

export async function loadNamespaces(kv: KeyValueStore, skipped: Skipped[] = []): Promise<Namespace[]> {
  const out: Namespace[] = [];
  for (const { key, value } of await kv.list(NAMESPACES)) {
    const n = decode(key, value, parseNamespace, skipped);
    if (n) out.push(n);
  }
  return out;
}

export async function loadEndpoints(kv: KeyValueStore, skipped: Skipped[] = []): Promise<Endpoint[]> {
  const out: Endpoint[] = [];
  for (const { key, value } of await kv.list(ENDPOINTS)) {
    const e = decode(key, value, parseEndpoint, skipped);
    if (e) out.push(e);
  }
  return out;
}

/** The whole policy world as the store holds it now, plus what had to be skipped. */
export async function loadPolicyWorld(kv: KeyValueStore): Promise<{ world: PolicyWorld; skipped: Skipped[] }> {
  const skipped: Skipped[] = [];
  const [policies, namespaces, endpoints] = await Promise.all([loadPolicies(kv, skipped), loadNamespaces(kv, skipped), loadEndpoints(kv, skipped)]);
  return { world: { policies, namespaces, endpoints }, skipped };
}

// The store's policy objects kept parsed as a watch delivers them: each value is parsed once per
// (key, value), and one that does not parse is kept as a reason instead of stopping the rest.
// weftd's policy service and the web view both follow policies/, namespaces/ and endpoints/ so.
import { CniCode, WeftError } from '../errors.js';
import { type Endpoint, type Namespace, type NetworkPolicy, parseEndpoint, parseNamespace, parsePolicy } from './model.js';
import { policyKey } from './store.js';

/** Parses each store value once; a value that fails is reported once per (key, value). */
export class ParsedCache<T> {
  private readonly byKey = new Map<string, { value: string; parsed: T | undefined; reason?: string }>();
  constructor(private readonly parse: (key: string, v: unknown) => T) {}

  set(key: string, value: string): void {
    if (this.byKey.get(key)?.value === value) return;
    try {
      this.byKey.set(key, { value, parsed: this.parse(key, JSON.parse(value) as unknown) });
    } catch (err) {
      this.byKey.set(key, { value, parsed: undefined, reason: err instanceof Error ? err.message : String(err) });
    }
  }

  delete(key: string): void { this.byKey.delete(key); }
  replaceAll(entries: readonly { key: string; value: string }[]): void {
    const keep = new Set(entries.map((e) => e.key));
    for (const k of [...this.byKey.keys()]) if (!keep.has(k)) this.byKey.delete(k);
    for (const e of entries) this.set(e.key, e.value);
  }
  keys(): IterableIterator<string> { return this.byKey.keys(); }
  raw(key: string): string | undefined { return this.byKey.get(key)?.value; }
  get(key: string): T | undefined { return this.byKey.get(key)?.parsed; }
  values(): T[] { return [...this.byKey.values()].flatMap((e) => (e.parsed === undefined ? [] : [e.parsed])); }
  bad(): number { return [...this.byKey.values()].filter((e) => e.parsed === undefined).length; }
}

/** policies/<namespace>/<name>: a policy filed under another key is refused. */
export function policyCache(): ParsedCache<NetworkPolicy> {
  return new ParsedCache<NetworkPolicy>((key, v) => {
    const p = parsePolicy(v, `${key}: `);
    if (key !== policyKey(p.namespace, p.name)) throw new WeftError(CniCode.InvalidNetworkConfig, `${key} holds ${p.namespace}/${p.name}`);
    return p;
  });
}

export function namespaceCache(): ParsedCache<Namespace> {
  return new ParsedCache<Namespace>((key, v) => parseNamespace(v, `${key}: `));
}

export function endpointCache(): ParsedCache<Endpoint> {
  return new ParsedCache<Endpoint>((key, v) => parseEndpoint(v, `${key}: `));
}

// Network config that parses but that weftd cannot serve yet. weftd refuses it at start, before
// it leases anything, rather than running with part of the config silently ignored.
import { CniCode, WeftError } from '../errors.js';
import { backendModule } from '../backends/registry.js';
import { parseNetworkConfig, type NetworkConfig } from '../store/config.js';
import type { SubnetStore } from '../store/types.js';

/** Throws for a config using a feature weftd does not implement (yet). */
export function refuseUnsupportedByWeftd(network: NetworkConfig): void {
  // An IPv6 network on a backend that cannot carry it would be leased and never routed.
  if (network.ipv6 !== undefined && backendModule(network.backend.type)?.ipv6 !== true) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `network config: EnableIPv6: the ${network.backend.type} backend carries IPv4 only`);
  }
}

/**
 * Reads the stored config (as the agent is about to) and refuses an unsupported one. An absent
 * config is left for the agent to report; an unreachable store fails here, with the agent's words.
 */
export async function checkStoredConfigSupported(store: SubnetStore, timeoutMs: number): Promise<void> {
  const where = `the ${store.kind} store at ${store.where}`;
  let timer: NodeJS.Timeout | undefined;
  let text: string | undefined;
  try {
    text = await Promise.race([
      store.getConfig().finally(() => clearTimeout(timer)),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new WeftError(CniCode.Store, `store ${store.kind} at ${store.where} unreachable: no answer within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } catch (err) {
    throw WeftError.wrap(err, CniCode.Store, `cannot read the network config from ${where}`);
  }
  if (text !== undefined) refuseUnsupportedByWeftd(parseNetworkConfig(text));
}

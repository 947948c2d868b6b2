// One pacing for every reconnect to a store: the etcd client's watch streams, the lease watcher's
// re-listings, the key/value watches. Attempts are not logged (state changes are), so the pace
// only decides how soon a returning store is found and how hard a thousand nodes knock on a
// struggling one: 125–250 ms at first, growing to 2–4 s.
import { Backoff, type BackoffOptions } from '../backoff.js';

export const STORE_RECONNECT: BackoffOptions = { initialMs: 250, maxMs: 4000 };

export function storeReconnectBackoff(): Backoff {
  return new Backoff(STORE_RECONNECT);
}

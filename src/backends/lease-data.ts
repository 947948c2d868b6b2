// A backend's view of its peers' BackendData. The store hands leases over with the data as the
// peer wrote it; the backend that needs the data checks it here, once per lease value, and skips a
// peer whose data is unusable with a warning naming that peer.
import { formatCidr, formatIP } from '../net/ip.js';
import type { Lease, LeaseAttrs } from '../store/lease.js';
import type { Logger } from '../log.js';
import type { BackendModule } from './types.js';

export type LeaseDataResult<D> = { readonly ok: true; readonly data: D } | { readonly ok: false; readonly reason: string };

/**
 * Checks one BackendData (or BackendV6Data: `field`) against a module's schema; the reason reads
 * "BackendData.Key: what".
 */
export function checkLeaseData<D>(module: Pick<BackendModule<string, unknown, D>, 'leaseData' | 'leaseDataIsPlain'>, data: unknown, field = 'BackendData'): LeaseDataResult<D> {
  if (module.leaseDataIsPlain?.(data)) return { ok: true, data: data as D };
  const r = module.leaseData.safeParse(data);
  if (r.success) return { ok: true, data: r.data };
  const i = r.error.issues[0];
  const path = [field, ...(i?.path.map(String) ?? [])].join('.');
  return { ok: false, reason: `${path}: ${i?.message ?? 'invalid'}` };
}

/**
 * The per-peer check with memory: lease attrs are immutable objects the watcher keeps until the
 * peer writes again, so each is checked (and a bad one reported) once, not on every pass.
 */
export class PeerLeaseData<D> {
  private readonly seen = new WeakMap<LeaseAttrs, LeaseDataResult<D>>();
  private readonly seenV6 = new WeakMap<LeaseAttrs, LeaseDataResult<D>>();

  constructor(private readonly module: Pick<BackendModule<string, unknown, D>, 'type' | 'leaseData' | 'leaseDataIsPlain'>) {}

  /** The peer's data, or a problem line (also logged once) saying which peer was skipped and why. */
  get(peer: Lease, log: Logger | undefined): LeaseDataResult<D> {
    return this.check(peer, log, this.seen, 'BackendData', peer.attrs.backendData);
  }

  /** The same for the peer's BackendV6Data (its IPv6 dataplane's). */
  getV6(peer: Lease, log: Logger | undefined): LeaseDataResult<D> {
    return this.check(peer, log, this.seenV6, 'BackendV6Data', peer.attrs.backendV6Data ?? null);
  }

  private check(peer: Lease, log: Logger | undefined, seen: WeakMap<LeaseAttrs, LeaseDataResult<D>>, field: string, data: unknown): LeaseDataResult<D> {
    let r = seen.get(peer.attrs);
    if (!r) {
      r = checkLeaseData(this.module, data, field);
      seen.set(peer.attrs, r);
      if (!r.ok) {
        // BackendV6Data unusable costs the peer its IPv6 half only; its IPv4 one is programmed.
        log?.warn(field === 'BackendV6Data' ? 'peer lease has unusable IPv6 backend data; its IPv6 half skipped' : 'peer lease has unusable backend data; peer skipped', {
          peer: formatCidr(peer.subnet), publicIP: formatIP(peer.attrs.publicIP), backend: this.module.type, reason: r.reason,
        });
      }
    }
    if (r.ok) return r;
    return { ok: false, reason: `peer ${formatCidr(peer.subnet)} (${formatIP(peer.attrs.publicIP)}): ${r.reason}; ${field === 'BackendV6Data' ? 'its IPv6 half ' : ''}skipped` };
  }
}

// weftd's flow records (issue: traffic visibility): follows conntrack's new and destroy events and
// the policy's NFLOG group in the host's namespace, names the ends by pod from the store's
// endpoints, and keeps the records in a ring served at GET /flows?after=SEQ (weftctl flows reads
// every node's). Completed records can also go to a JSON-lines file for log shippers. The cost
// is per connection (two events), not per packet; dropped packets are rate-limited by the rule.
import { createWriteStream, type WriteStream } from 'node:fs';
import { Counter, Gauge } from 'prom-client';
import { formatIP, type IP } from '../net/ip.js';
import { ConntrackReader, enableConntrackAccounting, watchConntrack, type ConntrackWatch } from '../netlink/conntrack.js';
import { watchNflog, type NflogWatch } from '../netlink/nflog.js';
import { endpointCache } from '../policy/parsed-cache.js';
import { ENDPOINTS } from '../policy/store.js';
import type { KeyValueStore, KeyValueWatch } from '../store/kv.js';
import { FlowObserver } from '../flows/observer.js';
import type { AgentService, ServiceStarter } from './agent.js';

export interface FlowServiceSettings {
  /** Records kept in the ring. */
  readonly capacity: number;
  /** The NFLOG group the policy's default deny logs to; 0: no dropped flows. */
  readonly logGroup: number;
  /** Completed records appended here as JSON lines. */
  readonly exportFile?: string;
}

/** What GET /flows answers. */
export interface FlowsDocument {
  readonly node: string;
  readonly records: readonly unknown[];
  /** Ask with ?after=next for what comes later. */
  readonly next: number;
  /** Records overwritten before this reader saw them. */
  readonly lost: number;
  /** Kernel events lost before weftd read them (its conntrack socket overran). */
  readonly lostEvents: number;
  /** Sources weftd could not follow (no ctnetlink, the NFLOG group taken), each with why. */
  readonly problems?: readonly string[];
}

export function flowServiceStarter(open: () => Promise<KeyValueStore>, node: string, s: FlowServiceSettings): ServiceStarter {
  return async (ctx) => {
    const log = ctx.log.child({ service: 'flows' });
    const kv = await open();
    const endpoints = endpointCache();
    let byIp: Map<string, { namespace: string; pod: string }> | undefined;
    const podOf = (ip: IP) => {
      byIp ??= new Map(endpoints.values().flatMap((e) => e.ips.map((a) => [formatIP(a), { namespace: e.namespace, pod: e.pod }] as const)));
      return byIp.get(formatIP(ip));
    };
    const registers = [ctx.metrics.registry];
    const recorded = new Counter({ name: 'weft_flow_records_total', help: 'Flow records completed, by verdict', labelNames: ['verdict'] as const, registers });
    const lost = new Gauge({ name: 'weft_flow_events_lost', help: 'conntrack events the kernel dropped before weftd read them (socket overruns)', registers });
    let out: WriteStream | undefined;
    if (s.exportFile !== undefined) {
      out = createWriteStream(s.exportFile, { flags: 'a', mode: 0o640 });
      out.on('error', (err) => { log.error('flow export file', { file: s.exportFile, error: err.message }); out = undefined; });
    }
    const observer = new FlowObserver({
      node, capacity: s.capacity, network: ctx.clusterNetworks, podOf,
      onRecord: (r) => { recorded.inc({ verdict: r.verdict }); out?.write(JSON.stringify(r) + '\n'); },
    });
    let watch: KeyValueWatch | undefined;
    let ct: ConntrackWatch | undefined;
    let nflog: NflogWatch | undefined;
    const sweep = setInterval(() => observer.closeQuietDrops(), 1000);
    sweep.unref();
    const reader = new ConntrackReader();
    // Each source on its own: a kernel without ctnetlink or NFLOG, or another program holding
    // the NFLOG group, costs that part of the records (with a warning), never weftd itself.
    const problems: string[] = [];
    const attempt = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        problems.push(`${what}: ${reason}`);
        log.warn(`flow records without ${what}`, { error: reason });
      }
    };
    watch = kv.watch(ENDPOINTS, (ev) => {
      if (ev.type === 'snapshot') endpoints.replaceAll(ev.entries);
      else if (ev.type === 'put') endpoints.set(ev.key, ev.value);
      else if (ev.type === 'delete') endpoints.delete(ev.key);
      else return;
      byIp = undefined;
    });
    // Counters and start/stop times for connections from now on; weftd runs in the host's namespace.
    attempt('conntrack accounting (no byte counts)', () => enableConntrackAccounting(undefined));
    attempt('conntrack events (no forwarded connections)', () => {
      ct = watchConntrack((ev) => {
        if (ev.type === 'new') observer.started(ev.flow);
        else if (ev.type === 'destroy') observer.ended(ev.flow);
        else if (ev.type === 'update') {
          // A TCP connection that closed stays in TIME_WAIT for minutes before its destroy, and
          // counters come only with that destroy or a read: read this one entry now.
          const st = ev.flow.tcpState;
          if ((st !== 'time-wait' && st !== 'close') || ev.flow.id === undefined || !observer.isOpen(ev.flow.id)) return;
          try {
            const now = reader.get(ev.flow.original);
            if (now) observer.ended(now, false);
          } catch (err) {
            log.warn('conntrack read', { error: err instanceof Error ? err.message : String(err) });
          }
        } else if (ev.type === 'overrun') {
          observer.lostEvents += 1;
          lost.set(observer.lostEvents);
        } else if (ev.type === 'error') log.warn('conntrack events', { error: ev.error.message, fatal: ev.fatal });
      });
    });
    if (s.logGroup > 0) {
      attempt(`NFLOG group ${s.logGroup} (no dropped connections)`, () => {
        nflog = watchNflog(s.logGroup, (ev) => {
          if (ev.type === 'packet') observer.dropped(ev.packet);
          else if (ev.type === 'error') log.warn('nflog', { group: s.logGroup, error: ev.error.message, fatal: ev.fatal });
        });
      });
    }
    log.info('recording flows', { capacity: s.capacity, logGroup: s.logGroup, ...(s.exportFile !== undefined && { exportFile: s.exportFile }) });
    return {
      document(path: string, query: URLSearchParams): FlowsDocument | undefined {
        if (path !== '/flows') return undefined;
        const after = Number(query.get('after') ?? '0');
        const page = observer.ring.after(Number.isSafeInteger(after) && after >= 0 ? after : 0);
        // ?verdict=dropped: a poller that wants only the drops (the web view) is sent only those.
        const verdict = query.get('verdict');
        const records = verdict === null ? page.records : page.records.filter((r) => r.verdict === verdict);
        return { node, records, next: page.next, lost: page.lost, lostEvents: observer.lostEvents, ...(problems.length > 0 && { problems }) };
      },
      close: async () => {
        clearInterval(sweep);
        ct?.close();
        reader.close();
        nflog?.close();
        observer.closeQuietDrops(Number.POSITIVE_INFINITY);
        await watch?.close();
        await kv.close();
        await new Promise<void>((r) => (out ? out.end(() => r()) : r()));
        // A service started again in this registry (weftd restarting it) registers them anew.
        ctx.metrics.registry.removeSingleMetric('weft_flow_records_total');
        ctx.metrics.registry.removeSingleMetric('weft_flow_events_lost');
      },
    } satisfies AgentService;
  };
}

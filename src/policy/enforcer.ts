// Keeps one host's `inet weft-policy` table equal to what the current world compiles to, with the
// smallest kernel change: element updates when only memberships moved (pods came, went or changed
// labels; a new pod selected by policies some local pod already has), an atomic whole-table
// replace otherwise. Conntrack state lives outside the table, so established flows that the new
// rules still allow survive a replace.
//
// While no policy table exists, the enforcer can keep a conntrack bypass in its place: a raw
// prerouting rule that marks pod-to-pod packets `notrack`, so forwarding between pods skips
// conntrack (and with it the NAT hooks weftd's --ip-masq chain brings in). The policy rules accept
// replies by conntrack state, so the bypass must never coexist with them: the same transaction
// that creates the policy table deletes the notrack rules, and the one that deletes it restores
// them. Connections NATed on this host between pods (above all DNATed to a pod: kube-proxy's
// ClusterIPs, portmap's hostPorts) stay tracked through a set their packets fill: see bypass.ts.
// The learning half of the bypass table stays while a policy table exists.
//
// The table's counters (see counters.ts) are read back here, under the same lock as every change.
// Every repair pass lists the table anyway and takes that reading; once someone has asked for the
// counters (a scrape, weftctl), a change that would zero counters of policies or endpoints that
// stay (a replace, an endpoint moving to another chain) also reads them first, so the totals are
// exact. Before that, a replace costs what it did without counters (the listing is ~100 ms of a
// loaded host's replace), and at most the counts since the last repair pass are missed. The
// totals are monotonic either way.
import { readFile } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { Cidr, IPFamily } from '../net/ip.js';
import { nftApply, nftListJson } from '../nft/nft.js';
import { readSysctl } from '../netns/sysctl.js';
import { netnsPath, runInNetns } from '../netns/netns.js';
import {
  BYPASS_TABLE, type NatSeed, bypassDifference, parseConntrackNat, planBypass, renderBypass, renderBypassRemove,
} from './bypass.js';
import {
  type CompiledPolicy, type LocalGuard, type TableShape, DEFAULT_DENY_LOG_GROUP, POLICY_FAMILY, POLICY_TABLE, compilePolicies, diffElements, expectedShape,
  renderRemove, renderReplace,
} from './compile.js';
import { type EndpointCounter, type PolicyCounter, VerdictCounters, readSources } from './counters.js';
import type { PolicyWorld } from './model.js';

/** Where the table lives: this process's namespace, or a named one (tests, the lab). */

/** After the kernel refused the deny log, how long until it is tried again. */
const LOG_RETRY_MS = 60_000;
export interface NftRunner {
  /** Runs a script as one transaction. */
  apply(script: string): Promise<void>;
  /**
   * `nft -j list table inet <table>` (default weft-policy), undefined when the table is absent;
   * `terse` leaves set elements out.
   */
  listTable(table?: string, terse?: boolean): Promise<unknown[] | undefined>;
  /**
   * bridge-nf-call-iptables (IPv4, the default) or bridge-nf-call-ip6tables (IPv6) in that
   * namespace: undefined when br_netfilter is not there.
   */
  bridgeNetfilter(family?: IPFamily): boolean | undefined;
  /** /proc/net/nf_conntrack of that namespace, undefined when the kernel has none (seeds the bypass's sets). */
  readConntrack?(): Promise<string | undefined>;
}

export function localNft(): NftRunner {
  return {
    apply: (script) => nftApply(script),
    listTable: (table = POLICY_TABLE, terse = false) => nftListJson(['table', POLICY_FAMILY, table], { terse }),
    bridgeNetfilter: (family = 4) => readBridgeNf(undefined, family),
    readConntrack: async () => {
      try {
        return await readFile('/proc/net/nf_conntrack', 'utf8');
      } catch {
        return undefined;
      }
    },
  };
}

function readBridgeNf(nsPath: string | undefined, family: IPFamily): boolean | undefined {
  try {
    return readSysctl(`net.bridge.bridge-nf-call-${family === 4 ? 'iptables' : 'ip6tables'}`, nsPath) === '1';
  } catch {
    return undefined;
  }
}

/** nft in a named namespace (tests, the lab), through src/nft's netns option. */
export function netnsNft(netns: string): NftRunner {
  return {
    apply: (script) => nftApply(script, { netns }),
    listTable: (table = POLICY_TABLE, terse = false) => nftListJson(['table', POLICY_FAMILY, table], { netns, terse }),
    bridgeNetfilter: (family = 4) => readBridgeNf(netnsPath(netns), family),
    // Tests and the lab only (weftd uses localNft), so the blocking `cat` is left as it was.
    readConntrack: async () => {
      // A busy host's table runs to many megabytes; spawnSync's default 1 MiB would drop the seed.
      const r = runInNetns(netns, ['cat', '/proc/net/nf_conntrack'], { maxBufferBytes: 512 * 1024 * 1024 });
      return r.status === 0 ? r.stdout : undefined;
    },
  };
}

export { BYPASS_TABLE } from './bypass.js';

export type EnforceResult =
  | { readonly type: 'unchanged' }
  | { readonly type: 'elements'; readonly added: number; readonly removed: number }
  | { readonly type: 'replaced'; readonly reason: string };

export type RepairResult =
  | { readonly type: 'idle' }
  | { readonly type: 'ok' }
  | { readonly type: 'repaired'; readonly reason: string };

const round = (ms: number): number => Math.round(ms * 10) / 10;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The kernel's table reduced to what expectedShape predicts. */
export function shapeOfListing(items: readonly unknown[]): TableShape {
  const sets: Record<string, number> = {};
  const chains: Record<string, number> = {};
  for (const item of items) {
    if (!isRecord(item)) continue;
    const s = isRecord(item.set) ? item.set : isRecord(item.map) ? item.map : undefined;
    if (s && typeof s.name === 'string') sets[s.name] = Array.isArray(s.elem) ? s.elem.length : 0;
    if (isRecord(item.chain) && typeof item.chain.name === 'string') chains[item.chain.name] ??= 0;
    if (isRecord(item.rule) && typeof item.rule.chain === 'string') chains[item.rule.chain] = (chains[item.rule.chain] ?? 0) + 1;
  }
  return { sets, chains };
}

function shapeDifference(want: TableShape, got: TableShape): string | undefined {
  for (const kind of ['sets', 'chains'] as const) {
    const w = want[kind];
    const g = got[kind];
    for (const [name, n] of Object.entries(w)) {
      if (!(name in g)) return `${kind === 'sets' ? 'set' : 'chain'} ${name} is missing`;
      if (g[name] !== n) return `${kind === 'sets' ? 'set' : 'chain'} ${name} has ${g[name]} ${kind === 'sets' ? 'elements' : 'rules'}, expected ${n}`;
    }
    for (const name of Object.keys(g)) if (!(name in w)) return `unexpected ${kind === 'sets' ? 'set' : 'chain'} ${name}`;
  }
  return undefined;
}

export interface PolicyEnforcerOptions {
  /** The node name endpoints carry in `host`; only those endpoints get chains here. */
  readonly host: string;
  /**
   * Where nft runs: `localNft()` for the caller's own namespace (weftd on its host), `netnsNft(ns)`
   * for another. Required so that nothing ever lands in the caller's ruleset by default.
   */
  readonly nft: NftRunner;
  /**
   * The cluster network(s): when given, pod-to-pod traffic among them skips conntrack whenever
   * this host has no policy table (see src/policy/bypass.ts). Empty or absent: no bypass, and a
   * bypass table an earlier run left is deleted with the first transaction.
   */
  readonly conntrackBypass?: readonly Cidr[];
  /** NFLOG group of denied packets (0: none; default compile.ts's DEFAULT_DENY_LOG_GROUP). */
  readonly logGroup?: number;
  readonly log?: Logger;
}

/** The verdict counters at one reading. */
export interface CounterReading {
  readonly at: Date;
  readonly policies: readonly PolicyCounter[];
  readonly endpoints: readonly EndpointCounter[];
}

/**
 * Whether applying `next` over `prev` by element updates deletes a counting element of an
 * address that stays local (an endpoint moving to another chain, or no longer isolated): its
 * count must be read first. Elements of pods that go away need no reading, their series go too.
 */
function elementUpdateResetsCounters(prev: CompiledPolicy, next: CompiledPolicy): boolean {
  for (const name of next.layout.elementSets.keys()) {
    const after = new Set(next.sets.get(name)?.elements ?? []);
    for (const e of prev.sets.get(name)?.elements ?? []) {
      if (after.has(e)) continue;
      const at = e.indexOf(' : ');
      if (next.layout.addresses.has(at < 0 ? e : e.slice(0, at))) return true;
    }
  }
  return false;
}

export class PolicyEnforcer {
  private readonly nft: NftRunner;
  private current: CompiledPolicy | undefined;
  /** remove() has run since the last update: no policy table, the bypass (if any) in place. */
  private cleared = false;
  private readonly bypass: readonly Cidr[];
  /**
   * This process has looked at the bypass table (or made it) and its sets hold every live NATed
   * connection: later transactions rewrite it in place and seed nothing.
   */
  private bypassChecked = false;
  private readonly counters = new VerdictCounters();
  /** The NFLOG group the tables get; 0 once the kernel refused log rules (see replaceOrWithoutLog). */
  private logGroup: number;
  /** readCounters has been called: changes that zero counters read them first. */
  private countersInUse = false;
  /** Every nft call of this enforcer, one at a time: a counter reading never meets half a change. */
  private lock: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: PolicyEnforcerOptions) {
    this.nft = opts.nft;
    this.bypass = opts.conntrackBypass ?? [];
    this.logGroup = opts.logGroup ?? DEFAULT_DENY_LOG_GROUP;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  /** Reads the kernel's counters into the totals, as the table `c` was compiled (no lock). */
  private async observeCounters(c: CompiledPolicy, listing?: readonly unknown[]): Promise<void> {
    try {
      const items = listing ?? await this.nft.listTable();
      if (items) this.counters.observe(readSources(items, c.layout));
    } catch (err) {
      // A lost reading costs some counts (or freshness), never the change it came before.
      this.opts.log?.warn('policy counters not read', { error: err instanceof Error ? err.message : String(err) });
    }
  }

  /**
   * The verdict counters now: monotonic totals per policy and per endpoint (empty while no table
   * is applied). Each call lists the whole table (an nft process): callers cache.
   */
  readCounters(): Promise<CounterReading> {
    this.countersInUse = true;
    return this.exclusive(async () => {
      const c = this.current;
      if (c) await this.observeCounters(c);
      const t = c ? this.counters.totals(c.layout) : { policies: [], endpoints: [] };
      return { at: new Date(), ...t };
    });
  }

  /** What was last applied (undefined before the first update or after remove()). */
  get applied(): CompiledPolicy | undefined {
    return this.current;
  }

  /** True once remove() brought the kernel to "no policy table" and no update came since. */
  get idle(): boolean {
    return this.cleared;
  }

  /**
   * Applies `main` (the policy table's replacement or removal) and, in the same transaction, the
   * bypass table in the state that goes with it: notrack only when no policy table is left, the
   * learning half either way. Without a configured bypass, the same transaction deletes a bypass
   * table an earlier run (with the bypass on) left. A bypass rewrite the kernel refuses (a table
   * someone changed in a way `add` cannot fix, e.g. a set of another type) is retried once with
   * the bypass table recreated.
   */
  private async applyWith(main: string, notrack: boolean): Promise<void> {
    if (this.bypass.length === 0) {
      await this.nft.apply(main + renderBypassRemove());
      return;
    }
    try {
      await this.nft.apply(main + await this.bypassScript(notrack, false));
    } catch (err) {
      this.opts.log?.warn('conntrack bypass: transaction refused, retrying with its table recreated', { error: err instanceof Error ? err.message : String(err) });
      this.bypassChecked = false;
      await this.nft.apply(main + await this.bypassScript(notrack, true));
    }
    this.bypassChecked = true;
  }

  /**
   * The bypass part of a transaction. The first time in this process (and after a repair), the
   * kernel's table is looked at: when its sets are new (no table yet, an upgrade, a layout this
   * version does not know and recreates), the learning half goes in first in a transaction of its
   * own, then the sets are seeded with the NATed connections conntrack already holds. In that
   * order, a connection made in between is learnt by the learn chains and one made before is in
   * conntrack's listing, so none meets the first notrack unknown.
   */
  private async bypassScript(notrack: boolean, forceRecreate: boolean): Promise<string> {
    let seed: NatSeed[] | undefined;
    if (!this.bypassChecked || forceRecreate) {
      const plan = forceRecreate ? { recreate: true, fresh: true } : planBypass(await this.bypassListing(), this.bypass);
      if (plan.fresh) {
        await this.nft.apply(renderBypass(this.bypass, { notrack: false, recreate: plan.recreate }));
        seed = await this.conntrackSeed();
      }
    }
    return renderBypass(this.bypass, { notrack, ...(seed && { seed }) });
  }

  private async bypassListing(): Promise<TableShape | undefined> {
    const items = await this.nft.listTable(BYPASS_TABLE, true);
    return items === undefined ? undefined : shapeOfListing(items);
  }

  private async conntrackSeed(): Promise<NatSeed[]> {
    const text = await this.nft.readConntrack?.();
    if (text === undefined) {
      this.opts.log?.warn('conntrack bypass: cannot read /proc/net/nf_conntrack, NATed connections made before now are not in its sets');
      return [];
    }
    const seed = parseConntrackNat(text, this.bypass);
    this.opts.log?.info('conntrack bypass: sets seeded from conntrack', { connections: seed.length });
    return seed;
  }

  /**
   * Whether pod-to-pod traffic of `family` across one bridge reaches the forward hook
   * (br_netfilter with bridge-nf-call-iptables=1, for IPv6 bridge-nf-call-ip6tables=1: two
   * switches, so one family can be enforced and the other not). Routed traffic always does.
   */
  bridgedTrafficEnforced(family: IPFamily = 4): boolean {
    return this.nft.bridgeNetfilter(family) === true;
  }

  /** Brings the kernel to `world`. Throws WeftError when nft refuses (nothing half-applied). */
  update(world: PolicyWorld, guard?: LocalGuard): Promise<EnforceResult> {
    return this.exclusive(() => this.updateNow(world, guard));
  }

  private async updateNow(world: PolicyWorld, guard?: LocalGuard): Promise<EnforceResult> {
    const t0 = performance.now();
    const next = compilePolicies(world, this.opts.host, guard, { logGroup: this.logGroup });
    const compileMs = performance.now() - t0;
    const prev = this.current;
    if (prev && prev.structure === next.structure) {
      const diff = diffElements(prev, next);
      if (diff.script === '') return { type: 'unchanged' };
      try {
        const t1 = performance.now();
        if (this.countersInUse && elementUpdateResetsCounters(prev, next)) await this.observeCounters(prev);
        await this.nft.apply(diff.script);
        this.current = next;
        this.counters.prune(next.layout);
        this.opts.log?.debug('policy elements updated', { added: diff.added, removed: diff.removed, compileMs: round(compileMs), nftMs: round(performance.now() - t1) });
        return { type: 'elements', added: diff.added, removed: diff.removed };
      } catch (err) {
        // The kernel no longer holds what we applied (someone edited the table): rebuild it.
        return this.replaceOrWithoutLog(next, world, guard, `element update failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return this.replaceOrWithoutLog(next, world, guard, prev ? 'rules changed' : 'first apply', compileMs);
  }

  /**
   * A replace; when the kernel refuses it and it has log rules, once more without them. `log
   * group` needs nfnetlink_log, which a kernel may lack: enforcing the policies matters more than
   * logging their drops. The log stays off for a while and is then tried again, so a refusal
   * that had another cause (a transient nft failure) does not turn it off for good.
   */
  private async replaceOrWithoutLog(next: CompiledPolicy, world: PolicyWorld, guard: LocalGuard | undefined, reason: string, compileMs?: number): Promise<EnforceResult> {
    try {
      return await this.replace(next, reason, compileMs);
    } catch (err) {
      if (!next.structure.includes(' log prefix ')) throw err;
      const plain = compilePolicies(world, this.opts.host, guard, { logGroup: 0 });
      const r = await this.replace(plain, reason, compileMs);
      this.opts.log?.warn('denied packets are not logged: the kernel refused the table with log rules and took it without; trying again in a minute', {
        group: next.logGroup, error: err instanceof Error ? err.message : String(err),
      });
      const group = next.logGroup;
      this.logGroup = 0;
      const retry = setTimeout(() => { if (this.logGroup === 0) this.logGroup = group; }, LOG_RETRY_MS);
      retry.unref();
      return r;
    }
  }

  private async replace(next: CompiledPolicy, reason: string, compileMs?: number): Promise<EnforceResult> {
    const t0 = performance.now();
    if (this.current && this.countersInUse) await this.observeCounters(this.current);
    const t1 = performance.now();
    await this.applyWith(renderReplace(next), false);
    // Every counter of the new table starts from zero.
    this.counters.settleAll();
    this.counters.prune(next.layout);
    this.current = next;
    this.cleared = false;
    this.opts.log?.info('policy table replaced', {
      reason, chains: next.chains.size, sets: next.sets.size, ...(compileMs !== undefined && { compileMs: round(compileMs) }), countersMs: round(t1 - t0), nftMs: round(performance.now() - t1),
    });
    return { type: 'replaced', reason };
  }

  /**
   * Compares the kernel with what was applied and reapplies it when they differ: the policy table
   * (and the bypass's learning half, without notrack) while enforcing, the whole bypass after
   * remove(). The bypass's set elements are the kernel's and not compared.
   */
  repair(): Promise<RepairResult> {
    return this.exclusive(() => this.repairNow());
  }

  private async repairNow(): Promise<RepairResult> {
    const want = this.current;
    if (!want) return this.cleared && this.bypass.length > 0 ? this.repairBypass() : { type: 'idle' };
    const items = await this.nft.listTable();
    // The listing has the counters anyway: a reading every repair keeps unforeseen resets small.
    if (items) await this.observeCounters(want, items);
    let diff = items === undefined ? 'table is missing' : shapeDifference(expectedShape(want), shapeOfListing(items));
    if (diff === undefined && this.bypass.length > 0) diff = bypassDifference(await this.bypassListing(), this.bypass, false);
    if (diff === undefined) return { type: 'ok' };
    this.bypassChecked = false;
    await this.applyWith(renderReplace(want), false);
    this.counters.settleAll();
    this.opts.log?.warn('policy table repaired', { reason: diff });
    return { type: 'repaired', reason: diff };
  }

  private async repairBypass(): Promise<RepairResult> {
    const diff = bypassDifference(await this.bypassListing(), this.bypass, true)
      ?? ((await this.nft.listTable()) !== undefined ? `${POLICY_TABLE} exists while no policy applies` : undefined);
    if (diff === undefined) return { type: 'ok' };
    this.bypassChecked = false;
    await this.applyWith(renderRemove(), true);
    this.opts.log?.warn('conntrack bypass repaired', { reason: diff });
    return { type: 'repaired', reason: diff };
  }

  /**
   * Deletes weft's policy table (everything becomes allowed again) and, in the same transaction,
   * puts the conntrack bypass in place when configured.
   */
  remove(): Promise<void> {
    return this.exclusive(async () => {
      await this.applyWith(renderRemove(), true);
      // No policy is left, so no series either.
      this.counters.clear();
      this.current = undefined;
      this.cleared = true;
    });
  }
}

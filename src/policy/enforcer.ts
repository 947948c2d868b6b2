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
// that creates the policy table deletes the bypass, and the one that deletes it restores the bypass.
import type { Logger } from '../log.js';
import { type Cidr, formatCidr } from '../net/ip.js';
import { nftApply, nftListJson } from '../nft/nft.js';
import { readSysctl } from '../netns/sysctl.js';
import { netnsPath } from '../netns/netns.js';
import {
  type CompiledPolicy, type LocalGuard, type TableShape, POLICY_FAMILY, POLICY_TABLE, compilePolicies, diffElements, expectedShape,
  renderRemove, renderReplace,
} from './compile.js';
import type { PolicyWorld } from './model.js';

/** Where the table lives: this process's namespace, or a named one (tests, the lab). */
export interface NftRunner {
  /** Runs a script as one transaction. */
  apply(script: string): void;
  /** `nft -j list table inet <table>` (default weft-policy), undefined when the table is absent. */
  listTable(table?: string): unknown[] | undefined;
  /** bridge-nf-call-iptables in that namespace: undefined when br_netfilter is not there. */
  bridgeNetfilter(): boolean | undefined;
}

export function localNft(): NftRunner {
  return {
    apply: (script) => nftApply(script),
    listTable: (table = POLICY_TABLE) => nftListJson(['table', POLICY_FAMILY, table]),
    bridgeNetfilter: () => readBridgeNf(undefined),
  };
}

function readBridgeNf(nsPath: string | undefined): boolean | undefined {
  try {
    return readSysctl('net.bridge.bridge-nf-call-iptables', nsPath) === '1';
  } catch {
    return undefined;
  }
}

/** nft in a named namespace (tests, the lab), through src/nft's netns option. */
export function netnsNft(netns: string): NftRunner {
  return {
    apply: (script) => nftApply(script, { netns }),
    listTable: (table = POLICY_TABLE) => nftListJson(['table', POLICY_FAMILY, table], { netns }),
    bridgeNetfilter: () => readBridgeNf(netnsPath(netns)),
  };
}

/** The table that holds the conntrack bypass while no policy table exists. */
export const BYPASS_TABLE = 'weft-notrack';

/**
 * Creates (or rewrites) the bypass table: pod-to-pod packets of `networks` are not tracked.
 * Packets addressed to the host itself stay tracked: portmap's hairpin masquerades a pod's
 * connection to its own host port behind the bridge address, and the pod's replies to that
 * address must meet their conntrack entry to be un-NATed.
 */
export function renderBypass(networks: readonly Cidr[]): string {
  const t = `${POLICY_FAMILY} ${BYPASS_TABLE}`;
  const lines = [
    `add table ${t}`, `delete table ${t}`, `add table ${t}`,
    `add chain ${t} prerouting { type filter hook prerouting priority raw; policy accept; }`,
  ];
  for (const [family, match] of [[4, 'ip'], [6, 'ip6']] as const) {
    const nets = networks.filter((n) => n.ip.family === family).map(formatCidr);
    if (nets.length === 0) continue;
    const set = `{ ${nets.join(', ')} }`;
    lines.push(`add rule ${t} prerouting ${match} saddr ${set} ${match} daddr ${set} fib daddr type != local notrack comment "weft: pod to pod, no network policy on this host"`);
  }
  return lines.join('\n') + '\n';
}

/** Deletes the bypass table whether or not it exists. */
export function renderBypassRemove(): string {
  return `add table ${POLICY_FAMILY} ${BYPASS_TABLE}\ndelete table ${POLICY_FAMILY} ${BYPASS_TABLE}\n`;
}

/** Rules renderBypass writes for `networks` (one per address family present). */
export function bypassRuleCount(networks: readonly Cidr[]): number {
  return new Set(networks.map((n) => n.ip.family)).size;
}

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
   * this host has no policy table (see renderBypass). Empty or absent: no bypass.
   */
  readonly conntrackBypass?: readonly Cidr[];
  readonly log?: Logger;
}

export class PolicyEnforcer {
  private readonly nft: NftRunner;
  private current: CompiledPolicy | undefined;
  /** remove() has run since the last update: no policy table, the bypass (if any) in place. */
  private cleared = false;
  private readonly bypass: readonly Cidr[];

  constructor(private readonly opts: PolicyEnforcerOptions) {
    this.nft = opts.nft;
    this.bypass = opts.conntrackBypass ?? [];
  }

  /** What was last applied (undefined before the first update or after remove()). */
  get applied(): CompiledPolicy | undefined {
    return this.current;
  }

  /** True once remove() brought the kernel to "no policy table" and no update came since. */
  get idle(): boolean {
    return this.cleared;
  }

  /** The policy table plus, in the same transaction, the bypass's removal. */
  private replaceScript(c: CompiledPolicy): string {
    return renderReplace(c) + (this.bypass.length > 0 ? renderBypassRemove() : '');
  }

  /** No policy table and, in the same transaction, the bypass (when configured). */
  private removeScript(): string {
    return renderRemove() + (this.bypass.length > 0 ? renderBypass(this.bypass) : '');
  }

  /**
   * Whether pod-to-pod traffic across one bridge reaches the forward hook (br_netfilter with
   * bridge-nf-call-iptables=1). Routed traffic always does.
   */
  bridgedTrafficEnforced(): boolean {
    return this.nft.bridgeNetfilter() === true;
  }

  /** Brings the kernel to `world`. Throws WeftError when nft refuses (nothing half-applied). */
  update(world: PolicyWorld, guard?: LocalGuard): EnforceResult {
    const t0 = performance.now();
    const next = compilePolicies(world, this.opts.host, guard);
    const compileMs = performance.now() - t0;
    const prev = this.current;
    if (prev && prev.structure === next.structure) {
      const diff = diffElements(prev, next);
      if (diff.script === '') return { type: 'unchanged' };
      try {
        const t1 = performance.now();
        this.nft.apply(diff.script);
        this.current = next;
        this.opts.log?.debug('policy elements updated', { added: diff.added, removed: diff.removed, compileMs: round(compileMs), nftMs: round(performance.now() - t1) });
        return { type: 'elements', added: diff.added, removed: diff.removed };
      } catch (err) {
        // The kernel no longer holds what we applied (someone edited the table): rebuild it.
        return this.replace(next, `element update failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return this.replace(next, prev ? 'rules changed' : 'first apply', compileMs);
  }

  private replace(next: CompiledPolicy, reason: string, compileMs?: number): EnforceResult {
    const t1 = performance.now();
    this.nft.apply(this.replaceScript(next));
    this.current = next;
    this.cleared = false;
    this.opts.log?.info('policy table replaced', {
      reason, chains: next.chains.size, sets: next.sets.size, ...(compileMs !== undefined && { compileMs: round(compileMs) }), nftMs: round(performance.now() - t1),
    });
    return { type: 'replaced', reason };
  }

  /**
   * Compares the kernel with what was applied and reapplies it when they differ: the policy table
   * (and no bypass) while enforcing, the bypass after remove().
   */
  repair(): RepairResult {
    const want = this.current;
    if (!want) return this.cleared && this.bypass.length > 0 ? this.repairBypass() : { type: 'idle' };
    const items = this.nft.listTable();
    let diff = items === undefined ? 'table is missing' : shapeDifference(expectedShape(want), shapeOfListing(items));
    if (diff === undefined && this.bypass.length > 0 && this.nft.listTable(BYPASS_TABLE) !== undefined) diff = `${BYPASS_TABLE} exists next to the policy table`;
    if (diff === undefined) return { type: 'ok' };
    this.nft.apply(this.replaceScript(want));
    this.opts.log?.warn('policy table repaired', { reason: diff });
    return { type: 'repaired', reason: diff };
  }

  private repairBypass(): RepairResult {
    const items = this.nft.listTable(BYPASS_TABLE);
    const rules = items === undefined ? undefined : shapeOfListing(items).chains.prerouting;
    const want = bypassRuleCount(this.bypass);
    const diff = items === undefined ? `${BYPASS_TABLE} is missing`
      : rules !== want ? `${BYPASS_TABLE} prerouting has ${rules ?? 'no chain and 0'} rules, expected ${want}`
      : this.nft.listTable() !== undefined ? `${POLICY_TABLE} exists while no policy applies` : undefined;
    if (diff === undefined) return { type: 'ok' };
    this.nft.apply(this.removeScript());
    this.opts.log?.warn('conntrack bypass repaired', { reason: diff });
    return { type: 'repaired', reason: diff };
  }

  /**
   * Deletes weft's policy table (everything becomes allowed again) and, in the same transaction,
   * puts the conntrack bypass in place when configured.
   */
  remove(): void {
    this.nft.apply(this.removeScript());
    this.current = undefined;
    this.cleared = true;
  }
}

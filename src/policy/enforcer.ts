// Keeps one host's `inet weft-policy` table equal to what the current world compiles to, with the
// smallest kernel change: element updates when only memberships moved (pods came, went or changed
// labels; a new pod selected by policies some local pod already has), an atomic whole-table
// replace otherwise. Conntrack state lives outside the table, so established flows that the new
// rules still allow survive a replace.
import type { Logger } from '../log.js';
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
  /** `nft -j list table inet weft-policy`, undefined when the table is absent. */
  listTable(): unknown[] | undefined;
  /** bridge-nf-call-iptables in that namespace: undefined when br_netfilter is not there. */
  bridgeNetfilter(): boolean | undefined;
}

export function localNft(): NftRunner {
  return {
    apply: (script) => nftApply(script),
    listTable: () => nftListJson(['table', POLICY_FAMILY, POLICY_TABLE]),
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
    listTable: () => nftListJson(['table', POLICY_FAMILY, POLICY_TABLE], { netns }),
    bridgeNetfilter: () => readBridgeNf(netnsPath(netns)),
  };
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
  readonly log?: Logger;
}

export class PolicyEnforcer {
  private readonly nft: NftRunner;
  private current: CompiledPolicy | undefined;

  constructor(private readonly opts: PolicyEnforcerOptions) {
    this.nft = opts.nft;
  }

  /** What was last applied (undefined before the first update or after remove()). */
  get applied(): CompiledPolicy | undefined {
    return this.current;
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
    this.nft.apply(renderReplace(next));
    this.current = next;
    this.opts.log?.info('policy table replaced', {
      reason, chains: next.chains.size, sets: next.sets.size, ...(compileMs !== undefined && { compileMs: round(compileMs) }), nftMs: round(performance.now() - t1),
    });
    return { type: 'replaced', reason };
  }

  /** Compares the kernel's table with what was applied and reapplies it when they differ. */
  repair(): RepairResult {
    const want = this.current;
    if (!want) return { type: 'idle' };
    const items = this.nft.listTable();
    const diff = items === undefined ? 'table is missing' : shapeDifference(expectedShape(want), shapeOfListing(items));
    if (diff === undefined) return { type: 'ok' };
    this.nft.apply(renderReplace(want));
    this.opts.log?.warn('policy table repaired', { reason: diff });
    return { type: 'repaired', reason: diff };
  }

  /** Deletes weft's policy table (everything becomes allowed again). */
  remove(): void {
    this.nft.apply(renderRemove());
    this.current = undefined;
  }
}

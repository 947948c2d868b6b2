// Test support for the conntrack bypass: an observer table that counts forwarded packets by
// whether conntrack tracked them, and the bypass table's shape as weftd's repair sees it.
import { spawnSync } from 'node:child_process';
import { BYPASS_TABLE } from '../../src/policy/bypass.js';
import { shapeOfListing } from '../../src/policy/enforcer.js';

/**
 * nft commands for an observer table `table` in a host namespace: two counters on the forward
 * hook at `priority`, for untracked and tracked packets that `match` selects (an nft match
 * expression, e.g. `meta nfproto ipv4`).
 */
export function observerScript(table: string, priority: number, match: string): string[] {
  return [
    `add table inet ${table}`,
    `add chain inet ${table} watch { type filter hook forward priority ${priority}; policy accept; }`,
    `add rule inet ${table} watch ${match} ct state untracked counter comment "untracked"`,
    `add rule inet ${table} watch ${match} ct state != untracked counter comment "tracked"`,
  ];
}

/**
 * `nft -j list table inet TABLE` in `netns`, undefined when absent. Synchronous (unlike
 * src/nft), so it can sit in waitFor's predicates.
 */
function listTable(netns: string, table: string, terse = false): unknown[] | undefined {
  const r = spawnSync('nsenter', [`--net=/run/netns/${netns}`, '--', 'nft', '-j', ...(terse ? ['-t'] : []), 'list', 'table', 'inet', table], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) {
    if (/No such file or directory|does not exist/i.test(r.stderr)) return undefined;
    throw new Error(`nft list table inet ${table} in ${netns}: ${r.stderr.trim()}`);
  }
  return (JSON.parse(r.stdout) as { nftables?: unknown[] }).nftables ?? [];
}

/** Forwarded packets the observer table `table` in `netns` counted so far. */
export function observedCounts(netns: string, table: string): { untracked: number; tracked: number } {
  const items = listTable(netns, table) ?? [];
  const out = { untracked: 0, tracked: 0 };
  for (const item of items as { rule?: { comment?: string; expr?: { counter?: { packets: number } }[] } }[]) {
    const c = item.rule?.expr?.find((e) => e.counter)?.counter?.packets ?? 0;
    if (item.rule?.comment === 'untracked') out.untracked += c;
    if (item.rule?.comment === 'tracked') out.tracked += c;
  }
  return out;
}

/** The bypass table's chains with their rule counts in `netns`, undefined when the table is absent. */
export function bypassChains(netns: string): Record<string, number> | undefined {
  const items = listTable(netns, BYPASS_TABLE, true);
  return items === undefined ? undefined : shapeOfListing(items).chains;
}

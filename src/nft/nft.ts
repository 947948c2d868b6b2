// A thin runner for the nft(8) tool. Weft's rules live only in weft's own tables, so a batch
// that creates a table or chain first ("add" is idempotent in nft) never disturbs anyone else's.
import { spawnSync } from 'node:child_process';
import { CniCode, WeftError } from '../errors.js';

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'bridge' | 'arp' | 'netdev';

export interface NftRule {
  family: NftFamily;
  table: string;
  chain: string;
  handle: number;
  comment?: string;
}

const NFT = process.env.WEFT_NFT ?? 'nft';

/** Applies an nft script atomically (nft -f runs a whole file as one transaction). */
export function nftApply(script: string): void {
  const r = spawnSync(NFT, ['-f', '-'], { input: script, encoding: 'utf8' });
  if (r.error) throw new WeftError(CniCode.IoFailure, `cannot run nft: ${r.error.message}`);
  if (r.status !== 0) {
    throw new WeftError(CniCode.IoFailure, `nft rejected the rules: ${r.stderr.trim()}`, script);
  }
}

/** `nft -j list …`; returns undefined when the object does not exist. */
export function nftListJson(args: string[]): unknown[] | undefined {
  const r = spawnSync(NFT, ['-j', 'list', ...args], { encoding: 'utf8' });
  if (r.error) throw new WeftError(CniCode.IoFailure, `cannot run nft: ${r.error.message}`);
  if (r.status !== 0) {
    if (/No such file or directory|does not exist/i.test(r.stderr)) return undefined;
    throw new WeftError(CniCode.IoFailure, `nft list ${args.join(' ')} failed: ${r.stderr.trim()}`);
  }
  const parsed = JSON.parse(r.stdout) as { nftables?: unknown[] };
  return parsed.nftables ?? [];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The rules of one table (all chains), with their handles and comments. */
export function nftListRules(family: NftFamily, table: string): NftRule[] {
  const items = nftListJson(['table', family, table]);
  if (!items) return [];
  const rules: NftRule[] = [];
  for (const item of items) {
    if (!isRecord(item) || !isRecord(item.rule)) continue;
    const r = item.rule;
    if (typeof r.chain !== 'string' || typeof r.handle !== 'number') continue;
    const rule: NftRule = { family, table, chain: r.chain, handle: r.handle };
    if (typeof r.comment === 'string') rule.comment = r.comment;
    rules.push(rule);
  }
  return rules;
}

export function nftTableExists(family: NftFamily, table: string): boolean {
  return nftListJson(['table', family, table]) !== undefined;
}

/** nft string literal for comments: printable ASCII only, quotes removed. */
export function nftQuote(s: string): string {
  return `"${s.replace(/[^\x20-\x7e]/g, '').replace(/["\\]/g, '')}"`;
}

/** Deletes every rule of the table whose comment satisfies the predicate, in one transaction. */
export function nftDeleteRulesWhere(family: NftFamily, table: string, pred: (comment: string) => boolean): number {
  const doomed = nftListRules(family, table).filter((r) => r.comment !== undefined && pred(r.comment));
  if (doomed.length === 0) return 0;
  nftApply(doomed.map((r) => `delete rule ${family} ${table} ${r.chain} handle ${r.handle}`).join('\n') + '\n');
  return doomed.length;
}

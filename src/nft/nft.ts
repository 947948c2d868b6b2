// A thin runner for the nft(8) tool. Weft's rules live only in weft's own tables, so a batch
// that creates a table or chain first ("add" is idempotent in nft) never disturbs anyone else's.
// nft acts on the network namespace it runs in: the caller's, or the named one in NftOptions
// (tests use that, so they never depend on which namespace the test process is in).
// Every call is asynchronous: weftd runs these on its event loop (traffic rules, policy passes,
// in-process CNI ADDs), and a synchronous nft held up every CNI request and /healthz meanwhile.
import { spawn } from 'node:child_process';
import { CniCode, WeftError } from '../errors.js';
import { netnsPath } from '../netns/netns.js';

export type NftFamily = 'ip' | 'ip6' | 'inet' | 'bridge' | 'arp' | 'netdev';

export interface NftRule {
  family: NftFamily;
  table: string;
  chain: string;
  handle: number;
  comment?: string;
}

export interface NftOptions {
  /** A named network namespace (/run/netns/NAME) to run nft in; default: the caller's. */
  readonly netns?: string;
  /** Listings only: leave out set elements (`nft -t`), for tables with big dynamic sets. */
  readonly terse?: boolean;
}

const NFT = process.env.WEFT_NFT ?? 'nft';

interface NftRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs nft (the script, if any, on stdin); rejects only when nft cannot be started. */
function runNft(args: readonly string[], opts: NftOptions, input?: string): Promise<NftRun> {
  const [cmd, argv] = opts.netns === undefined
    ? [NFT, args]
    : ['nsenter', [`--net=${netnsPath(opts.netns)}`, '--', NFT, ...args]];
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => out.push(c));
    p.stderr.on('data', (c: Buffer) => err.push(c));
    p.once('error', (e) => reject(new WeftError(CniCode.IoFailure, `cannot run nft: ${e.message}`)));
    p.once('close', (status) => resolve({ status, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
    // nft may exit before reading all of a script it rejects; its status says what went wrong.
    p.stdin.on('error', () => {});
    p.stdin.end(input ?? '');
  });
}

/** Applies an nft script atomically (nft -f runs a whole file as one transaction). */
export async function nftApply(script: string, opts: NftOptions = {}): Promise<void> {
  const r = await runNft(['-f', '-'], opts, script);
  if (r.status !== 0) {
    throw new WeftError(CniCode.IoFailure, `nft rejected the rules: ${r.stderr.trim()}`, script);
  }
}

/** `nft -j list …`; returns undefined when the object does not exist. */
export async function nftListJson(args: string[], opts: NftOptions = {}): Promise<unknown[] | undefined> {
  const r = await runNft(['-j', ...(opts.terse ? ['-t'] : []), 'list', ...args], opts);
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
export async function nftListRules(family: NftFamily, table: string, opts: NftOptions = {}): Promise<NftRule[]> {
  const items = await nftListJson(['table', family, table], opts);
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

export async function nftTableExists(family: NftFamily, table: string, opts: NftOptions = {}): Promise<boolean> {
  return (await nftListJson(['table', family, table], opts)) !== undefined;
}

/** nft string literal for comments: printable ASCII only, quotes removed. */
export function nftQuote(s: string): string {
  return `"${s.replace(/[^\x20-\x7e]/g, '').replace(/["\\]/g, '')}"`;
}

/** How often a delete batch is re-planned after someone else removed part of it. */
const DELETE_ATTEMPTS = 5;

/** nft's answer when a handle, chain or table named in a batch is no longer there. */
function isGoneError(err: unknown): boolean {
  return err instanceof WeftError && /No such file or directory|does not exist/i.test(err.message);
}

/**
 * Deletes every rule of the table whose comment satisfies the predicate, in one transaction, and
 * returns how many this call removed. Another process (a concurrent DEL or GC) may remove some of
 * the listed handles before the batch runs; nft then rejects the whole batch, so the rules are
 * listed again and only those still present are deleted (a bounded number of times).
 */
export async function nftDeleteRulesWhere(family: NftFamily, table: string, pred: (comment: string) => boolean, opts: NftOptions = {}): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const doomed = (await nftListRules(family, table, opts)).filter((r) => r.comment !== undefined && pred(r.comment));
    if (doomed.length === 0) return 0;
    try {
      await nftApply(doomed.map((r) => `delete rule ${family} ${table} ${r.chain} handle ${r.handle}`).join('\n') + '\n', opts);
      return doomed.length;
    } catch (err) {
      if (!isGoneError(err) || attempt >= DELETE_ATTEMPTS) throw err;
    }
  }
}

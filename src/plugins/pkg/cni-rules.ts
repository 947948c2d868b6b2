// nftables rules the CNI plugins own: source NAT for containers (ipMasq) and the MAC spoof
// check (macspoofchk). Every rule carries a comment naming its network and attachment, so DEL
// removes exactly its own rules and GC can find the ones a crash left behind.
import { createHash } from 'node:crypto';
import type { Cidr } from '../../net/ip.js';
import { formatCidr, formatIP, networkOf } from '../../net/ip.js';
import { nftApply, nftDeleteRulesWhere, nftListRules, nftQuote, nftTableExists, type NftOptions } from '../../nft/nft.js';

export const CNI_TABLE = 'weft-cni';

export interface Attachment {
  containerId: string;
  ifname: string;
}

function shortHash(s: string, len: number): string {
  return createHash('sha256').update(s).digest('hex').slice(0, len);
}

/** weft:<network hash>:<attachment hash> — fits nft's 128-byte comment limit for any input. */
export function ruleTag(network: string, a: Attachment): string {
  return `weft:${shortHash(network, 8)}:${shortHash(`${a.containerId}\0${a.ifname}`, 16)}`;
}

function networkPrefix(network: string): string {
  return `weft:${shortHash(network, 8)}:`;
}

const MASQ_CHAINS = `
add table inet ${CNI_TABLE}
add chain inet ${CNI_TABLE} postrouting { type nat hook postrouting priority srcnat; policy accept; }
`;

/**
 * Masquerades traffic from the container's addresses to anything outside its own subnet, outside
 * multicast and outside `exclude` (the whole cluster network when the weft plugin delegates: pods
 * on other hosts must see the pod's own address, or source-based policy could not work), like the
 * reference bridge plugin's ipMasq.
 */
export async function addMasquerade(network: string, a: Attachment, addresses: Cidr[], exclude: readonly Cidr[] = [], opts: NftOptions = {}): Promise<void> {
  const tag = nftQuote(ruleTag(network, a));
  const lines = [MASQ_CHAINS.trim()];
  for (const addr of addresses) {
    const v4 = addr.ip.family === 4;
    const keep = [networkOf(addr), ...exclude.filter((c) => c.ip.family === addr.ip.family).map(networkOf)];
    const sel = v4 ? 'ip' : 'ip6';
    const daddr = keep.map((c) => ` ${sel} daddr != ${formatCidr(c)}`).join('');
    const multicast = v4 ? '224.0.0.0/4' : 'ff00::/8';
    lines.push(`add rule inet ${CNI_TABLE} postrouting ${sel} saddr ${formatIP(addr.ip)}${daddr} ${sel} daddr != ${multicast} masquerade comment ${tag}`);
  }
  await nftApply(lines.join('\n') + '\n', opts);
}

/**
 * Drops frames entering the bridge from the container's host-side veth whose source MAC is
 * not the container's own.
 */
export async function addMacSpoofCheck(network: string, a: Attachment, hostIfname: string, mac: string, opts: NftOptions = {}): Promise<void> {
  const tag = nftQuote(ruleTag(network, a));
  await nftApply(`add table bridge ${CNI_TABLE}
add chain bridge ${CNI_TABLE} prerouting { type filter hook prerouting priority -300; policy accept; }
add rule bridge ${CNI_TABLE} prerouting iifname ${nftQuote(hostIfname)} ether saddr != ${mac.toLowerCase()} drop comment ${tag}
`, opts);
}

/** Removes every rule of this attachment (both tables). Absent tables or rules are fine. */
export async function removeAttachmentRules(network: string, a: Attachment, opts: NftOptions = {}): Promise<number> {
  const tag = ruleTag(network, a);
  let n = 0;
  for (const family of ['inet', 'bridge'] as const) {
    if (!(await nftTableExists(family, CNI_TABLE, opts))) continue;
    n += await nftDeleteRulesWhere(family, CNI_TABLE, (c) => c === tag, opts);
  }
  return n;
}

/** GC: removes this network's rules whose attachment is not in the valid list. */
export async function removeStaleRules(network: string, valid: Attachment[], opts: NftOptions = {}): Promise<number> {
  const prefix = networkPrefix(network);
  const keep = new Set(valid.map((a) => ruleTag(network, a)));
  let n = 0;
  for (const family of ['inet', 'bridge'] as const) {
    if (!(await nftTableExists(family, CNI_TABLE, opts))) continue;
    n += await nftDeleteRulesWhere(family, CNI_TABLE, (c) => c.startsWith(prefix) && !keep.has(c), opts);
  }
  return n;
}

/** The attachment tags present for a network (CHECK uses it to confirm rules exist). */
export async function attachmentRuleCount(
  network: string, a: Attachment, opts: NftOptions = {}, families: ReadonlyArray<'inet' | 'bridge'> = ['inet', 'bridge'],
): Promise<number> {
  const tag = ruleTag(network, a);
  let n = 0;
  for (const family of families) {
    n += (await nftListRules(family, CNI_TABLE, opts)).filter((r) => r.comment === tag).length;
  }
  return n;
}

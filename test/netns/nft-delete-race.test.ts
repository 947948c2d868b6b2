// Two removers of the same attachment's nftables rules (a DEL racing a GC, or a retried DEL):
// each lists the rules and deletes them by handle, and whichever batch runs second names handles
// that are already gone. Both must succeed and leave none of the rules behind. nft runs inside a
// throwaway namespace (NftOptions.netns), never in the test process's own.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { NetnsPool } from '../../src/netns/testing.js';
import { nftDeleteRulesWhere, nftListRules } from '../../src/nft/nft.js';
import { parseCidr, type Cidr } from '../../src/net/ip.js';
import { addMasquerade, CNI_TABLE, removeAttachmentRules, ruleTag, type Attachment } from '../../src/plugins/pkg/cni-rules.js';

const pool = new NetnsPool('wrv');
after(() => pool.cleanup());

const NETWORK = 'wrvnet';
const ATTACHMENT: Attachment = { containerId: 'race-0123456789', ifname: 'eth0' };
const RULES = 200;
const CNI_RULES_MODULE = fileURLToPath(new URL('../../src/plugins/pkg/cni-rules.js', import.meta.url));

function addresses(n: number): Cidr[] {
  return Array.from({ length: n }, (_, i) => parseCidr(`10.77.${i >> 8}.${(i & 0xff) + 0}/16`));
}

/** The attachment's rules as nft itself lists them in the namespace (the kernel's view). */
function ruleCount(ns: string): number {
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, '--', 'nft', '-j', 'list', 'table', 'inet', CNI_TABLE], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const items = (JSON.parse(r.stdout) as { nftables: Array<{ rule?: { comment?: string } }> }).nftables;
  return items.filter((i) => i.rule?.comment === ruleTag(NETWORK, ATTACHMENT)).length;
}

/** Deletes rules by handle with nft itself, synchronously (the predicate below cannot wait). */
function deleteHandles(ns: string, handles: number[]): void {
  const script = handles.map((h) => `delete rule inet ${CNI_TABLE} postrouting handle ${h}`).join('\n') + '\n';
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, '--', 'nft', '-f', '-'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** A child process that removes the attachment's rules in `ns` once the wall clock reaches `at`. */
function removerAt(ns: string, at: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `
    const { removeAttachmentRules } = await import(${JSON.stringify(CNI_RULES_MODULE)});
    while (Date.now() < ${at}) {}
    try {
      const n = await removeAttachmentRules(${JSON.stringify(NETWORK)}, ${JSON.stringify(ATTACHMENT)}, { netns: ${JSON.stringify(ns)} });
      process.stdout.write(String(n));
    } catch (err) {
      process.stderr.write(String(err && err.message));
      process.exit(5);
    }`;
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('nftDeleteRulesWhere against a concurrent remover', () => {
  it('deletes what is still there when part of its listed batch was removed in between', async () => {
    const ns = pool.make().name;
    await addMasquerade(NETWORK, ATTACHMENT, addresses(20), [], { netns: ns });
    assert.equal(ruleCount(ns), 20);
    const tag = ruleTag(NETWORK, ATTACHMENT);
    let interfered = false;
    // The predicate runs after the listing: the moment to play the other remover and delete
    // half of the handles this call is about to name.
    const listed = (await nftListRules('inet', CNI_TABLE, { netns: ns })).filter((r) => r.comment === tag);
    assert.ok(listed.every((r) => r.chain === 'postrouting'));
    const removed = await nftDeleteRulesWhere('inet', CNI_TABLE, (comment) => {
      if (!interfered) {
        interfered = true;
        deleteHandles(ns, listed.slice(0, 10).map((r) => r.handle));
      }
      return comment === tag;
    }, { netns: ns });
    assert.ok(interfered);
    assert.equal(removed, 10, 'only the rules still present are deleted by this call');
    assert.equal(ruleCount(ns), 0);
  });

  it('two processes removing the same attachment both succeed and leave no rule behind', async () => {
    const ns = pool.make().name;
    for (let round = 0; round < 3; round++) {
      await addMasquerade(NETWORK, ATTACHMENT, addresses(RULES), [], { netns: ns });
      assert.equal(ruleCount(ns), RULES);
      // Both start at the same instant (after their imports), so their listings overlap.
      const at = Date.now() + 1500;
      const [a, b] = await Promise.all([removerAt(ns, at), removerAt(ns, at)]);
      assert.equal(a.code, 0, `first remover failed: ${a.stderr}`);
      assert.equal(b.code, 0, `second remover failed: ${b.stderr}`);
      assert.equal(Number(a.stdout) + Number(b.stdout), RULES, 'every rule was deleted exactly once');
      assert.equal(ruleCount(ns), 0);
    }
    // Removing what is already gone is a no-op, not an error.
    assert.equal(await removeAttachmentRules(NETWORK, ATTACHMENT, { netns: ns }), 0);
  });
});

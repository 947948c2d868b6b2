// Verdict counters: where the compiler puts them and what it says they count, the deny-log prefix
// both sides share, reading them back from a listing, and totals that stay monotonic across the
// enforcer's table replaces and element updates (a fake nft whose listing is made from the last
// table applied, with counters the test sets).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseIP } from '../../src/net/ip.js';
import { type Endpoint, type PolicyWorld, parsePolicy } from '../../src/policy/model.js';
import { type CompiledPolicy, compilePolicies, DENY_LOG_LIMIT } from '../../src/policy/compile.js';
import { DENY_PREFIX_MAX, formatDenyPrefix, parseDenyPrefix } from '../../src/policy/deny-log.js';
import { VerdictCounters, readSources } from '../../src/policy/counters.js';
import { type NftRunner, PolicyEnforcer } from '../../src/policy/enforcer.js';

const ep = (namespace: string, pod: string, ip: string, labels: Record<string, string>, host = 'h1'): Endpoint =>
  ({ namespace, pod, labels, ips: [parseIP(ip)], host, ifname: 'eth0' });

const web = ep('prod', 'web', '10.0.0.1', { app: 'web' });
const web2 = ep('prod', 'web2', '10.0.0.3', { app: 'web' });
const db = ep('prod', 'db', '10.0.0.2', { app: 'db' }, 'h2');

const allowDb = parsePolicy({ metadata: { name: 'allow-db', namespace: 'prod' }, spec: {
  podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'db' } } }], ports: [{ protocol: 'TCP', port: 80 }] }],
} });
const denyAll = parsePolicy({ metadata: { name: 'deny-all', namespace: 'prod' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
const egress = parsePolicy({ metadata: { name: 'egress', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'web' } }, egress: [{}] } });

const world = (endpoints: Endpoint[], policies = [allowDb, denyAll]): PolicyWorld =>
  ({ endpoints, namespaces: [{ name: 'prod', labels: {} }], policies });

const chainOf = (c: CompiledPolicy, prefix: string) => [...c.chains.values()].find((ch) => ch.name.startsWith(prefix));

/** The rule's comment as nft lists it. */
const commentOf = (rule: string) => /comment "([^"]*)"$/.exec(rule)?.[1];

/**
 * An `nft -j list table` of `c` as the kernel would give it, every counter taken from `count`
 * (rule: `chain#index`, element: `set|address`), zero when it has none.
 */
function listing(c: CompiledPolicy, count: (id: string) => number): unknown[] {
  const items: unknown[] = [{ metainfo: {} }, { table: { name: 'weft-policy' } }];
  const ctr = (id: string) => ({ packets: count(id), bytes: count(id) * 100 });
  for (const s of c.sets.values()) {
    const elem = s.elements.map((e) => {
      const [key = '', value] = e.split(' : ');
      const head = { elem: { val: key, ...(s.counter && { counter: ctr(`${s.name}|${key}`) }) } };
      return s.kind === 'map' ? [head, { jump: { target: value?.replace('jump ', '') } }] : head;
    });
    items.push({ [s.kind]: { name: s.name, elem } });
  }
  for (const ch of c.chains.values()) {
    items.push({ chain: { name: ch.name } });
    ch.rules.forEach((r, i) => {
      const comment = commentOf(r);
      items.push({ rule: { chain: ch.name, ...(comment !== undefined && { comment }), expr: r.includes('counter') ? [{ counter: ctr(`${ch.name}#${i}`) }] : [] } });
    });
  }
  return items;
}

describe('deny-log prefix', () => {
  it('formats and parses back', () => {
    const p = formatDenyPrefix('ingress', ['prod/a', 'prod/b']);
    assert.equal(p, 'weft-deny:ingress:prod/a,prod/b');
    assert.deepEqual(parseDenyPrefix(p), { direction: 'ingress', policies: ['prod/a', 'prod/b'], omitted: 0 });
    assert.deepEqual(parseDenyPrefix(`${p} \0`), { direction: 'ingress', policies: ['prod/a', 'prod/b'], omitted: 0 }, 'trailing blanks and NULs');
  });

  it('cuts between whole names, says how many were left out, and stays within the kernel limit', () => {
    const names = Array.from({ length: 10 }, (_, i) => `namespace-${i}/policy-with-a-long-name-${i}`);
    const p = formatDenyPrefix('egress', names);
    assert.ok(p.length <= DENY_PREFIX_MAX, `${p.length} characters`);
    const parsed = parseDenyPrefix(p);
    assert.ok(parsed);
    assert.equal(parsed.policies.length + parsed.omitted, 10);
    assert.ok(parsed.policies.length >= 2);
    assert.deepEqual(parsed.policies, names.slice(0, parsed.policies.length));
    assert.match(p, /,\+\d+$/);
  });

  it('a name too long for any prefix is left out whole', () => {
    const long = `ns/${'a'.repeat(200)}`;
    assert.equal(formatDenyPrefix('ingress', [long]), 'weft-deny:ingress:+1');
    assert.deepEqual(parseDenyPrefix('weft-deny:ingress:+1'), { direction: 'ingress', policies: [], omitted: 1 });
    const p = formatDenyPrefix('ingress', ['ns/short', long]);
    assert.equal(p, 'weft-deny:ingress:ns/short,+1');
  });

  it('a list that fits exactly is not cut', () => {
    const head = 'weft-deny:ingress:'.length;
    const name = `n/${'b'.repeat(DENY_PREFIX_MAX - head - 2)}`;
    const p = formatDenyPrefix('ingress', [name]);
    assert.equal(p.length, DENY_PREFIX_MAX);
    assert.deepEqual(parseDenyPrefix(p)?.policies, [name]);
  });

  it('other prefixes are not ours', () => {
    for (const s of ['', 'weft-deny:sideways:a/b', 'IN=eth0 ', 'weft-deny:ingress:A/B', 'weft-deny:ingress:a']) assert.equal(parseDenyPrefix(s), undefined, s);
  });
});

describe('verdict counters in the compiled table', () => {
  it('every allowing rule counts for its policy; the default deny logs, then counts for every isolating policy and per endpoint', () => {
    const c = compilePolicies(world([web, db]), 'h1');
    const ing = chainOf(c, 'ing-');
    assert.ok(ing?.counters);
    assert.equal(ing.counters.length, ing.rules.length);
    const allow = ing.rules.findIndex((r) => r.includes('accept'));
    assert.match(ing.rules[allow] ?? '', /counter accept comment "prod\/allow-db ingress\[0\]"$/);
    assert.deepEqual(ing.counters[allow], { direction: 'ingress', verdict: 'allowed', policies: ['prod/allow-db'], comment: 'prod/allow-db ingress[0]' });
    const log = ing.rules.findIndex((r) => r.includes(' log '));
    assert.equal(ing.rules[log], `limit name "${DENY_LOG_LIMIT}" log prefix "weft-deny:ingress:prod/allow-db,prod/deny-all" group 7`);
    assert.equal(ing.counters[log], undefined, 'the log rule counts nothing');
    const drops = ing.rules.map((r, i) => [r, ing.counters?.[i]] as const).slice(log + 1);
    assert.deepEqual(drops.map(([r]) => r), [
      'ip daddr @ingress-deny-4 counter drop comment "ingress not allowed by prod/allow-db, prod/deny-all"',
      'counter drop comment "ingress not allowed by prod/allow-db, prod/deny-all"',
    ]);
    for (const [, m] of drops) assert.deepEqual(m?.policies, ['prod/allow-db', 'prod/deny-all']);
    assert.equal(c.sets.get('ingress-4')?.counter, true);
    assert.deepEqual(c.sets.get('ingress-deny-4')?.elements, ['10.0.0.1']);
    assert.deepEqual(c.layout.elementSets.get('ingress-deny-4'), { direction: 'ingress', counts: 'denied' });
    assert.deepEqual([...c.layout.isolating.get('ingress') ?? []], ['prod/allow-db', 'prod/deny-all']);
    assert.deepEqual([...c.layout.isolated.get('ingress') ?? []], ['prod/web']);
  });

  it('--flow-log-group 0 leaves the log rules and the limit out', () => {
    const c = compilePolicies(world([web, db]), 'h1', undefined, { logGroup: 0 });
    assert.ok([...c.chains.values()].every((ch) => ch.rules.every((r) => !r.includes(' log '))));
    assert.doesNotMatch(c.structure, /limit deny-log/);
    assert.match(compilePolicies(world([web, db]), 'h1', undefined, { logGroup: 42 }).structure, /group 42/);
  });

  it('a shared chain counts per policy in its rules and per endpoint in the elements', () => {
    const c = compilePolicies(world([web, web2, db]), 'h1');
    const ing = chainOf(c, 'ing-');
    assert.ok(ing);
    const count = (id: string) => {
      if (id === `${ing.name}#0`) return 5; // allowed by allow-db
      if (id === `${ing.name}#2`) return 3; // ip daddr @ingress-deny-4 … drop
      if (id === 'ingress-4|10.0.0.1') return 6;
      if (id === 'ingress-deny-4|10.0.0.1') return 1;
      if (id === 'ingress-4|10.0.0.3') return 2;
      if (id === 'ingress-deny-4|10.0.0.3') return 2;
      return 0;
    };
    const v = new VerdictCounters();
    v.observe(readSources(listing(c, count), c.layout));
    const t = v.totals(c.layout);
    const pol = (p: string, verdict: string) => t.policies.find((x) => x.policy === p && x.verdict === verdict && x.direction === 'ingress');
    assert.equal(pol('prod/allow-db', 'allowed')?.packets, 5);
    assert.equal(pol('prod/allow-db', 'denied')?.packets, 3);
    assert.equal(pol('prod/deny-all', 'allowed')?.packets, 0, 'deny-all has no rule that allows');
    assert.equal(pol('prod/deny-all', 'denied')?.packets, 3);
    assert.equal(pol('prod/deny-all', 'denied')?.bytes, 300);
    const end = (pod: string, verdict: string) => t.endpoints.find((x) => x.pod === pod && x.verdict === verdict && x.direction === 'ingress')?.packets;
    assert.equal(end('web', 'allowed'), 5);
    assert.equal(end('web', 'denied'), 1);
    assert.equal(end('web2', 'allowed'), 0);
    assert.equal(end('web2', 'denied'), 2);
  });

  it('a listing rule whose comment is not the expected one is not read', () => {
    const c = compilePolicies(world([web, db]), 'h1');
    const items = listing(c, () => 7).map((it) => {
      const r = (it as { rule?: { comment?: string } }).rule;
      return r?.comment?.startsWith('prod/allow-db') ? { rule: { ...r, comment: 'someone else' } } : it;
    });
    const v = new VerdictCounters();
    v.observe(readSources(items, c.layout));
    assert.equal(v.totals(c.layout).policies.find((x) => x.policy === 'prod/allow-db' && x.verdict === 'allowed')?.packets, 0);
  });
});

/** A fake nft: applies nothing, lists the last compiled table with the test's counters. */
class FakeNft implements NftRunner {
  table: CompiledPolicy | undefined;
  /** A kernel without nfnetlink_log: it refuses `log group`. */
  noLog = false;
  counts = new Map<string, number>();
  scripts: string[] = [];
  lists = 0;
  apply(script: string): Promise<void> {
    if (this.noLog && / log prefix /.test(script)) return Promise.reject(new Error('nft rejected the rules: Could not process rule: No such file or directory'));
    this.scripts.push(script);
    // A whole-table replace: the kernel's counters start from zero.
    if (script.includes('delete table')) this.counts.clear();
    return Promise.resolve();
  }
  listTable(): Promise<unknown[] | undefined> {
    this.lists++;
    const t = this.table;
    return Promise.resolve(t ? listing(t, (id) => this.counts.get(id) ?? 0) : undefined);
  }
  bridgeNetfilter(): boolean | undefined { return true; }
}

describe('verdict counters across table changes', () => {
  it('stay monotonic when a replace zeroes the kernel counters, and when an endpoint moves to another chain', async () => {
    const nft = new FakeNft();
    const enf = new PolicyEnforcer({ host: 'h1', nft });
    const apply = async (w: PolicyWorld) => {
      const r = await enf.update(w);
      nft.table = enf.applied;
      return r;
    };
    assert.equal((await apply(world([web, db]))).type, 'replaced');
    const c1 = enf.applied!;
    const ing1 = chainOf(c1, 'ing-')!.name;
    nft.counts.set(`${ing1}#0`, 4).set(`${ing1}#2`, 9).set('ingress-4|10.0.0.1', 13).set('ingress-deny-4|10.0.0.1', 9);
    const denied = async (p: string) => (await enf.readCounters()).policies.find((x) => x.policy === p && x.verdict === 'denied' && x.direction === 'ingress')?.packets;
    const webCount = async (verdict: string) => (await enf.readCounters()).endpoints.find((x) => x.pod === 'web' && x.verdict === verdict && x.direction === 'ingress')?.packets;
    assert.equal(await denied('prod/deny-all'), 9, 'someone reads the counters: from now on changes read them first');
    // The counts rise without anyone reading them; then a policy change rewrites every chain.
    const listsBefore = nft.lists;
    nft.counts.set(`${ing1}#2`, 11).set('ingress-deny-4|10.0.0.1', 11).set('ingress-4|10.0.0.1', 15);
    assert.equal((await apply(world([web, db], [allowDb, denyAll, egress]))).type, 'replaced');
    assert.equal(nft.lists, listsBefore + 1, 'read once, right before the replace');
    assert.equal(await denied('prod/deny-all'), 11);
    assert.equal(await webCount('denied'), 11);
    assert.equal(await webCount('allowed'), 4);
    const ing2 = chainOf(enf.applied!, 'ing-')!.name;
    nft.counts.set(`${ing2}#2`, 1).set('ingress-deny-4|10.0.0.1', 1).set('ingress-4|10.0.0.1', 1);
    assert.equal(await denied('prod/deny-all'), 12);
    assert.equal(await webCount('denied'), 12);

    // A new pod with the same policies: element updates, no reading needed.
    const lists = nft.lists;
    assert.equal((await apply(world([web, web2, db], [allowDb, denyAll, egress]))).type, 'elements');
    assert.equal(nft.lists, lists, 'adding a pod reads nothing');
    assert.doesNotMatch(nft.scripts.at(-1) ?? '', /delete/);

    // web loses its label app=web: a different chain (deny-all only), its map element is
    // replaced and starts from zero; what it had counted stays.
    const webPlain = { ...web, labels: {} };
    const r = await apply(world([webPlain, web2, db], [allowDb, denyAll, egress]));
    assert.equal(r.type, 'replaced', 'a chain only web uses now: new structure');
    assert.equal(await webCount('denied'), 12);
    assert.equal(await webCount('allowed'), 4);

    // The policy goes: its series go with it; the pod's stay while it isolates it.
    await apply(world([webPlain, web2, db], [denyAll]));
    const after = await enf.readCounters();
    assert.equal(after.policies.some((x) => x.policy === 'prod/allow-db'), false);
    assert.equal(after.policies.find((x) => x.policy === 'prod/deny-all' && x.verdict === 'denied')?.packets, 12);
    // No policy at all: the table and every series go.
    await enf.remove();
    nft.table = undefined;
    assert.deepEqual((await enf.readCounters()).policies, []);
  });

  it('an element update that moves a staying endpoint to another chain reads the counters first', async () => {
    const nft = new FakeNft();
    const enf = new PolicyEnforcer({ host: 'h1', nft });
    const other = parsePolicy({ metadata: { name: 'other', namespace: 'prod' }, spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{}] } });
    const dbLocal = ep('prod', 'db', '10.0.0.2', { app: 'db' });
    const w = (a: Endpoint, b: Endpoint) => world([a, b], [allowDb, other]);
    await enf.update(w(web, dbLocal));
    nft.table = enf.applied;
    await enf.readCounters();
    nft.counts.set('ingress-4|10.0.0.1', 3);
    // web and db swap labels: both chains stay (each still used), both elements move.
    const lists = nft.lists;
    const r = await enf.update(w({ ...web, labels: { app: 'db' } }, { ...dbLocal, labels: { app: 'web' } }));
    nft.table = enf.applied;
    assert.equal(r.type, 'elements');
    assert.equal(nft.lists, lists + 1);
    nft.counts.delete('ingress-4|10.0.0.1'); // the element was deleted and added anew
    const t = await enf.readCounters();
    assert.equal(t.endpoints.find((x) => x.pod === 'web' && x.verdict === 'allowed')?.packets, 3);
  });

  it('a kernel that refuses log rules still gets the policies, without the log, from then on', async () => {
    const nft = new FakeNft();
    nft.noLog = true;
    const enf = new PolicyEnforcer({ host: 'h1', nft });
    assert.equal((await enf.update(world([web, db]))).type, 'replaced');
    assert.equal(enf.applied?.logGroup, 0);
    assert.doesNotMatch(nft.scripts.at(-1) ?? '', / log /);
    assert.match(nft.scripts.at(-1) ?? '', /ip daddr @ingress-deny-4 counter drop/);
    assert.equal((await enf.update(world([web, db], [allowDb, denyAll, egress]))).type, 'replaced');
    assert.equal(nft.scripts.length, 2, 'later tables come without log rules at once');
  });

  it('before anyone asks, a replace reads nothing; the repair pass takes a reading from its listing', async () => {
    const nft = new FakeNft();
    const enf = new PolicyEnforcer({ host: 'h1', nft });
    await enf.update(world([web, db]));
    nft.table = enf.applied;
    nft.counts.set('ingress-deny-4|10.0.0.1', 5);
    assert.equal((await enf.repair()).type, 'ok');
    nft.counts.set('ingress-deny-4|10.0.0.1', 7);
    const lists = nft.lists;
    assert.equal((await enf.update(world([web, db], [allowDb, denyAll, egress]))).type, 'replaced');
    nft.table = enf.applied;
    assert.equal(nft.lists, lists, 'no listing before the replace');
    const t = await enf.readCounters();
    assert.equal(t.endpoints.find((x) => x.pod === 'web' && x.verdict === 'denied' && x.direction === 'ingress')?.packets, 5, 'what the repair pass saw is kept; the 2 after it are missed');
  });
});

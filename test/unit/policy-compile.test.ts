// The compiler's nft output for a small world (golden), sharing of chains and sets, and what
// counts as a structural change versus an element update.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseIP } from '../../src/net/ip.js';
import { type Endpoint, type PolicyWorld, parsePolicy } from '../../src/policy/model.js';
import { compilePolicies, diffElements, expectedShape, renderReplace } from '../../src/policy/compile.js';
import { shapeOfListing } from '../../src/policy/enforcer.js';

const ep = (namespace: string, pod: string, ip: string, labels: Record<string, string>, host = 'h1', namedPorts?: Endpoint['namedPorts']): Endpoint =>
  ({ namespace, pod, labels, ips: [parseIP(ip)], host, ifname: 'eth0', ...(namedPorts ? { namedPorts } : {}) });

const web = ep('prod', 'web', '10.0.0.1', { app: 'web' }, 'h1', { http: { port: 8080, protocol: 'TCP' } });
const web2 = ep('prod', 'web2', '10.0.0.3', { app: 'web' }, 'h1', { http: { port: 8080, protocol: 'TCP' } });
const db = ep('prod', 'db', '10.0.0.2', { app: 'db' }, 'h2');
const client = ep('dev', 'client', '10.0.1.1', { app: 'client' }, 'h2');

const policies = [
  parsePolicy({ metadata: { name: 'web', namespace: 'prod' }, spec: {
    podSelector: { matchLabels: { app: 'web' } },
    ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }, { ipBlock: { cidr: '198.18.0.0/16', except: ['198.18.1.0/24'] } }], ports: [{ port: 'http' }, { protocol: 'UDP', port: 5000, endPort: 5010 }] }],
    egress: [{ to: [{ podSelector: { matchLabels: { app: 'db' } } }], ports: [{ port: 'http' }] }],
  } }),
];

const world = (endpoints: Endpoint[], p = policies, envDev = 'dev'): PolicyWorld =>
  ({ endpoints, namespaces: [{ name: 'dev', labels: { env: envDev } }, { name: 'prod', labels: { env: 'prod' } }], policies: p });

const GOLDEN = `add table inet weft-policy
delete table inet weft-policy
table inet weft-policy {
	limit deny-log {
		comment "log rate of denied packets, all chains together"
		rate 100/second burst 20 packets
	}
	map egress-4 {
		type ipv4_addr : verdict
		counter
		comment "egress chain by local endpoint address"
		elements = { 10.0.0.1 : jump egr-0b627a046681 }
	}
	set egress-deny-4 {
		type ipv4_addr
		counter
		comment "local endpoints isolated for egress: packets denied"
		elements = { 10.0.0.1 }
	}
	map ingress-4 {
		type ipv4_addr : verdict
		counter
		comment "ingress chain by local endpoint address"
		elements = { 10.0.0.1 : jump ing-afb03061ea3e }
	}
	set ingress-deny-4 {
		type ipv4_addr
		counter
		comment "local endpoints isolated for ingress: packets denied"
		elements = { 10.0.0.1 }
	}
	set np-http-4 {
		type ipv4_addr . inet_proto . inet_service
		comment "named port http"
		elements = { 10.0.0.1 . tcp . 8080 }
	}
	set pods-7b4a9883d5-4 {
		type ipv4_addr
		comment "pods app=db in namespace prod"
		elements = { 10.0.0.2 }
	}
	set pods-9e57d5928f-4 {
		type ipv4_addr
		comment "pods all in namespaces env=dev"
		elements = { 10.0.1.1 }
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		ct state invalid drop
		ip saddr vmap @egress-4
		ip daddr vmap @ingress-4
	}
	chain egr-0b627a046681 {
		ip daddr @pods-7b4a9883d5-4 meta l4proto tcp ip daddr . meta l4proto . th dport @np-http-4 counter return comment "prod/web egress[0]"
		limit name "deny-log" log prefix "weft-deny:egress:prod/web" group 7
		ip saddr @egress-deny-4 counter drop comment "egress not allowed by prod/web"
		counter drop comment "egress not allowed by prod/web"
	}
	chain ing-afb03061ea3e {
		ip saddr @pods-9e57d5928f-4 meta l4proto tcp th dport 8080 counter accept comment "prod/web ingress[0]"
		ip saddr @pods-9e57d5928f-4 meta l4proto udp th dport 5000-5010 counter accept comment "prod/web ingress[0]"
		ip saddr 198.18.0.0/16 ip saddr != { 198.18.1.0/24 } meta l4proto tcp th dport 8080 counter accept comment "prod/web ingress[0]"
		ip saddr 198.18.0.0/16 ip saddr != { 198.18.1.0/24 } meta l4proto udp th dport 5000-5010 counter accept comment "prod/web ingress[0]"
		limit name "deny-log" log prefix "weft-deny:ingress:prod/web" group 7
		ip daddr @ingress-deny-4 counter drop comment "ingress not allowed by prod/web"
		counter drop comment "ingress not allowed by prod/web"
	}
}
`;

describe('policy compiler', () => {
  it('golden output for one selected local pod (remote pods only fill sets)', () => {
    const out = renderReplace(compilePolicies(world([web, db, client]), 'h1'));
    if (out !== GOLDEN) process.stdout.write(out);
    assert.equal(out, GOLDEN);
  });

  it('the other host gets only its own chains: db and client are not selected there, so only the skeleton', () => {
    const c = compilePolicies(world([web, db, client]), 'h2');
    assert.deepEqual([...c.chains.keys()], ['forward']);
    assert.deepEqual(c.sets.get('ingress-4')?.elements, []);
  });

  it('a second pod with the same policies shares the chain: adding it is an element update', () => {
    const before = compilePolicies(world([web, db, client]), 'h1');
    const after = compilePolicies(world([web, web2, db, client]), 'h1');
    assert.equal(after.structure, before.structure);
    const d = diffElements(before, after);
    assert.equal(d.removed, 0);
    assert.equal(d.added, 5, 'ingress and egress map, ingress and egress deny set, named-port set');
    assert.match(d.script, /add element inet weft-policy ingress-4 \{ 10\.0\.0\.3 : jump ing-afb03061ea3e \}/);
    assert.match(d.script, /add element inet weft-policy ingress-deny-4 \{ 10\.0\.0\.3 \}/);
    assert.match(d.script, /add element inet weft-policy np-http-4 \{ 10\.0\.0\.3 \. tcp \. 8080 \}/);
  });

  it('namespace relabel and pod removal are element updates; map elements are deleted by key', () => {
    const before = compilePolicies(world([web, web2, db, client]), 'h1');
    const relabel = compilePolicies(world([web, web2, db, client], policies, 'staging'), 'h1');
    assert.equal(relabel.structure, before.structure);
    assert.equal(diffElements(before, relabel).script, 'delete element inet weft-policy pods-9e57d5928f-4 { 10.0.1.1 }\n');
    const gone = compilePolicies(world([web, db, client]), 'h1');
    assert.match(diffElements(before, gone).script, /delete element inet weft-policy ingress-4 \{ 10\.0\.0\.3 \}/);
  });

  it('a policy change is structural', () => {
    const before = compilePolicies(world([web, db, client]), 'h1');
    const p2 = [parsePolicy({ metadata: { name: 'deny', namespace: 'prod' }, spec: { podSelector: {} } })];
    assert.notEqual(compilePolicies(world([web, db, client], p2), 'h1').structure, before.structure);
  });

  it('dual-stack endpoints get ip6 sets, maps and rules', () => {
    const v6 = { ...web, ips: [parseIP('10.0.0.1'), parseIP('fd00::1')] };
    const c = compilePolicies(world([v6, db, client]), 'h1');
    assert.deepEqual(c.sets.get('ingress-6')?.elements.length, 1);
    assert.ok(c.chains.get('forward')?.rules.includes('ip6 daddr vmap @ingress-6'));
  });

  it('the shape read back from nft -j matches the expected shape', () => {
    const c = compilePolicies(world([web, db, client]), 'h1');
    const listing: unknown[] = [{ metainfo: {} }, { table: { name: 'weft-policy' } }];
    for (const s of c.sets.values()) listing.push({ [s.kind]: { name: s.name, ...(s.elements.length > 0 ? { elem: s.elements } : {}) } });
    for (const ch of c.chains.values()) {
      listing.push({ chain: { name: ch.name } });
      for (const r of ch.rules) listing.push({ rule: { chain: ch.name, expr: [r] } });
    }
    assert.deepEqual(shapeOfListing(listing), expectedShape(c));
  });
});

// A configured external BGP peer announcing the hosts' own underlay subnet, the default route
// and one host's address (issue 16, item 1), against weftd's bgp backend on 3 hosts and the
// real kernel:
//   h0 198.18.0.1, h1 .2, h2 .3 (AS 64512, full-mesh iBGP)  ⇄  BIRD 198.18.0.254 (AS 65000)
// BIRD peers with h0 only, so h1 and h2 can hear its routes only through h0 over iBGP. BIRD
// announces 198.18.0.0/24 (the underlay), 0.0.0.0/0, 198.18.0.2/32 (h1: the iBGP session's own
// destination) and 10.99.1.0/24, which ImportPrefixes allows. h2 has its own static route to
// 10.99.1.0/24. Checked against the kernel (ip -json): every connected, default and static route
// stays as it was and nothing proto 88 appears for them, the iBGP sessions stay up, h0 refuses
// and counts (metric) and logs once, h1/h2 never hear the refused prefixes, and closing BIRD's
// session deletes nothing but the one route it gave.
// Namespaces are weftbh-<id>-…; everything is removed in after(), also after a failure.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Bird } from '../../src/lab/racks.js';
import { Topology } from '../../src/lab/topology.js';
import { formatCidr, formatIP } from '../../src/net/ip.js';
import { ipJson } from '../../src/netns/testing.js';
import {
  WEFTCTL, inNs, leasedSubnet, metricsText, readyz, setConfig, startWeftd, stopAll, tempDir, waitFor, waitReady, type Weftd,
} from './agent-harness.js';

const BIRD_AS = 65000;
const UNDERLAY = '198.18.0.0/24';
const H1_ADDRESS = '198.18.0.2/32';
const ALLOWED = '10.99.1.0/24';

interface RouteJson { dst: string; gateway?: string; dev?: string; protocol?: string | number; scope?: string; prefsrc?: string; metric?: number; flags?: string[] }
interface SessionJson { peer: string; state: string; prefixesReceived: number; prefixesRejected?: number; updatesReceived: number; origin: string }

const isBgp = (r: RouteJson): boolean => String(r.protocol) === '88';

function birdConfig(h0: string): string {
  return `router id 198.18.0.254;
protocol device { scan time 5; }
protocol static hijack {
  ipv4;
  route ${UNDERLAY} blackhole;
  route 0.0.0.0/0 blackhole;
  route ${H1_ADDRESS} blackhole;
  route ${ALLOWED} blackhole;
}
protocol bgp h0 {
  local 198.18.0.254 as ${BIRD_AS};
  neighbor ${h0} as 64512;
  hold time 9;
  connect retry time 1;
  error wait time 1, 3;
  ipv4 { import all; export where proto = "hijack"; next hop self; };
}
`;
}

describe('bgp: an external peer announcing the underlay, the default route and a host address takes nothing', { timeout: 170_000 }, () => {
  let topo: Topology | undefined;
  let bird: Bird | undefined;
  let tmp: { path: string; remove(): void } | undefined;
  const agents: Weftd[] = [];
  const subnets: string[] = [];
  /** Per host: the routes another protocol owns that must come through untouched, as `ip -json` shows them. */
  const protectedRoutes: RouteJson[][] = [];
  let storeArgs: string[] = [];
  const subnetFile = (i: number): string => join(tmp!.path, `h${i}`, 'subnet.env');
  const ns = (i: number): string => topo!.host(i).ns;
  const agent = (i: number): Weftd => { const a = agents[i]; assert.ok(a); return a; };
  const mainTable = (i: number): RouteJson[] => ipJson<RouteJson[]>(ns(i), ['route', 'show', 'table', 'main']);
  const bgpRoutes = (i: number): RouteJson[] => mainTable(i).filter(isBgp);
  const status = (i: number): { sessions: SessionJson[] } | undefined => {
    const r = inNs(ns(i), [WEFTCTL, 'bgp', 'status', '--json', '--addr', `127.0.0.1:${agent(i).healthPort}`], 10_000);
    return r.stdout ? JSON.parse(r.stdout) as { sessions: SessionJson[] } : undefined;
  };
  const session = (i: number, peer: string): SessionJson | undefined => status(i)?.sessions.find((s) => s.peer === peer);
  const log = (i: number): string => agent(i).stderr.join('');
  const refusals = (i: number): string[] => log(i).split('\n').filter((l) => l.includes('refused by the import policy'));
  const birdIP = (): string => formatIP(topo!.outsideIP);

  /** Every route that was there before weftd started, unchanged; no proto-88 route at those destinations. */
  function assertUntouched(when: string): void {
    for (let i = 0; i < 3; i++) {
      const now = mainTable(i);
      for (const want of protectedRoutes[i] ?? []) {
        const at = now.filter((r) => r.dst === want.dst);
        assert.deepEqual(at, [want], `${when}: h${i} ${want.dst}: ${JSON.stringify(at)}`);
      }
      const bad = now.filter((r) => isBgp(r) && [UNDERLAY, 'default', '198.18.0.2'].includes(r.dst));
      assert.deepEqual(bad, [], `${when}: h${i} has proto-88 routes for the hijacked prefixes`);
    }
  }

  async function assertMeshUp(when: string): Promise<void> {
    await waitFor(`${when}: iBGP sessions Established on every host`, () => [0, 1, 2].every((i) => {
      const nodes = status(i)?.sessions.filter((s) => s.origin === 'node') ?? [];
      return nodes.length === 2 && nodes.every((s) => s.state === 'Established');
    }), 20_000, 300);
    for (const [from, to] of [[1, '198.18.0.1'], [2, '198.18.0.2'], [0, '198.18.0.3']] as const) {
      const r = inNs(ns(from), ['ping', '-c', '1', '-W', '2', to]);
      assert.equal(r.code, 0, `${when}: h${from} → ${to} over the underlay: ${r.stdout}${r.stderr}`);
    }
  }

  before(async () => {
    topo = Topology.create({ prefix: 'weftbh', hosts: 3 });
    tmp = tempDir('weftbh');
    // h2's operator routes 10.99.1.0/24 itself; BGP must not take that over.
    assert.equal(inNs(ns(2), ['ip', 'route', 'add', ALLOWED, 'via', '198.18.0.254', 'proto', 'static']).code, 0);
    for (let i = 0; i < 3; i++) {
      protectedRoutes[i] = mainTable(i).filter((r) => [UNDERLAY, 'default', ALLOWED].includes(r.dst));
    }
    assert.deepEqual(protectedRoutes.map((rs) => rs.length), [2, 2, 3], JSON.stringify(protectedRoutes));
    bird = await Bird.start(topo.outside, join(tmp.path, 'bird'), birdConfig(formatIP(topo.host(0).ip)));
    storeArgs = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
    setConfig(ns(0), storeArgs, {
      Network: '10.244.0.0/16', SubnetLen: 24,
      Backend: { Type: 'bgp', Peers: [{ Address: birdIP(), ASN: BIRD_AS }], HoldTime: 9, GracefulRestartTime: 60, ImportPrefixes: ['10.99.0.0/16'] },
    });
    for (let i = 0; i < 3; i++) agents[i] = startWeftd(ns(i), ['--iface', 'eth0', '--node-name', `h${i}`, ...storeArgs], subnetFile(i));
    for (let i = 0; i < 3; i++) {
      await waitReady(agent(i), 30_000);
      subnets[i] = formatCidr(leasedSubnet(subnetFile(i)).subnet);
    }
  });

  after(async () => {
    // Each step on its own: one failure must not leave processes or namespaces behind.
    await stopAll().catch(() => {});
    await bird?.stop().catch(() => {});
    try { topo?.destroy(); } catch { /* reported by the next run's leftovers if it mattered */ }
    tmp?.remove();
  });

  it('h0 refuses the three, takes the allowed one, and passes on only that', async () => {
    await waitFor('BIRD Established with h0', () => /Established/.test(bird!.sessions().get('h0') ?? ''), 30_000);
    await waitFor('h0 received all four of BIRD\'s prefixes', () => session(0, birdIP())?.prefixesReceived === 4, 20_000, 300);
    assert.equal(session(0, birdIP())?.prefixesRejected, 3);
    await waitFor(`h1 learned ${ALLOWED} through h0`, () => bgpRoutes(1).some((r) => r.dst === ALLOWED && r.gateway === birdIP()), 20_000);
    await waitFor(`h0 installed ${ALLOWED}`, () => bgpRoutes(0).some((r) => r.dst === ALLOWED && r.gateway === birdIP()), 10_000);
    assertUntouched('with the session up');
    await assertMeshUp('with the session up');
    // Only the pod subnets and the allowed prefix are BGP routes anywhere.
    for (let i = 0; i < 3; i++) {
      const want = new Set([...subnets.filter((_, j) => j !== i), ...(i === 2 ? [] : [ALLOWED])]);
      await waitFor(`h${i} BGP routes are exactly ${[...want].join(', ')}`, () => {
        const have = bgpRoutes(i).map((r) => r.dst);
        return have.length === want.size && have.every((d) => want.has(d));
      }, 15_000);
    }
    // h1 and h2 heard from h0 its own subnet and the allowed prefix: nothing it refused.
    for (const i of [1, 2]) {
      const fromH0 = session(i, '198.18.0.1');
      assert.equal(fromH0?.prefixesReceived, 2, `h${i} from h0: ${JSON.stringify(fromH0)}`);
      assert.equal(fromH0?.prefixesRejected, 0);
    }
    // h2 keeps its static route and says why the learned one is not installed.
    await waitFor('h2 reports the destination held by its static route', () =>
      (readyz(agent(2)).body?.problems ?? []).some((p) => p.includes(ALLOWED) && p.includes('held by another route') && p.includes('static')), 15_000);
    assert.ok(log(2).includes('another route holds the destination'), 'h2 logged the conflict');
  });

  it('the refusals are counted per peer and per reason, and logged once each', async () => {
    const metrics = metricsText(agent(0));
    assert.match(metrics, /weft_bgp_prefixes_rejected\{peer="198\.18\.0\.254",asn="65000"\} 3/);
    assert.match(metrics, /weft_bgp_import_rejections_total\{reason="overlaps-connected-subnet"\} 3/);
    const lines = refusals(0);
    for (const p of [UNDERLAY, '0.0.0.0/0', H1_ADDRESS]) {
      assert.equal(lines.filter((l) => l.includes(`"prefix":"${p}"`)).length, 1, `${p} logged once: ${lines.join('\n')}`);
    }
    assert.equal(lines.length, 3);
    // BIRD sends its table again: the same refusals, no new log lines, nothing else changes.
    const before = session(0, birdIP())?.updatesReceived ?? 0;
    bird!.birdc('reload', 'out', 'h0');
    await waitFor('h0 received BIRD\'s table again', () => (session(0, birdIP())?.updatesReceived ?? 0) > before, 15_000, 300);
    await waitFor('h0 still refuses exactly three', () => session(0, birdIP())?.prefixesRejected === 3, 10_000, 300);
    assert.equal(refusals(0).length, 3);
    assert.match(metricsText(agent(0)), /weft_bgp_import_rejections_total\{reason="overlaps-connected-subnet"\} 3/);
    assertUntouched('after BIRD resent its table');
  });

  it('closing BIRD\'s session removes only the route it gave; the hosts keep their own routes and sessions', async () => {
    bird!.birdc('disable', 'h0');
    await waitFor('h0 sees the session go', () => session(0, birdIP())?.state !== 'Established', 20_000, 300);
    for (const i of [0, 1]) {
      await waitFor(`h${i} dropped ${ALLOWED}`, () => !bgpRoutes(i).some((r) => r.dst === ALLOWED), 15_000);
    }
    assertUntouched('after the session closed');
    await assertMeshUp('after the session closed');
    for (let i = 0; i < 3; i++) {
      const left = bgpRoutes(i).map((r) => r.dst).sort();
      assert.deepEqual(left, subnets.filter((_, j) => j !== i).sort(), `h${i} keeps the other hosts' subnets`);
    }
  });
});

// The conntrack bypass the policy enforcer keeps while no policy table exists, on the real kernel.
// One host namespace with a bridge and two pods (bridged traffic reaches the IP hooks through
// br_netfilter), a host port DNAT'd to pod b and masqueraded behind the bridge address (what the
// reference portmap does for hairpin), and an observer table in the host namespace that counts
// forwarded packets by conntrack state: the kernel's own view of whether pod-to-pod traffic was
// tracked. The enforcer's nft runner is wrapped to record each transaction it sends. DNAT towards
// pods (ClusterIPs, hostPorts without masquerade) is in policy-bypass-dnat.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { NetnsPool, ipIn } from '../../src/netns/testing.js';
import { runInNetns } from '../../src/netns/netns.js';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { nftApply } from '../../src/nft/nft.js';
import { type NetworkPolicy, type PolicyWorld, parsePolicy } from '../../src/policy/model.js';
import { BYPASS_TABLE, type NftRunner, PolicyEnforcer, netnsNft } from '../../src/policy/enforcer.js';
import { bypassShape } from '../../src/policy/bypass.js';
import { POLICY_TABLE } from '../../src/policy/compile.js';
import { bypassChains as bypassChainsIn, observedCounts, observerScript } from './conntrack-observer.js';

const PROBE = fileURLToPath(new URL('./policy-probe.js', import.meta.url));
const pool = new NetnsPool('wnt');
const children: ChildProcess[] = [];
const childEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
};

const CLUSTER = '10.78.0.0/16';
const HOST_PORT_IP = '198.18.9.1';
let host = '';
const pods: { name: string; ip: string; netns: string }[] = [];

function startServer(netns: string): Promise<void> {
  const p = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'serve', '8080,9090', ''], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(`server in ${netns}: ${l}`))));
    p.once('exit', (code) => reject(new Error(`server in ${netns} exited ${code}`)));
  });
}

function probeFrom(netns: string, targets: { ip: string; proto: 'tcp'; port: number }[]): Promise<boolean[]> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'probe', JSON.stringify(targets)], { env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.once('exit', () => {
      try { resolve((JSON.parse(out) as { ok: boolean }[]).map((r) => r.ok)); } catch (err) { reject(err); }
    });
  });
}

/** Forwarded packets the observer counted as untracked and as tracked so far. */
const counted = () => observedCounts(host, 'wnt-observe');

const bypassChains = () => bypassChainsIn(host);

const tables = (): string[] => {
  const r = runInNetns(host, ['nft', '-j', 'list', 'tables']);
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { nftables: { table?: { name: string } }[] }).nftables.flatMap((i) => (i.table ? [i.table.name] : []));
};

const policy = (spec: Record<string, unknown>): NetworkPolicy =>
  parsePolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'b-8080-from-a', namespace: 'prod' }, spec });

const world = (policies: NetworkPolicy[]): PolicyWorld => ({
  namespaces: [{ name: 'prod', labels: {} }],
  policies,
  endpoints: pods.map((p) => ({ namespace: 'prod', pod: p.name, labels: { app: p.name }, ips: [parseIP(p.ip)], host: 'node-a', ifname: 'eth0' })),
});

describe('conntrack bypass while no policy applies', { timeout: 60_000 }, () => {
  let enforcer: PolicyEnforcer;
  const scripts: string[] = [];

  before(async () => {
    host = pool.make().name;
    ipIn(host, ['link', 'add', 'br0', 'type', 'bridge']);
    ipIn(host, ['addr', 'add', '10.78.0.1/24', 'dev', 'br0']);
    ipIn(host, ['link', 'set', 'br0', 'up']);
    ipIn(host, ['link', 'set', 'lo', 'up']);
    ipIn(host, ['addr', 'add', `${HOST_PORT_IP}/32`, 'dev', 'lo']);
    runInNetns(host, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    for (const [i, name] of ['a', 'b'].entries()) {
      const n = pool.make();
      const ip = `10.78.0.${10 + i}`;
      ipIn(host, ['link', 'add', `vp${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.name]);
      ipIn(host, ['link', 'set', `vp${i}`, 'master', 'br0', 'up']);
      ipIn(n.name, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      ipIn(n.name, ['link', 'set', 'eth0', 'up']);
      ipIn(n.name, ['link', 'set', 'lo', 'up']);
      ipIn(n.name, ['route', 'add', 'default', 'via', '10.78.0.1']);
      pods.push({ name, ip, netns: n.name });
    }
    const b = pods[1]!;
    // The shape of portmap's rules: host port DNAT'd to pod b, masqueraded behind the bridge
    // address so that b's replies come back through this host. Plus the observer.
    await nftApply([
      'add table ip wnt-hostport',
      'add chain ip wnt-hostport pre { type nat hook prerouting priority dstnat; policy accept; }',
      `add rule ip wnt-hostport pre ip daddr ${HOST_PORT_IP} tcp dport 8081 dnat to ${b.ip}:8080`,
      'add chain ip wnt-hostport post { type nat hook postrouting priority srcnat; policy accept; }',
      'add rule ip wnt-hostport post ct status dnat masquerade',
      ...observerScript('wnt-observe', -10, 'meta nfproto ipv4'),
    ].join('\n') + '\n', { netns: host });
    await Promise.all(pods.map((p) => startServer(p.netns)));
    const inner = netnsNft(host);
    const recording: NftRunner = { ...inner, apply: async (s) => { scripts.push(s); await inner.apply(s); } };
    enforcer = new PolicyEnforcer({ host: 'node-a', nft: recording, conntrackBypass: [parseCidr(CLUSTER)] });
  });

  after(() => {
    for (const c of children) if (c.pid !== undefined && c.exitCode === null) c.kill('SIGKILL');
    pool.cleanup();
  });

  it('no policy: the bypass table is in place and pod-to-pod traffic is forwarded untracked', async () => {
    await enforcer.remove();
    // A new table: its learning half first, then (after reading conntrack for the seed) the
    // transaction that removes the policy table and turns notrack on.
    assert.equal(scripts.length, 2);
    assert.doesNotMatch(scripts[0]!, /notrack comment|prerouting ip saddr/, 'the first transaction only learns');
    assert.ok(tables().includes(BYPASS_TABLE), 'bypass table exists');
    assert.ok(!tables().includes(POLICY_TABLE), 'no policy table');
    assert.deepEqual(bypassChains(), bypassShape([parseCidr(CLUSTER)], true).chains);
    assert.deepEqual(bypassChains(), { 'learn-requests': 1, 'learn-replies': 1, prerouting: 1, 'learn-ip': 4, 'notrack-ip': 2 });
    const [a, b] = [pods[0]!, pods[1]!];
    const before = counted();
    assert.deepEqual(await probeFrom(a.netns, [{ ip: b.ip, proto: 'tcp', port: 8080 }, { ip: b.ip, proto: 'tcp', port: 9090 }]), [true, true]);
    assert.deepEqual(await probeFrom(b.netns, [{ ip: a.ip, proto: 'tcp', port: 8080 }]), [true]);
    const after = counted();
    assert.ok(after.untracked - before.untracked >= 12, `pod-to-pod packets untracked: ${JSON.stringify({ before, after })}`);
    assert.equal(after.tracked, before.tracked, 'no pod-to-pod packet was tracked');
  });

  it('no policy: a host port DNAT\'d to a pod and masqueraded behind the bridge still answers (replies to the host stay tracked)', async () => {
    const before = counted();
    assert.deepEqual(await probeFrom(pods[0]!.netns, [{ ip: HOST_PORT_IP, proto: 'tcp', port: 8081 }]), [true]);
    assert.ok(counted().tracked > before.tracked, 'the DNAT\'d flow went through conntrack');
  });

  it('a policy appears: one transaction creates the policy table and ends notrack (the learning stays); allowed connections get their replies', async () => {
    const [a, b] = [pods[0]!, pods[1]!];
    const n = scripts.length;
    const r = await enforcer.update(world([policy({ podSelector: { matchLabels: { app: 'b' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'a' } } }], ports: [{ port: 8080 }] }] })]));
    assert.equal(r.type, 'replaced');
    assert.equal(scripts.length, n + 1, 'a single nft transaction');
    assert.ok(tables().includes(POLICY_TABLE));
    assert.deepEqual(bypassChains(), bypassShape([parseCidr(CLUSTER)], false).chains, 'notrack gone, the learning stays');
    assert.equal(bypassChains()?.prerouting, undefined);
    const before = counted();
    assert.deepEqual(await probeFrom(a.netns, [{ ip: b.ip, proto: 'tcp', port: 8080 }, { ip: b.ip, proto: 'tcp', port: 9090 }]), [true, false]);
    assert.deepEqual(await probeFrom(b.netns, [{ ip: a.ip, proto: 'tcp', port: 8080 }]), [true]);
    const after = counted();
    assert.equal(after.untracked, before.untracked, 'nothing untracked while a policy applies');
    assert.ok(after.tracked > before.tracked);
  });

  it('repair() while enforcing: notrack that reappeared is removed, emptied learning refilled', async () => {
    await nftApply(`add chain inet ${BYPASS_TABLE} prerouting { type filter hook prerouting priority raw; policy accept; }\n`, { netns: host });
    assert.deepEqual(await enforcer.repair(), { type: 'repaired', reason: `${BYPASS_TABLE} notrack (chain prerouting) exists next to the policy table` });
    assert.equal(bypassChains()?.prerouting, undefined);
    assert.deepEqual(await enforcer.repair(), { type: 'ok' });
    await nftApply(`flush chain inet ${BYPASS_TABLE} learn-ip\n`, { netns: host });
    assert.deepEqual(await enforcer.repair(), { type: 'repaired', reason: `${BYPASS_TABLE} chain learn-ip has 0 rules, expected 4` });
    assert.deepEqual(bypassChains(), bypassShape([parseCidr(CLUSTER)], false).chains);
    assert.deepEqual(await enforcer.repair(), { type: 'ok' });
  });

  it('the policy goes: the bypass returns in the same transaction, traffic untracked again; repair() restores it', async () => {
    const [a, b] = [pods[0]!, pods[1]!];
    const n = scripts.length;
    await enforcer.remove();
    assert.equal(scripts.length, n + 1);
    assert.ok(tables().includes(BYPASS_TABLE));
    assert.ok(!tables().includes(POLICY_TABLE));
    const before = counted();
    assert.deepEqual(await probeFrom(a.netns, [{ ip: b.ip, proto: 'tcp', port: 9090 }]), [true]);
    assert.ok(counted().untracked > before.untracked);
    assert.deepEqual(await enforcer.repair(), { type: 'ok' });
    await nftApply(`delete table inet ${BYPASS_TABLE}\n`, { netns: host });
    assert.deepEqual(await enforcer.repair(), { type: 'repaired', reason: `${BYPASS_TABLE} is missing` });
    assert.deepEqual(bypassChains(), bypassShape([parseCidr(CLUSTER)], true).chains);
    await nftApply(`flush chain inet ${BYPASS_TABLE} prerouting\n`, { netns: host });
    assert.equal((await enforcer.repair()).type, 'repaired');
    assert.deepEqual(await enforcer.repair(), { type: 'ok' });
    // A chain this version does not make: the table is recreated rather than rewritten in place.
    await nftApply(`add chain inet ${BYPASS_TABLE} stale { type filter hook forward priority 0; policy accept; }\n`, { netns: host });
    assert.deepEqual(await enforcer.repair(), { type: 'repaired', reason: `${BYPASS_TABLE} has an unexpected chain stale` });
    assert.deepEqual(bypassChains(), bypassShape([parseCidr(CLUSTER)], true).chains);
    assert.deepEqual(await enforcer.repair(), { type: 'ok' });
  });
});

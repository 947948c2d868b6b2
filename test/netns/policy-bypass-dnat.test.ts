// The conntrack bypass and DNAT, on the real kernel: two hosts of a topology running weftd with
// --conntrack-bypass and otherwise its defaults (vxlan, file store), pods made through
// bin/cni/weft — a and c on host 0, b on host 1 — and on host 0 what kube-proxy and portmap add
// there: a nat table of the test's own DNATs ClusterIP-like addresses (10.96.0.10 → b on the
// other host, 10.96.0.11 → c on the same bridge, TCP 80 and UDP 53), and the reference portmap
// maps host 0's ports 8081 (snat: its default, which masquerades clients of the container's own
// subnet behind the host, so their replies go to a local address) and 8082 (snat: false, the
// reply goes straight back over the bridge) to c. Each such connection must be answered from the
// address it was made to. With the bypass's learning emptied (the bypass as it was before it learnt DNATed
// connections) the same connections fail, which is what the learning fixes. Observer tables
// count forwarded pod-to-pod packets by conntrack state on both hosts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { Topology } from '../../src/lab/topology.js';
import { NetnsPool } from '../../src/netns/testing.js';
import { formatIP, parseCidr } from '../../src/net/ip.js';
import { nftApply } from '../../src/nft/nft.js';
import { BYPASS_TABLE, bypassShape } from '../../src/policy/bypass.js';
import { WEFTCTL, cleanEnv, inNs, setConfig, startWeftd, killChildren, stopAll, stopWeftd, tempDir, waitFor, waitReady, type Weftd } from './agent-harness.js';
import { REF_CNI_DIR, WEFT_CNI_DIR, runPlugin } from './cni-harness.js';
import { bypassChains as bypassChainsIn, observedCounts, observerScript } from './conntrack-observer.js';

const PROBE = fileURLToPath(new URL('./bypass-probe.js', import.meta.url));
const PREFIX = 'wqd';
const NETWORK = '10.79.0.0/16';
const VIP_REMOTE = '10.96.0.10';
const VIP_LOCAL = '10.96.0.11';
/** portmap with snat (hairpin masquerade, its default) and without. */
const HOST_PORT = 8081;
const HOST_PORT_NO_SNAT = 8082;

interface Pod { name: string; host: number; ip: string; netns: string; server?: ChildProcess }

const pool = new NetnsPool(PREFIX);
const children: ChildProcess[] = [];
let topo: Topology | undefined;
let tmp: { path: string; remove(): void } | undefined;
let storeDir = '';
const weftds: Weftd[] = [];
const pods: Record<'a' | 'b' | 'c', Pod> = {} as never;

const storeArgs = () => ['--store', 'file', '--store-dir', storeDir];
const hostNs = (h: number) => topo!.host(h).ns;
const hostIP = (h: number) => formatIP(topo!.host(h).ip);

/** weftd with the bypass turned on (it is off by default) unless `bypassFlags` says otherwise. */
function startAgent(h: number, bypassFlags: string[] = ['--conntrack-bypass']): Weftd {
  const w = startWeftd(hostNs(h), ['--iface', 'eth0', '--ip-masq', ...bypassFlags, '--node-name', `h${h}`, ...storeArgs()], join(tmp!.path, `h${h}`, 'subnet.env'), 9417);
  weftds[h] = w;
  return w;
}

function cniConf(host: number): Record<string, unknown> {
  const dir = join(tmp!.path, `h${host}`);
  return {
    cniVersion: '1.0.0', name: 'wqdnet', type: 'weft', subnetFile: join(dir, 'subnet.env'), dataDir: join(dir, 'state'),
    ipam: { type: 'weft-ipam', dataDir: join(dir, 'ipam') }, delegate: { bridge: 'wqdbr0' },
    args: { cni: { labels: [{ key: 'app', value: 'x' }] } },
  };
}

async function addPod(name: 'a' | 'b' | 'c', host: number): Promise<{ pod: Pod; result: Record<string, unknown> }> {
  const n = pool.make();
  const conf = cniConf(host);
  (conf.args as { cni: { labels: unknown[] } }).cni.labels = [{ key: 'app', value: name }];
  const r = await runPlugin(topo!.host(host).nsPath, join(WEFT_CNI_DIR, 'weft'), {
    command: 'ADD', containerId: `${PREFIX}-${name}`, netns: n.path, args: `K8S_POD_NAMESPACE=${PREFIX};K8S_POD_NAME=${name}`,
  }, conf);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const ip = ((r.json as { ips: { address: string }[] }).ips[0]!.address).split('/')[0]!;
  return { pod: { name, host, ip, netns: n.name }, result: r.json! };
}

function serve(p: Pod): Promise<void> {
  const c = spawn('ip', ['netns', 'exec', p.netns, process.execPath, PROBE, 'serve', '8080', '5353', p.ip], { env: cleanEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(c);
  p.server = c;
  return new Promise((resolve, reject) => {
    createInterface({ input: c.stdout! }).once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(`server in ${p.netns}: ${l}`))));
    c.once('exit', (code) => reject(new Error(`server in ${p.netns} exited ${code}`)));
  });
}

interface ProbeResult { ip: string; proto: 'tcp' | 'udp'; port: number; ok: boolean; from?: string }

function probe(netns: string, targets: { ip: string; proto: 'tcp' | 'udp'; port: number; localPort?: number }[]): Promise<ProbeResult[]> {
  return new Promise((resolve, reject) => {
    const c = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'probe', JSON.stringify(targets)], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(c);
    let out = '';
    c.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    c.once('exit', (code) => {
      try { resolve(JSON.parse(out) as ProbeResult[]); } catch { reject(new Error(`probe in ${netns} exited ${code}: ${out}`)); }
    });
  });
}

/** A held TCP connection: what it printed so far, a way to send a line, and wait for output. */
interface Held { lines: string[]; send(line: string): void; until(what: string, ms?: number): Promise<void>; close(): void }

function hold(netns: string, ip: string, port: number, localPort?: number): Held {
  const c = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'hold', ip, String(port), ...(localPort !== undefined ? [String(localPort)] : [])], { env: cleanEnv(), stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(c);
  const lines: string[] = [];
  createInterface({ input: c.stdout! }).on('line', (l) => lines.push(l));
  return {
    lines,
    send: (line) => c.stdin!.write(line + '\n'),
    until: async (what, ms = 5000) => {
      await waitFor(`"${what}" from the held connection`, () => {
        if (lines.includes(what)) return true;
        if (lines.some((l) => l === 'closed' || l.startsWith('error'))) throw new Error(`the connection broke: ${JSON.stringify(lines)}`);
        return false;
      }, ms, 50);
    },
    close: () => c.stdin!.end(),
  };
}

/** Forwarded pod-to-pod packets the observer on host `h` counted as untracked and tracked. */
const counted = (h: number) => observedCounts(hostNs(h), `${PREFIX}-observe`);

/** The bypass table's chains with their rule counts, undefined when the table is absent. */
const bypassChains = (h: number) => bypassChainsIn(hostNs(h));

const notracking = (h: number) => bypassChains(h)?.prerouting !== undefined;

/** The learnt reply tuples on host `h`, as nft prints them. */
function learnt(h: number): string {
  const r = inNs(hostNs(h), ['nft', 'list', 'set', 'inet', BYPASS_TABLE, 'nat-tuples-ip']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

function weftctl(args: string[], input = ''): void {
  const r = spawnSync('ip', ['netns', 'exec', hostNs(0), WEFTCTL, ...args, ...storeArgs()], { input, encoding: 'utf8', env: cleanEnv() });
  assert.equal(r.status, 0, `weftctl ${args.join(' ')}: ${r.stderr}`);
}

const dnatTargets = () => [
  { ip: VIP_REMOTE, proto: 'tcp' as const, port: 80 }, { ip: VIP_REMOTE, proto: 'udp' as const, port: 53 },
  { ip: VIP_LOCAL, proto: 'tcp' as const, port: 80 }, { ip: VIP_LOCAL, proto: 'udp' as const, port: 53 },
  { ip: hostIP(0), proto: 'tcp' as const, port: HOST_PORT }, { ip: hostIP(0), proto: 'tcp' as const, port: HOST_PORT_NO_SNAT },
];

/** Whether each DNATed target answered, and from the address it was asked (TCP: the socket's peer; UDP: the datagram's source). */
const answeredFromTarget = (rs: ProbeResult[]) => rs.map((r) => r.ok && r.from === `${r.ip}:${r.port}`);

describe('conntrack bypass with DNAT to pods (weftd --conntrack-bypass, vxlan, 2 hosts)', { timeout: 240_000 }, () => {
  before(async () => {
    topo = Topology.create({ prefix: PREFIX, hosts: 2 });
    tmp = tempDir(PREFIX);
    storeDir = join(tmp.path, 'store');
    setConfig(hostNs(0), storeArgs(), { Network: NETWORK, SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 79 } });
    for (let h = 0; h < 2; h++) startAgent(h);
    for (const w of weftds) await waitReady(w);
    weftctl(['ns', 'create', PREFIX]);
    const a = await addPod('a', 0);
    const c = await addPod('c', 0);
    const b = await addPod('b', 1);
    Object.assign(pods, { a: a.pod, b: b.pod, c: c.pod });
    await Promise.all(Object.values(pods).map((p) => serve(p)));
    // kube-proxy's part on host 0 (iptables or nftables mode: DNAT in nat prerouting), and the
    // observers on both hosts (after weftd's learning chain at filter - 10).
    await nftApply([
      `add table ip ${PREFIX}-kube`,
      `add chain ip ${PREFIX}-kube pre { type nat hook prerouting priority dstnat; policy accept; }`,
      `add rule ip ${PREFIX}-kube pre ip daddr ${VIP_REMOTE} tcp dport 80 dnat to ${pods.b.ip}:8080`,
      `add rule ip ${PREFIX}-kube pre ip daddr ${VIP_REMOTE} udp dport 53 dnat to ${pods.b.ip}:5353`,
      `add rule ip ${PREFIX}-kube pre ip daddr ${VIP_LOCAL} tcp dport 80 dnat to ${pods.c.ip}:8080`,
      `add rule ip ${PREFIX}-kube pre ip daddr ${VIP_LOCAL} udp dport 53 dnat to ${pods.c.ip}:5353`,
    ].join('\n') + '\n', { netns: hostNs(0) });
    for (let h = 0; h < 2; h++) {
      await nftApply([
        ...observerScript(`${PREFIX}-observe`, -5, `ip saddr ${NETWORK} ip daddr ${NETWORK}`),
      ].join('\n') + '\n', { netns: hostNs(h) });
    }
    // The reference portmap (Debian's containernetworking-plugins) maps host 0's ports to pod c,
    // from the weft plugin's result, as a runtime chains it (the second mapping under its own
    // container id, so that portmap keeps both chains).
    for (const [id, snat, hostPort] of [[`${PREFIX}-c`, true, HOST_PORT], [`${PREFIX}-c-nosnat`, false, HOST_PORT_NO_SNAT]] as const) {
      const pm = await runPlugin(topo.host(0).nsPath, join(REF_CNI_DIR, 'portmap'), { command: 'ADD', containerId: id, netns: `/run/netns/${pods.c.netns}` }, {
        cniVersion: '1.0.0', name: 'wqdnet', type: 'portmap', snat, capabilities: { portMappings: true },
        runtimeConfig: { portMappings: [{ hostPort, containerPort: 8080, protocol: 'tcp' }] }, prevResult: c.result,
      });
      assert.equal(pm.code, 0, pm.stdout + pm.stderr);
    }
  });

  after(async () => {
    killChildren(children);
    await stopAll();
    pool.cleanup();
    topo?.destroy();
    tmp?.remove();
  });

  it('weftd --conntrack-bypass keeps the bypass: notrack and the DNAT learning on every host', () => {
    const want = bypassShape([parseCidr(NETWORK)], true);
    for (let h = 0; h < 2; h++) assert.deepEqual(bypassChains(h), want.chains, `h${h}`);
    // Bridged replies (same-host DNAT) reach the IP hooks only through br_netfilter.
    assert.equal(inNs(hostNs(0), ['sysctl', '-n', 'net.bridge.bridge-nf-call-iptables']).stdout.trim(), '1');
  });

  it('plain pod-to-pod traffic across hosts is still forwarded untracked on both hosts', async () => {
    const before = [counted(0), counted(1)];
    const rs = await probe(pods.a.netns, [{ ip: pods.b.ip, proto: 'tcp', port: 8080 }, { ip: pods.b.ip, proto: 'udp', port: 5353 }]);
    assert.deepEqual(rs.map((r) => r.ok), [true, true]);
    assert.deepEqual((await probe(pods.b.netns, [{ ip: pods.a.ip, proto: 'tcp', port: 8080 }])).map((r) => r.ok), [true]);
    const afterCounts = [counted(0), counted(1)];
    for (let h = 0; h < 2; h++) {
      assert.ok(afterCounts[h]!.untracked - before[h]!.untracked >= 10, `h${h} forwarded them untracked: ${JSON.stringify({ before, after: afterCounts })}`);
      assert.equal(afterCounts[h]!.tracked, before[h]!.tracked, `h${h} tracked none of them`);
    }
  });

  it('ClusterIP-style DNAT to a pod on another host: TCP and UDP are answered from the ClusterIP, the DNATing host learnt the replies, the other host did not track them', async () => {
    const before1 = counted(1);
    const rs = await probe(pods.a.netns, dnatTargets().slice(0, 2));
    assert.deepEqual(rs.map((r) => r.from), [`${VIP_REMOTE}:80`, `${VIP_REMOTE}:53`], JSON.stringify(rs));
    const set = learnt(0);
    assert.match(set, new RegExp(`${pods.b.ip.replace(/\./g, '\\.')} \\. tcp \\. 8080 \\. ${pods.a.ip.replace(/\./g, '\\.')} \\. \\d+`));
    assert.match(set, new RegExp(`${pods.b.ip.replace(/\./g, '\\.')} \\. udp \\. 5353 \\. ${pods.a.ip.replace(/\./g, '\\.')} \\. \\d+`));
    assert.equal(counted(1).tracked, before1.tracked, 'b\'s host forwards the DNATed connection untracked (only the DNATing host needs it)');
  });

  it('ClusterIP-style DNAT to a pod on the same bridge: the bridged replies are un-DNATed too (br_netfilter)', async () => {
    const rs = await probe(pods.a.netns, dnatTargets().slice(2, 4));
    assert.deepEqual(rs.map((r) => r.from), [`${VIP_LOCAL}:80`, `${VIP_LOCAL}:53`], JSON.stringify(rs));
  });

  it('hostPort through the reference portmap, from another pod on the same host, with and without its hairpin masquerade', async () => {
    const rs = await probe(pods.a.netns, dnatTargets().slice(4));
    assert.deepEqual(answeredFromTarget(rs), [true, true], JSON.stringify(rs));
  });

  it('a direct connection from the ports of an open DNATed one gets its own replies (tracked, its source port remapped by conntrack)', async () => {
    const localPort = 40000 + Math.floor(Math.random() * 20000);
    const held = hold(pods.a.netns, VIP_REMOTE, 80, localPort);
    try {
      await held.until('connected');
      held.send('via the ClusterIP');
      await held.until('got via the ClusterIP');
      // Same source address and port, straight to the pod the ClusterIP connection went to.
      const [direct] = await probe(pods.a.netns, [{ ip: pods.b.ip, proto: 'tcp', port: 8080, localPort }]);
      assert.ok(direct!.ok, JSON.stringify(direct));
      // Host 0's conntrack has it with another source port towards b (the reply's destination port).
      const entry = inNs(hostNs(0), ['cat', '/proc/net/nf_conntrack']).stdout.split('\n')
        .find((l) => l.includes(`src=${pods.a.ip} dst=${pods.b.ip} sport=${localPort} dport=8080 `));
      assert.ok(entry, 'the direct connection was tracked on host 0');
      assert.doesNotMatch(entry, new RegExp(`src=${pods.b.ip} dst=${pods.a.ip} sport=8080 dport=${localPort} `), `remapped: ${entry}`);
      held.send('still there');
      await held.until('got still there');
    } finally {
      held.close();
    }
  });

  it('a DNATed connection open while a policy exists survives the policy\'s deletion, also when the server speaks first', async () => {
    weftctl(['policy', 'apply', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'c-open', namespace: PREFIX },
      spec: { podSelector: { matchLabels: { app: 'c' } }, ingress: [{}] },
    }));
    await waitFor('host 0 to drop notrack for the policy', () => !notracking(0), 15_000);
    assert.ok(bypassChains(0)?.['learn-ip'], 'the learning half stays while a policy exists');
    const held = hold(pods.a.netns, VIP_REMOTE, 80);
    try {
      await held.until('connected');
      held.send('hello');
      await held.until('got hello');
      weftctl(['policy', 'delete', '-n', PREFIX, 'c-open']);
      await waitFor('host 0 to notrack again', () => notracking(0), 15_000);
      pods.b.server!.stdin!.write('pushed after the policy went\n');
      await held.until('got pushed after the policy went');
    } finally {
      held.close();
    }
  });

  it('the bypass without its learning (as it was) breaks every one of these connections; weftd repairs it', async () => {
    await stopWeftd(weftds[0]!);
    await nftApply(`flush chain inet ${BYPASS_TABLE} learn-ip\nflush set inet ${BYPASS_TABLE} nat-tuples-ip\n`, { netns: hostNs(0) });
    const broken = await probe(pods.a.netns, dnatTargets());
    process.stdout.write(`without learning: ${broken.map((r) => `${r.proto} ${r.ip}:${r.port} ${r.ok ? `answered from ${r.from}` : 'no answer'}`).join('; ')}\n`);
    // All but portmap's hairpin-masqueraded port: its replies go to a host address, which the
    // bypass always left tracked. UDP shows what happens: the answer comes straight from the pod.
    assert.deepEqual(answeredFromTarget(broken), [false, false, false, false, true, false]);
    assert.equal(broken[1]!.from, `${pods.b.ip}:5353`);
    assert.equal(broken[3]!.from, `${pods.c.ip}:5353`);
    startAgent(0);
    await waitReady(weftds[0]!);
    await waitFor('host 0\'s bypass table repaired', () => isDeepStrictEqual(bypassChains(0), bypassShape([parseCidr(NETWORK)], true).chains), 15_000);
    assert.deepEqual(answeredFromTarget(await probe(pods.a.netns, dnatTargets())), [true, true, true, true, true, true]);
  });

  it('a new bypass table is seeded from conntrack: a DNATed connection made before weftd turned the bypass on keeps working, server first', async () => {
    // As after an upgrade from a weftd without learning, or a start after --no-conntrack-bypass.
    await stopWeftd(weftds[0]!);
    await nftApply(`delete table inet ${BYPASS_TABLE}\n`, { netns: hostNs(0) });
    const held = hold(pods.a.netns, VIP_REMOTE, 80);
    try {
      await held.until('connected');
      held.send('before');
      await held.until('got before');
      startAgent(0);
      await waitReady(weftds[0]!);
      await waitFor('host 0 to notrack again', () => notracking(0), 15_000);
      // The connection has been quiet since before the start: only the seed can know it.
      const seeded = learnt(0);
      pods.b.server!.stdin!.write('pushed after the start\n');
      await held.until('got pushed after the start');
      assert.match(seeded, new RegExp(`${pods.b.ip.replace(/\./g, '\\.')} \\. tcp \\. 8080 \\. ${pods.a.ip.replace(/\./g, '\\.')}`), 'the open connection was seeded');
    } finally {
      held.close();
    }
  });

  it('no flag (the default), --no-conntrack-bypass and --conntrack-bypass=false: no bypass table, pod-to-pod traffic tracked', async () => {
    for (const flags of [[], ['--no-conntrack-bypass'], ['--conntrack-bypass=false']]) {
      const flag = flags.join(' ') || 'no flag';
      await stopWeftd(weftds[1]!);
      startAgent(1, flags);
      await waitReady(weftds[1]!);
      await waitFor(`h1 without the bypass table (${flag})`, () => bypassChains(1) === undefined, 15_000);
      const before = counted(1);
      assert.deepEqual((await probe(pods.a.netns, [{ ip: pods.b.ip, proto: 'tcp', port: 8080 }])).map((r) => r.ok), [true]);
      const got = counted(1);
      assert.ok(got.tracked > before.tracked && got.untracked === before.untracked, `${flag}: h1 tracks pod-to-pod traffic: ${JSON.stringify({ before, got })}`);
      // Back to --conntrack-bypass: the table returns.
      await stopWeftd(weftds[1]!);
      startAgent(1);
      await waitReady(weftds[1]!);
      await waitFor('h1 with its bypass again', () => notracking(1), 15_000);
    }
  });
});

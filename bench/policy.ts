// `npm run bench -- policy`: network policy at scale, on 3 hosts of a topology (weftd each,
// vxlan, file store in /dev/shm).
//   apply → enforced   1000 endpoints (fake pods: endpoint records in each host's records
//                      directory, published by its weftd) and 100 policies applied with one
//                      `weftctl policy apply`; time from the command's start until every host's
//                      kernel table has exactly the shape its compiled policy predicts (sets'
//                      element counts, chains' rule counts, read with `nft -j list`). Then one
//                      more policy, then one more endpoint (an element update), then deleting all.
//   throughput         iperf3 TCP between two real pods (bin/cni/weft) on two hosts, with no
//                      policies vs with the 100 policies plus one selecting the server pod
//                      (so its packets go through the vmap lookups and a chain); ratio ≥ 0.95.
// Options: --endpoints=N (1000), --policies=N (100), --seconds=S (iperf3 run length, 5).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Topology } from '../src/lab/topology.js';
import { NetnsPool } from '../src/netns/testing.js';
import { type Cidr, formatIP, networkOf, nthAddress, parseCidr } from '../src/net/ip.js';
import { compilePolicies, expectedShape } from '../src/policy/compile.js';
import { shapeOfListing } from '../src/policy/enforcer.js';
import { endpointRecordDir, endpointRecordFile } from '../src/policy/endpoint-record.js';
import { loadPolicyWorld } from '../src/policy/store.js';
import { FileKeyValueStore } from '../src/store/kv.js';
import type { Benchmark, BenchResult } from './main.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEFTD = join(ROOT, 'bin/weftd');
const WEFTCTL = join(ROOT, 'bin/weftctl');
const WEFT = join(ROOT, 'bin/cni/weft');
const HOSTS = 3;
const NAMESPACES = 10;

const env = (): NodeJS.ProcessEnv => { const e: NodeJS.ProcessEnv = { ...process.env, CNI_PATH: join(ROOT, 'bin/cni') }; delete e.NODE_EXTRA_CA_CERTS; return e; };
const inNs = (ns: string, argv: string[], input = '') => spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', env: env(), input, timeout: 120_000 });
const opt = (args: string[], name: string, dflt: number) => { const a = args.find((x) => x.startsWith(`--${name}=`)); return a ? Number(a.split('=')[1]) : dflt; };

function policyObjects(n: number): unknown[] {
  // A mix of what the issue lists: ingress by namespace selector, by pod selector, ports, egress.
  return Array.from({ length: n }, (_, i) => {
    const ns = `ns${i % NAMESPACES}`;
    const app = `a${i % 7}`;
    const spec = i % 4 === 3
      ? { podSelector: { matchLabels: { app } }, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: { matchLabels: { team: `t${i % 3}` } } }], ports: [{ protocol: 'UDP', port: 53 }] }] }
      : { podSelector: { matchLabels: { app } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: `t${i % 3}` } }, podSelector: { matchLabels: { tier: `x${i % 5}` } } }, { podSelector: {} }], ports: [{ protocol: 'TCP', port: 8000 + (i % 50) }, { protocol: 'TCP', port: 9000, endPort: 9100 }] }] };
    return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: ns, name: `p${i}` }, spec };
  });
}

export const benchmark: Benchmark = {
  name: 'policy',
  summary: 'policy apply → enforced on 3 hosts (1000 endpoints, 100 policies); iperf3 with policies vs none',
  async run(args): Promise<BenchResult> {
    const nEndpoints = opt(args, 'endpoints', 1000);
    const nPolicies = opt(args, 'policies', 100);
    const seconds = opt(args, 'seconds', 5);
    const topo = Topology.create({ prefix: 'wnpb', hosts: HOSTS });
    const pool = new NetnsPool('wnpb');
    const dir = mkdtempSync('/dev/shm/wnpb-');
    const procs: ChildProcess[] = [];
    const storeArgs = ['--store', 'file', '--store-dir', join(dir, 'store')];
    const kv = new FileKeyValueStore(join(dir, 'store'), '/weft/network');
    try {
      const weftctl = (a: string[], input = '') => {
        const r = inNs(topo.host(0).ns, [WEFTCTL, ...a, ...storeArgs], input);
        if (r.status !== 0) throw new Error(`weftctl ${a.join(' ')}: ${r.stderr}`);
      };
      weftctl(['config', 'set', '-'], JSON.stringify({ Network: '10.90.0.0/16', SubnetLen: 22, Backend: { Type: 'vxlan', VNI: 90 } }));
      const subnetFile = (h: number) => join(dir, `h${h}`, 'subnet.env');
      for (let h = 0; h < HOSTS; h++) {
        mkdirSync(join(dir, `h${h}`), { recursive: true });
        procs.push(spawn('ip', ['netns', 'exec', topo.host(h).ns, WEFTD, '--iface', 'eth0', '--ip-masq', '--node-name', `h${h}`, '--subnet-file', subnetFile(h), ...storeArgs], { env: env(), stdio: 'ignore' }));
      }
      const subnets: Cidr[] = [];
      for (let h = 0; h < HOSTS; h++) {
        for (let i = 0; ; i++) {
          const r = spawnSync('sh', ['-c', `grep ^FLANNEL_SUBNET= ${subnetFile(h)} | cut -d= -f2`], { encoding: 'utf8' });
          if (r.stdout.trim() !== '') { subnets.push(networkOf(parseCidr(r.stdout.trim()))); break; }
          if (i > 200) throw new Error(`weftd on h${h} wrote no subnet.env`);
          await sleep(100);
        }
      }
      for (let t = 0; t < NAMESPACES; t++) weftctl(['ns', 'create', `ns${t}`, `team=t${t % 3}`]);

      // Fake pods: records in each host's records directory, as the weft plugin writes them.
      for (let i = 0; i < nEndpoints; i++) {
        const h = i % HOSTS;
        const rdir = endpointRecordDir(subnetFile(h));
        mkdirSync(rdir, { recursive: true });
        const ip = formatIP(nthAddress(subnets[h]!, 10n + BigInt(Math.floor(i / HOSTS))));
        const rec = { containerID: `fake${i}`, ifname: 'eth0', namespace: `ns${i % NAMESPACES}`, pod: `pod${i}`, labels: { app: `a${i % 7}`, tier: `x${i % 5}` }, ips: [ip] };
        writeFileSync(endpointRecordFile(rdir, rec.containerID, rec.ifname), JSON.stringify(rec));
      }
      const t0 = performance.now();
      while ((await kv.list('endpoints/')).length < nEndpoints) {
        if (performance.now() - t0 > 60_000) throw new Error('endpoints not published');
        await sleep(50);
      }
      const publishMs = performance.now() - t0;

      /** Until every host's kernel table has the shape the store's world compiles to. */
      const waitEnforced = async (start: number): Promise<number> => {
        const { world } = await loadPolicyWorld(kv);
        const want = [0, 1, 2].map((h) => JSON.stringify(world.policies.length === 0 ? null
          : sortShape(expectedShape(compilePolicies(world, `h${h}`, { subnets: [subnets[h]!], extraKnown: [] })))));
        const done = new Set<number>();
        for (;;) {
          for (let h = 0; h < HOSTS; h++) {
            if (done.has(h)) continue;
            const r = inNs(topo.host(h).ns, ['nft', '-j', 'list', 'table', 'inet', 'weft-policy']);
            const got = r.status === 0 ? sortShape(shapeOfListing((JSON.parse(r.stdout) as { nftables: unknown[] }).nftables)) : null;
            if (JSON.stringify(got) === want[h]) done.add(h);
          }
          if (done.size === HOSTS) return performance.now() - start;
          if (performance.now() - start > 60_000) throw new Error('policies not enforced within 60 s');
          await sleep(20);
        }
      };

      // Throughput: two real pods on h0 and h1.
      const pod = async (h: number, name: string) => {
        const n = pool.make();
        const conf = { cniVersion: '1.0.0', name: 'wnpbnet', type: 'weft', subnetFile: subnetFile(h), dataDir: join(dir, `h${h}`, 'state'), ipam: { type: 'weft-ipam', dataDir: join(dir, `h${h}`, 'ipam') }, delegate: { bridge: 'wnpbbr0' } };
        const r = spawnSync('ip', ['netns', 'exec', topo.host(h).ns, WEFT], {
          input: JSON.stringify(conf), encoding: 'utf8',
          env: { ...env(), CNI_COMMAND: 'ADD', CNI_CONTAINERID: `wnpb-${name}`, CNI_NETNS: n.path, CNI_IFNAME: 'eth0', CNI_ARGS: `K8S_POD_NAMESPACE=ns0;K8S_POD_NAME=${name}` },
        });
        if (r.status !== 0) throw new Error(`ADD ${name}: ${r.stdout}${r.stderr}`);
        return { ns: n.name, ip: (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]! };
      };
      const server = await pod(1, 'iperf-server');
      const client = await pod(0, 'iperf-client');
      const srv = spawn('ip', ['netns', 'exec', server.ns, 'iperf3', '-s'], { stdio: 'ignore' });
      procs.push(srv);
      await sleep(500);
      const iperf = (): number => {
        const r = inNs(client.ns, ['iperf3', '-c', server.ip, '-t', String(seconds), '-J', '--connect-timeout', '3000']);
        if (r.status !== 0) {
          const ping = inNs(client.ns, ['ping', '-c1', '-W1', server.ip]).status === 0 ? 'answers' : 'does not answer';
          throw new Error(`iperf3 ${client.ip} → ${server.ip} (ping ${ping}) exited ${r.status ?? r.signal}: ${r.stdout.slice(0, 300)}${r.stderr}`);
        }
        const out = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
        const bps = out.end?.sum_received?.bits_per_second;
        if (bps === undefined) throw new Error(`iperf3 ${client.ip} → ${server.ip}: ${out.error ?? r.stdout.slice(0, 300)}`);
        return bps / 1e9;
      };
      const without = iperf();
      const rows: string[] = [];
      let start = performance.now();
      weftctl(['policy', 'apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: policyObjects(nPolicies) }));
      rows.push(`| ${nPolicies} policies applied at once (\`weftctl policy apply\`, one List) | ${(await waitEnforced(start)).toFixed(0)} |`);
      start = performance.now();
      weftctl(['policy', 'apply', '-f', '-'], JSON.stringify(policyObjects(nPolicies + 1)[nPolicies]));
      rows.push(`| one more policy (tables replaced) | ${(await waitEnforced(start)).toFixed(0)} |`);
      start = performance.now();
      {
        const rdir = endpointRecordDir(subnetFile(0));
        const rec = { containerID: 'fakeextra', ifname: 'eth0', namespace: 'ns0', pod: 'extra', labels: { app: 'a0', tier: 'x0' }, ips: [formatIP(nthAddress(subnets[0]!, 900n))] };
        writeFileSync(endpointRecordFile(rdir, rec.containerID, rec.ifname), JSON.stringify(rec));
      }
      rows.push(`| one more endpoint record (standalone ADD path: dir watch → publish → element updates on all hosts) | ${(await waitEnforced(start)).toFixed(0)} |`);

      weftctl(['policy', 'apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: 'ns0', name: 'iperf' }, spec: { podSelector: { matchLabels: {} }, ingress: [{ from: [{ podSelector: {} }], ports: [{ protocol: 'TCP', port: 5201 }] }] } }));
      await waitEnforced(performance.now());
      process.stderr.write(`policy bench: ${rows.join(' ')}\n`);
      const withPolicies = iperf();
      // Every policy deleted: tables removed.
      start = performance.now();
      for (const { key } of await kv.list('policies/')) await kv.delete(key);
      rows.push(`| all ${nPolicies + 2} policies deleted (tables removed) | ${(await waitEnforced(start)).toFixed(0)} |`);

      const markdown = `# bench policy

${HOSTS} hosts (weftd each, vxlan, file store in /dev/shm), ${nEndpoints} fake endpoints (records in the hosts' records
directories, published by weftd in ${publishMs.toFixed(0)} ms), ${nPolicies} policies (${NAMESPACES} namespaces; ingress with
namespace AND pod selectors plus same-namespace peers, numeric ports and an endPort range; every fourth an egress
policy). "Enforced" means every host's \`inet weft-policy\` table, read back with \`nft -j list\`, has exactly the set
element and chain rule counts its compiled policy predicts.

| change | ms until enforced on all ${HOSTS} hosts |
|---|---|
${rows.join('\n')}

| iperf3 TCP pod h0 → pod h1, ${seconds} s | Gbit/s |
|---|---|
| no policies | ${without.toFixed(2)} |
| ${nPolicies + 2} policies loaded, server pod selected (vmap + chain on both hosts) | ${withPolicies.toFixed(2)} |
| ratio | **${(withPolicies / without).toFixed(3)}** (target ≥ 0.95) |
`;
      return { markdown };
    } finally {
      for (const p of procs) if (p.pid !== undefined && p.exitCode === null) { try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ } }
      await sleep(300);
      for (const p of procs) if (p.pid !== undefined && p.exitCode === null) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
      pool.cleanup();
      topo.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

function sortShape(s: { sets: Record<string, number>; chains: Record<string, number> }): unknown {
  const sort = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { sets: sort(s.sets), chains: sort(s.chains) };
}

// `npm run bench -- policy`: network policy at scale, on 3 hosts of a topology (weftd each,
// vxlan, file store in /dev/shm).
//   apply → enforced   1000 endpoints (fake pods: endpoint records in each host's records
//                      directory, published by its weftd) and 100 policies applied with one
//                      `weftctl policy apply`; per host, the time until its kernel table has
//                      exactly the shape its compiled policy predicts (sets' element counts,
//                      chains' rule counts), taken from `nft monitor`'s commit lines and confirmed
//                      with `nft -j list`. Then one more policy, one more endpoint (an element
//                      update), and the delete-all / write-back switches of the throughput rounds.
//   throughput         iperf3 TCP between two real pods (bin/cni/weft) on two hosts, with no
//                      policies vs with all of them plus one selecting the server pod, in
//                      alternating rounds; ratio of the medians, target ≥ 0.95.
// Options: --endpoints=N (1000), --policies=N (100), --seconds=S (iperf3 run length, 3),
//          --rounds=R (5), --logs=DIR (keep the weftd logs there; WEFT_LOG_LEVEL=debug for passes).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Topology } from '../src/lab/topology.js';
import { NetnsPool } from '../src/netns/testing.js';
import { type Cidr, formatIP, networkOf, nthAddress, parseCidr } from '../src/net/ip.js';
import { compilePolicies } from '../src/policy/compile.js';
import { type EndpointRecord, endpointRecordDir, endpointRecordFile, recordToEndpoint } from '../src/policy/endpoint-record.js';
import type { PolicyWorld } from '../src/policy/model.js';
import { ENDPOINTS, loadPolicyWorld } from '../src/policy/store.js';
import { fileKeyValueStore } from '../src/store/kv.js';
import { EnforcementProbe, policyObjects, storedPolicies, withPolicies as addPolicies } from './common/policy-enforced.js';
import { inNs as runInNs, median } from './common/process.js';
import type { Benchmark, BenchResult } from './main.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEFTD = join(ROOT, 'bin/weftd');
const WEFTCTL = join(ROOT, 'bin/weftctl');
const WEFT = join(ROOT, 'bin/cni/weft');
const HOSTS = 3;
const NAMESPACES = 10;
const ENFORCE_TIMEOUT_MS = 60_000;

const env = (): NodeJS.ProcessEnv => { const e: NodeJS.ProcessEnv = { ...process.env, CNI_PATH: join(ROOT, 'bin/cni') }; delete e.NODE_EXTRA_CA_CERTS; return e; };
const opt = (args: string[], name: string, dflt: number) => { const a = args.find((x) => x.startsWith(`--${name}=`)); return a ? Number(a.split('=')[1]) : dflt; };

/** A command in a namespace with the CNI path set (the pods' ADDs need it). */
const inNs = (ns: string, argv: string[], extraEnv: NodeJS.ProcessEnv = {}, input = '', timeoutMs = 120_000) =>
  runInNs(ns, argv, { ...env(), ...extraEnv }, input, timeoutMs);

export const benchmark: Benchmark = {
  name: 'policy',
  summary: 'policy apply → enforced on 3 hosts (1000 endpoints, 100 policies); iperf3 with policies vs none',
  async run(args): Promise<BenchResult> {
    const nEndpoints = opt(args, 'endpoints', 1000);
    const nPolicies = opt(args, 'policies', 100);
    const seconds = opt(args, 'seconds', 3);
    const rounds = opt(args, 'rounds', 5);
    const benchStart = performance.now();
    const phase = (what: string) => process.stderr.write(`policy bench: ${((performance.now() - benchStart) / 1000).toFixed(1)} s ${what}\n`);
    const procs: ChildProcess[] = [];
    let topo: Topology | undefined;
    const pool = new NetnsPool('wpb');
    const dir = mkdtempSync('/dev/shm/wpb-');
    let cleaned = false;
    const cleanup = () => {
      if (cleaned) return;
      cleaned = true;
      for (const p of procs) if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }
      const keep = args.find((a) => a.startsWith('--logs='))?.slice('--logs='.length);
      if (keep) for (let h = 0; h < HOSTS; h++) { try { mkdirSync(keep, { recursive: true }); copyFileSync(join(dir, `h${h}`, 'weftd.log'), join(keep, `weftd-h${h}.log`)); } catch { /* no log */ } }
      try { pool.cleanup(); } catch (err) { process.stderr.write(`policy bench cleanup: ${String(err)}\n`); }
      try { topo?.destroy(); } catch (err) { process.stderr.write(`policy bench cleanup: ${String(err)}\n`); }
      rmSync(dir, { recursive: true, force: true });
    };
    // An interrupted run still removes its namespaces and processes.
    const onSignal = (sig: NodeJS.Signals) => { cleanup(); process.exit(sig === 'SIGINT' ? 130 : 143); };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const storeArgs = ['--store', 'file', '--store-dir', join(dir, 'store')];
    const kv = fileKeyValueStore(join(dir, 'store'), '/weft/network');
    try {
      topo = Topology.create({ prefix: 'wpb', hosts: HOSTS });
      const t = topo;
      const hostNs = (h: number) => t.host(h).ns;
      const weftctl = async (a: string[], input = '') => {
        const r = await inNs(hostNs(0), [WEFTCTL, ...a, ...storeArgs], {}, input);
        if (r.status !== 0) throw new Error(`weftctl ${a.join(' ')}: ${r.stderr}`);
      };
      await weftctl(['config', 'set', '-'], JSON.stringify({ Network: '10.90.0.0/16', SubnetLen: 22, Backend: { Type: 'vxlan', VNI: 90 } }));
      const subnetFile = (h: number) => join(dir, `h${h}`, 'subnet.env');
      const weftdLog = (h: number) => join(dir, `h${h}`, 'weftd.log');
      /** The end of a host's weftd log, for a failure message (the directory goes with cleanup). */
      const logTail = (h: number) => { try { return readFileSync(weftdLog(h), 'utf8').split('\n').filter((l) => /"level":"(warn|error)"/.test(l)).slice(-5).join('\n'); } catch { return ''; } };
      const probe = new EnforcementProbe(Array.from({ length: HOSTS }, (_, h) => hostNs(h)), procs, ENFORCE_TIMEOUT_MS, logTail);
      for (let h = 0; h < HOSTS; h++) {
        mkdirSync(join(dir, `h${h}`), { recursive: true });
        const log = openSync(weftdLog(h), 'w');
        procs.push(spawn('ip', ['netns', 'exec', hostNs(h), WEFTD, '--iface', 'eth0', '--ip-masq', '--node-name', `h${h}`, '--subnet-file', subnetFile(h), ...storeArgs], { env: env(), stdio: ['ignore', 'ignore', log] }));
        closeSync(log);
      }
      const subnets: Cidr[] = [];
      for (let h = 0; h < HOSTS; h++) {
        for (let i = 0; ; i++) {
          const r = await inNs(hostNs(h), ['sh', '-c', `grep ^FLANNEL_SUBNET= ${subnetFile(h)} | cut -d= -f2`]);
          if (r.stdout.trim() !== '') { subnets.push(networkOf(parseCidr(r.stdout.trim()))); break; }
          if (i > 200) throw new Error(`weftd on h${h} wrote no subnet.env`);
          await sleep(100);
        }
      }
      for (let n = 0; n < NAMESPACES; n++) await weftctl(['ns', 'create', `ns${n}`, `team=t${n % 3}`]);
      phase(`${HOSTS} hosts with weftd, ${NAMESPACES} namespaces`);

      // Fake pods: records in each host's records directory, as the weft plugin writes them.
      const t0 = performance.now();
      for (let i = 0; i < nEndpoints; i++) {
        const h = i % HOSTS;
        const rdir = endpointRecordDir(subnetFile(h));
        mkdirSync(rdir, { recursive: true });
        const ip = formatIP(nthAddress(subnets[h]!, 10n + BigInt(Math.floor(i / HOSTS))));
        const rec: EndpointRecord = { containerID: `fake${i}`, ifname: 'eth0', namespace: `ns${i % NAMESPACES}`, pod: `pod${i}`, labels: { app: `a${i % 7}`, tier: `x${i % 5}` }, ips: [ip] };
        writeFileSync(endpointRecordFile(rdir, rec.containerID, rec.ifname), JSON.stringify(rec));
      }
      const untilEndpoints = async (n: number) => {
        while ((await kv.list(ENDPOINTS)).length < n) {
          if (performance.now() - t0 > ENFORCE_TIMEOUT_MS) throw new Error(`fewer than ${n} endpoints published after ${ENFORCE_TIMEOUT_MS} ms`);
          await sleep(20);
        }
      };
      await untilEndpoints(nEndpoints);
      const publishMs = performance.now() - t0;
      phase(`${nEndpoints} endpoint records published in ${publishMs.toFixed(0)} ms`);

      // Two real pods (bin/cni/weft) on h0 and h1 for the throughput runs.
      const pod = async (h: number, name: string) => {
        const n = pool.make();
        const conf = { cniVersion: '1.0.0', name: 'wpbnet', type: 'weft', subnetFile: subnetFile(h), dataDir: join(dir, `h${h}`, 'state'), ipam: { type: 'weft-ipam', dataDir: join(dir, `h${h}`, 'ipam') }, delegate: { bridge: 'wpbbr0' } };
        const r = await inNs(hostNs(h), [WEFT], { CNI_COMMAND: 'ADD', CNI_CONTAINERID: `wpb-${name}`, CNI_NETNS: n.path, CNI_IFNAME: 'eth0', CNI_ARGS: `K8S_POD_NAMESPACE=ns0;K8S_POD_NAME=${name}` }, JSON.stringify(conf));
        if (r.status !== 0) throw new Error(`ADD ${name}: ${r.stdout}${r.stderr}`);
        return { ns: n.name, ip: (JSON.parse(r.stdout) as { ips: { address: string }[] }).ips[0]!.address.split('/')[0]! };
      };
      const server = await pod(1, 'iperf-server');
      const client = await pod(0, 'iperf-client');
      await untilEndpoints(nEndpoints + 2);
      const srv = spawn('ip', ['netns', 'exec', server.ns, 'iperf3', '-s'], { env: env(), stdio: 'ignore' });
      procs.push(srv);

      // What the hosts must end up with, computed before each change so the clock only runs
      // while the agents work.
      // The agents' world as the store holds it once every endpoint is in (a listing that lost
      // one would make every expected shape wrong).
      let world: PolicyWorld;
      for (;;) {
        const loaded = await loadPolicyWorld(kv);
        if (loaded.skipped.length > 0) throw new Error(`store entries that do not parse: ${JSON.stringify(loaded.skipped.slice(0, 3))}`);
        if (loaded.world.endpoints.length === nEndpoints + 2) { world = loaded.world; break; }
        if (performance.now() - t0 > ENFORCE_TIMEOUT_MS) throw new Error(`the store holds ${loaded.world.endpoints.length} endpoints, expected ${nEndpoints + 2}`);
        await sleep(20);
      }
      phase(`world: ${world.endpoints.length} endpoints, ${world.namespaces.length} namespaces`);
      const targets = subnets.map((subnet, h) => ({ name: `h${h}`, subnet }));
      const wantFor = (w: PolicyWorld) => EnforcementProbe.wantFor(w, targets);
      const waitEnforced = (want: (string | null)[], start: number) => probe.waitEnforced(want, start);
      const rows: string[] = [];
      const row = (what: string, ms: number[], extra = '') => {
        rows.push(`| ${what} | **${Math.max(...ms).toFixed(0)}** | ${ms.map((x) => x.toFixed(0)).join(' / ')} | ${extra} |`);
        phase(`${what}: ${ms.map((x) => x.toFixed(0)).join(' / ')} ms`);
      };
      const withPolicies = (objs: unknown[]): PolicyWorld => addPolicies(world, objs);
      const applyTimed = async (what: string, objs: unknown[], input: unknown) => {
        const next = withPolicies(objs);
        const want = wantFor(next);
        const start = performance.now();
        let cliMs = 0;
        const cli = weftctl(['policy', 'apply', '-f', '-'], JSON.stringify(input)).then(() => { cliMs = performance.now() - start; });
        const ms = await waitEnforced(want, start);
        await cli;
        world = next;
        row(what, ms, `weftctl exited after ${cliMs.toFixed(0)} ms`);
      };

      const objs = policyObjects(nPolicies + 1, NAMESPACES);
      const compileStart = performance.now();
      wantFor(withPolicies(objs.slice(0, nPolicies)));
      const compileMs = (performance.now() - compileStart) / HOSTS;
      await applyTimed(`${nPolicies} policies applied at once (\`weftctl policy apply\`, one List)`, objs.slice(0, nPolicies), { apiVersion: 'v1', kind: 'List', items: objs.slice(0, nPolicies) });
      await applyTimed('one more policy (new chains: table replaced)', objs.slice(nPolicies), objs[nPolicies]);
      {
        const rec: EndpointRecord = { containerID: 'fakeextra', ifname: 'eth0', namespace: 'ns0', pod: 'extra', labels: { app: 'a0', tier: 'x0' }, ips: [formatIP(nthAddress(subnets[0]!, 900n))] };
        const next = { ...world, endpoints: [...world.endpoints, recordToEndpoint('h0', rec)!] };
        const want = wantFor(next);
        const start = performance.now();
        writeFileSync(endpointRecordFile(endpointRecordDir(subnetFile(0)), rec.containerID, rec.ifname), JSON.stringify(rec));
        row('one more endpoint record on h0 (standalone ADD path: dir watch → publish → element updates on all hosts)', await waitEnforced(want, start));
        world = next;
      }
      // The pod pair: the server is selected (ingress from its namespace on 5201), so its packets
      // meet the vmap lookups and a chain on h1; the client's are looked up on h0.
      const iperfPolicy = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: 'ns0', name: 'iperf' }, spec: { podSelector: { matchLabels: {} }, ingress: [{ from: [{ podSelector: {} }], ports: [{ protocol: 'TCP', port: 5201 }] }] } };
      await applyTimed('one policy selecting every pod of ns0 (new chains: table replaced)', [iperfPolicy], iperfPolicy);

      // Throughput rounds: every round runs both states, in alternating order (ABBA), so a drift
      // in the machine's load does not favour either. Between states the policies are deleted
      // from / written back to the store, and each switch is timed like the changes above.
      const allPolicies = [...storedPolicies([...objs, iperfPolicy])];
      const loaded = world;
      const none: PolicyWorld = { ...world, policies: [] };
      const deleteMs: number[] = [];
      const restoreMs: number[] = [];
      let policiesOn = true;
      const setPolicies = async (on: boolean) => {
        if (on === policiesOn) return;
        const want = wantFor(on ? loaded : none);
        const start = performance.now();
        const writes = (async () => {
          for (const [key, { json }] of allPolicies) if (on) await kv.put(key, json); else await kv.delete(key);
        })();
        const ms = Math.max(...(await waitEnforced(want, start)));
        await writes;
        (on ? restoreMs : deleteMs).push(ms);
        policiesOn = on;
      };
      const iperf = async (secs: number): Promise<number> => {
        const r = await inNs(client.ns, ['iperf3', '-c', server.ip, '-t', String(secs), '-O', '1', '-J', '--connect-timeout', '3000'], {}, '', (secs + 30) * 1000);
        const out = (() => { try { return JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } }; } catch { return {}; } })();
        const bps = out.end?.sum_received?.bits_per_second;
        if (r.status !== 0 || bps === undefined) {
          const ping = (await inNs(client.ns, ['ping', '-c1', '-W1', server.ip])).status === 0 ? 'answers' : 'does not answer';
          throw new Error(`iperf3 ${client.ip} → ${server.ip} (ping ${ping}) exited ${r.status}: ${out.error ?? r.stdout.slice(0, 300)}${r.stderr}`);
        }
        return bps / 1e9;
      };
      await iperf(1); // warm-up (ARP, neighbours, caches): not counted
      const gbps: Record<'on' | 'off', number[]> = { on: [], off: [] };
      for (let r = 0; r < rounds; r++) {
        for (const on of r % 2 === 0 ? [true, false] : [false, true]) {
          await setPolicies(on);
          gbps[on ? 'on' : 'off'].push(await iperf(seconds));
        }
        phase(`round ${r + 1}: with ${gbps.on.at(-1)!.toFixed(2)}, without ${gbps.off.at(-1)!.toFixed(2)} Gbit/s`);
      }
      await setPolicies(false);
      const ratios = gbps.on.map((x, i) => x / gbps.off[i]!);
      const ratio = median(gbps.on) / median(gbps.off);
      const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
      phase('done');

      const total = nPolicies + 2;
      const markdown = `# bench policy

${HOSTS} hosts (weftd each, vxlan, file store in /dev/shm), ${nEndpoints} fake endpoints (records in the hosts' records
directories, all published by the three weftds ${publishMs.toFixed(0)} ms after the files were written), ${nPolicies} policies
(${NAMESPACES} namespaces; ingress with namespace AND pod selectors plus same-namespace peers, numeric ports and an endPort
range; every fourth an egress policy). "Enforced" is read from each host's kernel: \`nft monitor\` timestamps every
committed transaction, and after each commit the \`inet weft-policy\` table is listed (\`nft -j list\`); the time is that
of the commit after which the listing first showed exactly the set element and chain rule counts the compiled policy
predicts (expected shapes computed before the clock starts); a commit's time is when its first notification arrived.
The monitors are not free: each whole-table replace makes the kernel send and \`nft monitor\` print some 7000 lines. Compiling one host's table for ${nPolicies} policies and
${nEndpoints} endpoints takes ${compileMs.toFixed(0)} ms in this process.

| change | ms until enforced on all ${HOSTS} hosts | h0 / h1 / h2 | |
|---|---|---|---|
${rows.join('\n')}
| all ${total} policies deleted from the store (tables removed; median of ${deleteMs.length}) | **${median(deleteMs).toFixed(0)}** | range ${range(deleteMs)} | |
| all ${total} policies written back to the store (median of ${restoreMs.length}) | **${median(restoreMs).toFixed(0)}** | range ${range(restoreMs)} | |

iperf3 TCP, pod on h0 → pod on h1 over vxlan, ${rounds} rounds of ${seconds} s runs (first second of each omitted),
with and without policies in alternating order. With policies both pods are in \`ns0\`; the server is selected by
\`ns0/iperf\`, so the first packet of the connection goes through the address vmaps and a chain on both hosts; the rest of
the flow is accepted by the conntrack rule at the head of the forward chain.

| iperf3 | median Gbit/s | range |
|---|---|---|
| no policies | ${median(gbps.off).toFixed(2)} | ${range(gbps.off)} |
| ${total} policies loaded, server pod selected | ${median(gbps.on).toFixed(2)} | ${range(gbps.on)} |
| ratio of medians | **${ratio.toFixed(3)}** (target ≥ 0.95) | per round ${ratios.map((x) => x.toFixed(3)).join(', ')} |

Whole run: ${((performance.now() - benchStart) / 1000).toFixed(0)} s.
`;
      return { markdown };
    } finally {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      await kv.close();
      // weftd gets a moment to stop cleanly before the forced kill in cleanup().
      for (const p of procs) if (p.pid !== undefined && p.exitCode === null) { try { process.kill(p.pid, 'SIGTERM'); } catch { /* gone */ } }
      await sleep(300);
      cleanup();
      phase('cleaned up');
    }
  },
};

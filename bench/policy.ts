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
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Topology } from '../src/lab/topology.js';
import { NetnsPool } from '../src/netns/testing.js';
import { type Cidr, formatIP, networkOf, nthAddress, parseCidr } from '../src/net/ip.js';
import { compilePolicies, expectedShape, type TableShape } from '../src/policy/compile.js';
import { shapeOfListing } from '../src/policy/enforcer.js';
import { type EndpointRecord, endpointRecordDir, endpointRecordFile, recordToEndpoint } from '../src/policy/endpoint-record.js';
import { type NetworkPolicy, type PolicyWorld, parsePolicy } from '../src/policy/model.js';
import { ENDPOINTS, loadPolicyWorld, policyKey } from '../src/policy/store.js';
import { FileKeyValueStore } from '../src/store/kv.js';
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

interface Ran { readonly status: number | null; readonly stdout: string; readonly stderr: string }

/**
 * Runs a command inside a namespace without blocking the event loop: the nft monitors' lines are
 * timestamped as they arrive, so nothing here may stall while a change is being measured.
 */
function inNs(ns: string, argv: string[], extraEnv: NodeJS.ProcessEnv = {}, input = '', timeoutMs = 120_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], { env: { ...env(), ...extraEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    p.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (err) => { clearTimeout(timer); reject(err); });
    p.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
    p.stdin.end(input);
  });
}

/**
 * Commit times of the nft transactions in one namespace, from `nft monitor`: the kernel sends a
 * transaction's notifications once its new generation is live, and ends them with a "# new
 * generation" line. The time kept is that of the transaction's first line: the monitor takes a
 * while to print thousands of element lines, and the last one would add that delay to the result.
 */
class CommitWatch {
  readonly commits: number[] = [];
  private waiters: (() => void)[] = [];
  private batchStart: number | undefined;

  constructor(readonly proc: ChildProcess) {
    if (!proc.stdout) throw new Error('nft monitor without a stdout pipe');
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const now = performance.now();
      this.batchStart ??= now;
      if (!line.startsWith('# new generation')) return;
      this.commits.push(this.batchStart);
      this.batchStart = undefined;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Resolves at the next commit, or after timeoutMs. */
  next(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.waiters.push(() => { clearTimeout(t); resolve(); });
    });
  }
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The first set or chain whose count differs, for a failure message. */
function shapeDifference(want: string | null, got: string | null): string {
  if (want === null || got === null) return `kernel ${got === null ? 'has no table' : 'has a table'}, wanted ${want === null ? 'none' : 'one'}`;
  const w = JSON.parse(want) as TableShape;
  const g = JSON.parse(got) as TableShape;
  const out: string[] = [];
  for (const kind of ['sets', 'chains'] as const) {
    for (const name of new Set([...Object.keys(w[kind]), ...Object.keys(g[kind])])) {
      if (w[kind][name] !== g[kind][name]) out.push(`${name}: kernel ${g[kind][name] ?? 'absent'}, want ${w[kind][name] ?? 'absent'}`);
    }
  }
  return out.slice(0, 8).join('; ');
}

function sortShape(s: TableShape): unknown {
  const sort = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : 1)));
  return { sets: sort(s.sets), chains: sort(s.chains) };
}

/** Policy objects as stored, by store key (what `weftctl policy apply` writes). */
function storedPolicies(objs: unknown[]): Map<string, { policy: NetworkPolicy; json: string }> {
  const out = new Map<string, { policy: NetworkPolicy; json: string }>();
  for (const o of objs) {
    const policy = parsePolicy(o);
    out.set(policyKey(policy.namespace, policy.name), { policy, json: JSON.stringify(o) });
  }
  return out;
}

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
    const kv = new FileKeyValueStore(join(dir, 'store'), '/weft/network');
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
      const monitors: CommitWatch[] = [];
      for (let h = 0; h < HOSTS; h++) {
        const m = spawn('ip', ['netns', 'exec', hostNs(h), 'nft', 'monitor'], { env: env(), stdio: ['ignore', 'pipe', 'ignore'] });
        procs.push(m);
        monitors.push(new CommitWatch(m));
      }
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
      const wantFor = (w: PolicyWorld): (string | null)[] => Array.from({ length: HOSTS }, (_, h) => (w.policies.length === 0 ? null
        : JSON.stringify(sortShape(expectedShape(compilePolicies(w, `h${h}`, { subnets: [subnets[h]!], extraKnown: [] }))))));
      const kernelShape = async (h: number): Promise<string | null> => {
        const r = await inNs(hostNs(h), ['nft', '-j', 'list', 'table', 'inet', 'weft-policy']);
        return r.status === 0 ? JSON.stringify(sortShape(shapeOfListing((JSON.parse(r.stdout) as { nftables: unknown[] }).nftables))) : null;
      };
      /**
       * Per host, ms from `start` to the commit after which the kernel's table first listed
       * exactly the wanted shape. The table is read after every commit; a listing counts only if
       * no further commit landed while it ran, so the time is never earlier than the truth.
       */
      const waitEnforced = async (want: (string | null)[], start: number): Promise<number[]> => {
        const at: (number | undefined)[] = want.map(() => undefined);
        const checked = want.map(() => -1);
        for (;;) {
          await Promise.all(want.map(async (w, h) => {
            const mon = monitors[h]!;
            if (at[h] !== undefined || checked[h] === mon.commits.length) return;
            const seen = mon.commits.length;
            checked[h] = seen;
            const got = await kernelShape(h);
            if (got === w && mon.commits.length === seen) at[h] = Math.max(0, (mon.commits[seen - 1] ?? start) - start);
          }));
          if (at.every((x) => x !== undefined)) return at as number[];
          if (performance.now() - start > ENFORCE_TIMEOUT_MS) {
            const late = at.flatMap((x, h) => (x === undefined ? [h] : []));
            const detail = await Promise.all(late.map(async (h) => `h${h}: ${shapeDifference(want[h] ?? null, await kernelShape(h))}\n  weftd warnings:\n${logTail(h)}`));
            throw new Error(`policies not enforced within ${ENFORCE_TIMEOUT_MS} ms on ${late.map((h) => `h${h}`).join(', ')}\n${detail.join('\n')}`);
          }
          await Promise.race(monitors.filter((_, h) => at[h] === undefined).map((m) => m.next(250)));
        }
      };
      const rows: string[] = [];
      const row = (what: string, ms: number[], extra = '') => {
        rows.push(`| ${what} | **${Math.max(...ms).toFixed(0)}** | ${ms.map((x) => x.toFixed(0)).join(' / ')} | ${extra} |`);
        phase(`${what}: ${ms.map((x) => x.toFixed(0)).join(' / ')} ms`);
      };
      const withPolicies = (objs: unknown[]): PolicyWorld => {
        const byKey = new Map(world.policies.map((p) => [policyKey(p.namespace, p.name), p]));
        for (const [key, { policy }] of storedPolicies(objs)) byKey.set(key, policy);
        return { ...world, policies: [...byKey.values()] };
      };
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

      const objs = policyObjects(nPolicies + 1);
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

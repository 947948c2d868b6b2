// `lab bench`: iperf3 between containers on different hosts, next to the same measurement on
// the raw underlay (host eth0 → bridge → host eth0, no weft at all). Servers are one-shot
// (`iperf3 -s -1`) inside lab namespaces, so a crash leaves nothing that down would not find.
import { spawn } from 'node:child_process';
import { CniCode, WeftError } from '../errors.js';
import { cleanEnv, execIn } from './exec.js';
import type { LabRecord } from './state.js';

export interface IperfResult {
  readonly gbps: number;
  readonly retransmits: number;
  readonly seconds: number;
  /** Payload bytes the client sent (iperf3's end.sum_sent.bytes; without the -O seconds). */
  readonly sentBytes: number;
}

const IPERF_PORT = 5201;

export interface IperfOptions {
  /**
   * CPUs for the client and the server (iperf3 -A). Comparisons pin both sides of every run the
   * same way: on a small machine where the scheduler puts the two processes (and with veths the
   * sender's softirq work) decides more of the result than the path does.
   */
  readonly affinity?: { readonly client: number; readonly server: number };
  /** Seconds at the start left out of the result (iperf3 -O): TCP's slow start. */
  readonly omitSeconds?: number;
}

/** One single-stream TCP iperf3 run from clientNs to `target` (a server started in serverNs). */
export async function iperf(serverNs: string, clientNs: string, target: string, seconds: number, opts: IperfOptions = {}): Promise<IperfResult> {
  const serverPin = opts.affinity ? ['-A', String(opts.affinity.server)] : [];
  const clientPin = opts.affinity ? ['-A', String(opts.affinity.client)] : [];
  const omit = opts.omitSeconds ? ['-O', String(opts.omitSeconds)] : [];
  const server = spawn('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '--forceflush', '--idle-timeout', '30', '-p', String(IPERF_PORT), ...serverPin], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv() });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new WeftError(CniCode.Timeout, `iperf3 server in ${serverNs} did not start: ${out}`)), 5000);
      server.stdout.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (out.includes('Server listening')) { clearTimeout(timer); resolve(); }
      });
      server.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
      server.once('exit', (code) => { clearTimeout(timer); reject(new WeftError(CniCode.Internal, `iperf3 server in ${serverNs} exited ${code}: ${out}`)); });
    });
    const r = await execIn(clientNs, ['iperf3', '-c', target, '-p', String(IPERF_PORT), '-t', String(seconds), ...omit, ...clientPin, '-J'], { timeoutMs: (seconds + (opts.omitSeconds ?? 0) + 15) * 1000 });
    let j: { error?: string; end?: { sum_received?: { bits_per_second?: number; seconds?: number }; sum_sent?: { retransmits?: number; bytes?: number } } };
    try {
      j = JSON.parse(r.stdout) as typeof j;
    } catch {
      throw new WeftError(CniCode.Internal, `iperf3 ${clientNs} → ${target}: ${r.stderr.trim() || r.stdout.trim()}`);
    }
    if (j.error !== undefined || j.end?.sum_received?.bits_per_second === undefined) {
      throw new WeftError(CniCode.Internal, `iperf3 ${clientNs} → ${target}: ${j.error ?? 'no result'}`);
    }
    return { gbps: j.end.sum_received.bits_per_second / 1e9, retransmits: j.end.sum_sent?.retransmits ?? 0, seconds: j.end.sum_received.seconds ?? seconds, sentBytes: j.end.sum_sent?.bytes ?? 0 };
  } finally {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  }
}

export interface BenchRow {
  readonly path: string;
  readonly from: string;
  readonly to: string;
  readonly result: IperfResult;
}

export interface BenchReport {
  readonly lab: string;
  readonly backend: string;
  /** The address family both paths were measured over. */
  readonly family: 4 | 6;
  readonly pod: BenchRow;
  readonly raw: BenchRow;
  /** pod throughput / raw underlay throughput. */
  readonly ratio: number;
}

/** Container → container across hosts and host → host, over IPv4 or (`family` 6) IPv6. */
export async function labBench(rec: LabRecord, seconds = 2, family: 4 | 6 = rec.ipv6 === 'only' ? 6 : 4): Promise<BenchReport> {
  const a = rec.containers.find((c) => c.host === 0);
  const b = rec.containers.find((c) => c.host === 1);
  const h0 = rec.hostList[0];
  const h1 = rec.hostList[1];
  if (!a || !b || !h0 || !h1 || b.ip === undefined) throw new WeftError(CniCode.InvalidEnvironment, `bench needs containers on at least 2 hosts (lab ${rec.name} has ${rec.hosts} host(s))`);
  // In an IPv6-only lab the primary addresses are the IPv6 ones.
  const target = family === 6 && rec.ipv6 === 'dual' ? b.ip6 : b.ip;
  const hostTarget = family === 6 ? h1.ip6 : h1.ip;
  if (target === undefined || hostTarget === undefined || (family === 6 && !rec.ipv6)) {
    throw new WeftError(CniCode.InvalidEnvironment, `lab ${rec.name} has no IPv${family} addresses to bench (lab up --ipv6 dual|only)`);
  }
  const pod = await iperf(b.ns, a.ns, target, seconds);
  const raw = await iperf(h1.ns, h0.ns, hostTarget, seconds);
  return {
    lab: rec.name, backend: rec.backend, family,
    pod: { path: `container → container (${rec.backend})`, from: a.name, to: b.name, result: pod },
    raw: { path: 'host → host (raw underlay veth + bridge)', from: 'h0', to: 'h1', result: raw },
    ratio: raw.gbps > 0 ? pod.gbps / raw.gbps : 0,
  };
}

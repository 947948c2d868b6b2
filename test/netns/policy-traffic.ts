// Traffic for the policy suites, shared by the file-store and the kube suites: echo servers and
// probes (policy-probe.js) run inside namespaces, and the cells their truth tables print.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { cleanEnv } from './agent-harness.js';

export const PROBE = fileURLToPath(new URL('./policy-probe.js', import.meta.url));

export type ProbeProto = 'tcp' | 'udp' | 'icmp';

export interface ProbeTarget {
  readonly ip: string;
  readonly proto: ProbeProto;
  /** Ignored for ICMP. */
  readonly port: number;
  /** Source address to bind (the namespace must hold it). */
  readonly from?: string;
}

export interface ProbeResult extends ProbeTarget {
  readonly ok: boolean;
}

/**
 * Echo servers on TCP and UDP ports inside `netns`, resolved once all listen. The child goes into
 * `children` at once, so a caller's clean-up kills it even when it never became ready.
 */
export function serveIn(netns: string, children: ChildProcess[], tcp: readonly number[], udp: readonly number[] = [], udpAddrs: readonly string[] = []): Promise<void> {
  const p = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'serve', tcp.join(','), udp.join(','), udpAddrs.join(',')], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(p);
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(l))));
    p.once('exit', (code) => reject(new Error(`server in ${netns} exited ${code}`)));
  });
}

/** Every target probed at once from inside `netns`; a probe without an answer in timeoutMs failed. */
export function probeFrom(netns: string, targets: readonly ProbeTarget[], timeoutMs = 500): Promise<ProbeResult[]> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', netns, process.execPath, PROBE, 'probe', JSON.stringify(targets)], { env: cleanEnv({ PROBE_TIMEOUT_MS: String(timeoutMs) }), stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as ProbeResult[]) : reject(new Error(`probe in ${netns} exited ${code}`))));
  });
}

/** A truth-table cell: one character per check, + open, . blocked. */
export const cell = (bits: readonly boolean[]): string => bits.map((b) => (b ? '+' : '.')).join('');

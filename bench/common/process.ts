// Small helpers the namespace benchmarks share: clocks, child processes, /proc readings and
// order statistics. Nothing here knows about weft.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Wall-clock ms with sub-ms precision, comparable across processes (helpers print these). */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * The environment for child processes: NODE_EXTRA_CA_CERTS costs every Node start ~45 ms on
 * these machines (shared/ANCHORS.md) and would be charged to whatever is being timed.
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

export function rssMB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * CPU seconds (user + system) a process has used so far, from /proc/PID/stat. The command name
 * (field 2) may hold spaces, so fields are counted after its closing parenthesis.
 */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}
/** USER_HZ: 100 on every Linux this runs on (sysconf(_SC_CLK_TCK) is not reachable from Node). */
const CLOCK_TICKS = 100;

export function readFileSafe(p: string): string | undefined {
  try { return readFileSync(p, 'utf8'); } catch { return undefined; }
}

/** SIGTERM, SIGKILL after graceMs; resolves once the process is gone. */
export async function stopProcess(proc: ChildProcess | undefined, graceMs = 5000): Promise<void> {
  if (!proc || proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  const done = new Promise((r) => proc.once('exit', r));
  process.kill(proc.pid, 'SIGTERM');
  const t = setTimeout(() => { if (proc.exitCode === null && proc.signalCode === null) process.kill(proc.pid!, 'SIGKILL'); }, graceMs);
  await done;
  clearTimeout(t);
}

export interface Ran { readonly status: number | null; readonly stdout: string; readonly stderr: string }

/**
 * Runs a command inside a namespace without blocking the event loop: monitors' lines are
 * timestamped as they arrive, so nothing may stall while a change is being measured.
 */
export function inNs(ns: string, argv: string[], env: NodeJS.ProcessEnv = cleanEnv(), input = '', timeoutMs = 120_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    p.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('error', (err) => { clearTimeout(timer); reject(err); });
    p.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
    p.stdin.on('error', () => { /* the command may exit without reading its input */ });
    p.stdin.end(input);
  });
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Nearest-rank percentile: with 25 samples p99 is the largest. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/**
 * Cleanups to run when the bench is interrupted (SIGINT / SIGTERM) while a measurement holds
 * namespaces, detached control-plane processes or temp dirs: finally blocks do not run on a
 * signal. Returns the function that unregisters it (call it in the finally that cleans up).
 */
export function onInterrupt(cleanup: () => Promise<void> | void): () => void {
  interruptCleanups.add(cleanup);
  if (interruptCleanups.size === 1) {
    process.once('SIGINT', interrupted);
    process.once('SIGTERM', interrupted);
  }
  return () => {
    interruptCleanups.delete(cleanup);
    if (interruptCleanups.size === 0) {
      process.removeListener('SIGINT', interrupted);
      process.removeListener('SIGTERM', interrupted);
    }
  };
}
const interruptCleanups = new Set<() => Promise<void> | void>();

function interrupted(sig: NodeJS.Signals): void {
  process.stderr.write(`bench: ${sig}, cleaning up\n`);
  // Newest first: a measurement's processes go before the namespaces they live in.
  const all = [...interruptCleanups].reverse();
  interruptCleanups.clear();
  void (async () => {
    for (const c of all) {
      try { await c(); } catch (err) { process.stderr.write(`bench cleanup: ${err instanceof Error ? err.message : String(err)}\n`); }
    }
    process.exit(sig === 'SIGINT' ? 130 : 143);
  })();
}

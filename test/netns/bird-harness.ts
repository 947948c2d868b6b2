// A real BIRD 2 for the BGP interop suites (bgp-bird: IPv4, bgp-bird6: MP-BGP): two throwaway
// namespaces joined by a veth pair, `…r` for BIRD and `…h` for weft's side, and a temporary
// directory for BIRD's config, control socket and pid file. The suite gives the addresses and the
// config; close() takes down what was started here (children by PID, then BIRD, then the
// namespaces and the directory), each step on its own, so one failure cannot leave the rest behind.
import { type ChildProcess, type StdioOptions, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanEnv, killChildren } from './agent-harness.js';

export interface BirdPair {
  /** BIRD's namespace and its end of the link. */
  readonly nsR: string;
  readonly devR: string;
  /** weft's namespace and its end of the link. */
  readonly nsH: string;
  readonly devH: string;
  /** ip(8) from the runner: `ip -n NS …` for anything inside the two namespaces. */
  ip(...args: string[]): string;
  /** birdc on BIRD's control socket; throws when BIRD does not answer. */
  birdc(...args: string[]): string;
  /** Both namespaces and the veth pair between them, links still down and without addresses. */
  link(): void;
  /** Writes bird.conf, starts BIRD in nsR and waits for its control socket. */
  startBird(config: string): Promise<void>;
  /** `ip netns exec nsH argv…`, NODE_EXTRA_CA_CERTS dropped; close() kills it if it still runs. */
  spawnInHost(argv: readonly string[], env: Record<string, string>, stdio: StdioOptions): ChildProcess;
  close(): Promise<void>;
}

/** Names (`PREFIX` + 6 random characters + r/h/a/b) and the directory; nothing in the kernel yet. */
export function birdPair(prefix: string): BirdPair {
  const suffix = Math.random().toString(36).slice(2, 8).padEnd(6, '0');
  const nsR = `${prefix}${suffix}r`;
  const nsH = `${prefix}${suffix}h`;
  const devR = `${prefix}${suffix}a`;
  const devH = `${prefix}${suffix}b`;
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-bird-`));
  const sockPath = join(dir, 'bird.ctl');
  let bird: ChildProcess | undefined;
  const children = new Set<ChildProcess>();

  const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
  const birdc = (...args: string[]): string => execFileSync('birdc', ['-s', sockPath, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

  return {
    nsR, devR, nsH, devH, ip, birdc,
    link() {
      ip('netns', 'add', nsR);
      ip('netns', 'add', nsH);
      ip('link', 'add', devR, 'netns', nsR, 'type', 'veth', 'peer', 'name', devH, 'netns', nsH);
    },
    async startBird(config) {
      writeFileSync(join(dir, 'bird.conf'), config);
      bird = spawn('ip', ['netns', 'exec', nsR, 'bird', '-f', '-c', join(dir, 'bird.conf'), '-s', sockPath, '-P', join(dir, 'bird.pid')], { stdio: ['ignore', 'ignore', 'pipe'] });
      let birdErr = '';
      bird.stderr?.on('data', (c: Buffer) => { birdErr += c.toString(); });
      await waitFor('BIRD control socket', () => { try { birdc('show', 'status'); return true; } catch { return false; } }, 10000, () => birdErr);
    },
    spawnInHost(argv, env, stdio) {
      const proc = spawn('ip', ['netns', 'exec', nsH, ...argv], { env: cleanEnv(env), stdio });
      children.add(proc);
      return proc;
    },
    async close() {
      killChildren(children);
      if (running(bird)) {
        const b = bird;
        try { process.kill(b.pid, 'SIGTERM'); } catch { /* already gone */ }
        await new Promise<void>((r) => { b.once('exit', () => r()); setTimeout(r, 3000).unref(); });
        if (running(b)) { try { process.kill(b.pid, 'SIGKILL'); } catch { /* already gone */ } }
      }
      for (const ns of [nsR, nsH]) spawnSync('ip', ['netns', 'del', ns]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const running = (c: ChildProcess | undefined): c is ChildProcess & { pid: number } =>
  c?.pid !== undefined && c.exitCode === null && c.signalCode === null;

/** Polls `cond` every 50 ms; on timeout the error names `what` and, if given, `detail()`. */
export async function waitFor(what: string, cond: () => boolean, ms = 10000, detail?: () => string): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${detail ? `: ${detail()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// weft: the meta plugin runtimes call (flannel's CNI plugin, done better). It first offers the
// call to weftd over its local socket — the agent has everything loaded and warm — and only when
// no weftd takes it does the work itself. This module stays small on purpose: the standalone
// plugin (zod, netlink, weft-bridge) is imported lazily, so a fast-path call never loads it.
//
// Retry rule when weftd took a request but gave no answer (it died or wedged mid-call):
// - ADD is not redone here. weftd may have wired the pod half way or completely; a second ADD
//   would fail on the existing interface or, worse, race a restarted weftd. The runtime gets
//   code 11 ("try again later"), calls DEL as the spec requires after a failed ADD (DEL is
//   tolerant and runs from the config saved before the delegate started), then retries ADD.
// - DEL, CHECK, STATUS and GC are idempotent, so they are simply done locally.
// A request that never reached weftd (no socket, refused, connect timeout) is always done
// locally: nothing can have happened yet. The same rule holds when the native front of
// bin/cni/weft tried the socket and relays what happened (WEFT_CNI_FASTPATH_OUTCOME).
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { FASTPATH_OUTCOME_ENV, callFastPath, fastPathEnv, fastPathSocketFor, relayedOutcome } from '../../cni/fastpath-client.js';
import { CniCode } from '../../errors.js';
import { createLogger } from '../../log.js';

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** The spec's error object in the caller's version, without loading the CNI toolkit. */
function lostAddError(stdin: string, reason: string): string {
  let version = '1.1.0';
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    if (typeof v === 'string') version = v;
  } catch {
    // unparseable config: answer in the latest version
  }
  return JSON.stringify({
    cniVersion: version,
    code: CniCode.TryAgainLater,
    msg: 'weftd took the ADD request but gave no answer',
    details: `${reason}; run DEL for this container, then ADD again`,
  }) + '\n';
}

function print(out: { stdout: string; exitCode: number }): void {
  if (out.stdout) process.stdout.write(out.stdout);
  process.exitCode = out.exitCode;
}

/** The binary's main: fast path first, standalone fallback. */
export async function runWeftPlugin(): Promise<void> {
  const argv = process.argv.slice(2);
  const command = process.env.CNI_COMMAND;
  const wantsHelp = argv.length > 0 || !command || (command === 'VERSION' && process.stdin.isTTY);
  if (wantsHelp || command === 'VERSION') {
    const [{ runPlugin }, { weftPlugin }, { standalonePluginHost }] = await Promise.all([import('../../cni/skel.js'), import('./standalone.js'), import('../pkg/host.js')]);
    await runPlugin(weftPlugin, standalonePluginHost);
    return;
  }
  const stdin = await readStdin();
  // The native front (native/cni_client.c) may already have tried the socket: never twice.
  const relayed = relayedOutcome(process.env);
  delete process.env[FASTPATH_OUTCOME_ENV];
  const socket = relayed ? undefined : await fastPathSocketFor(stdin);
  const outcome = relayed ?? (socket !== undefined ? await callFastPath(socket, { env: fastPathEnv(process.env), stdin }) : undefined);
  if (outcome !== undefined) {
    const log = createLogger({ plugin: 'weft', cmd: command });
    switch (outcome.kind) {
      case 'answered':
        print(outcome);
        return;
      case 'lost':
        log.warn('weftd took the request but gave no answer', { ...(socket !== undefined && { socket }), reason: outcome.reason });
        if (command === 'ADD') {
          print({ stdout: lostAddError(stdin, outcome.reason), exitCode: 1 });
          return;
        }
        break;
      case 'unavailable':
        log.debug('fast path unavailable, working standalone', { ...(socket !== undefined && { socket }), reason: outcome.reason });
        break;
    }
  }
  const [{ runWeftLocally }, { standalonePluginHost }] = await Promise.all([import('./standalone.js'), import('../pkg/host.js')]);
  print(await runWeftLocally(process.env, stdin, standalonePluginHost));
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  void runWeftPlugin();
}

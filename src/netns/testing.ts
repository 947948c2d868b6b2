// Test support: throwaway named namespaces with unique names, and the kernel's own view through
// iproute2's JSON output. Every namespace made here is removed by cleanup() (or the returned
// disposer), even when the test failed half way.

import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createNamedNetns, deleteNamedNetns, netnsPath } from './netns.js';

export interface TestNetns {
  readonly name: string;
  readonly path: string;
  /** Deletes the namespace (idempotent). Links inside it vanish with it. */
  remove(): void;
}

/** A uniquely named namespace: `${prefix}-${random}` (prefix keeps helpers' tests apart). */
export function makeTestNetns(prefix: string): TestNetns {
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  const path = createNamedNetns(name);
  let removed = false;
  return {
    name,
    path,
    remove() {
      if (removed) return;
      removed = true;
      deleteNamedNetns(name);
    },
  };
}

/** Collects namespaces for a suite; call cleanup() from `after`/`afterEach`. */
export class NetnsPool {
  private readonly prefix: string;
  private readonly made: TestNetns[] = [];

  constructor(prefix: string) {
    this.prefix = prefix;
  }

  make(): TestNetns {
    const ns = makeTestNetns(this.prefix);
    this.made.push(ns);
    return ns;
  }

  cleanup(): void {
    const errors: unknown[] = [];
    for (const ns of this.made.splice(0)) {
      try {
        ns.remove();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'could not remove every test namespace');
  }
}

function run(cmd: string, args: readonly string[]): string {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(cmd, args, { encoding: 'utf8', env });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** `ip -n NS -json ARGS…` parsed; the kernel's view for assertions. */
export function ipJson<T = unknown>(ns: string, args: readonly string[]): T {
  netnsPath(ns);
  const out = run('ip', ['-n', ns, '-json', ...args]).trim();
  return (out === '' ? [] : JSON.parse(out)) as T;
}

/** `bridge -n NS -json ARGS…` parsed. */
export function bridgeJson<T = unknown>(ns: string, args: readonly string[]): T {
  netnsPath(ns);
  const out = run('bridge', ['-n', ns, '-json', ...args]).trim();
  return (out === '' ? [] : JSON.parse(out)) as T;
}

/** `ip -n NS ARGS…` for setting up fixtures the code under test should then see. */
export function ipIn(ns: string, args: readonly string[]): string {
  netnsPath(ns);
  return run('ip', ['-n', ns, ...args]);
}

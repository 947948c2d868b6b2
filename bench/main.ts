// `npm run bench -- NAME…`: runs side-by-side benchmarks and writes each result table to
// bench/results/NAME.md. Each benchmark lives in its own module and is loaded on demand.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BenchResult {
  /** Markdown written to bench/results/<name>.md (a title, a table, notes). */
  markdown: string;
}

export interface Benchmark {
  readonly name: string;
  readonly summary: string;
  run(args: string[]): Promise<BenchResult>;
}

const registry: Record<string, () => Promise<Benchmark>> = {
  store: async () => (await import('./store.js')).storeBenchmark,
  netlink: async () => (await import('./netlink.js')).benchmark,
  cni: async () => (await import('./cni.js')).benchmark,
  converge: async () => (await import('./converge.js')).benchmark,
  udp: async () => (await import('./udp.js')).benchmark,
  dataplane: async () => (await import('./dataplane.js')).benchmark,
  policy: async () => (await import('./policy.js')).benchmark,
  bgp: async () => (await import('./bgp.js')).benchmark,
  kube: async () => (await import('./kube.js')).benchmark,
  blocking: async () => (await import('./blocking.js')).benchmark,
  ui: async () => (await import('./ui.js')).benchmark,
  flows: async () => (await import('./flows.js')).benchmark,
};

async function main(argv: string[]): Promise<number> {
  const names = argv.filter((a) => !a.startsWith('-'));
  const flags = argv.filter((a) => a.startsWith('-'));
  const chosen = names.length > 0 ? names : Object.keys(registry);
  for (const n of chosen) {
    if (!registry[n]) {
      process.stderr.write(`unknown benchmark ${JSON.stringify(n)}; known: ${Object.keys(registry).join(', ')}\n`);
      return 2;
    }
  }
  const outDir = new URL('../../bench/results/', import.meta.url).pathname;
  mkdirSync(outDir, { recursive: true });
  for (const n of chosen) {
    const bench = await registry[n]!();
    process.stderr.write(`# bench ${n}: ${bench.summary}\n`);
    const result = await bench.run(flags);
    const stamped = `${result.markdown.trimEnd()}\n\n_Measured ${new Date().toISOString()} on ${process.platform} ${process.arch}, node ${process.version}._\n`;
    writeFileSync(join(outDir, `${n}.md`), stamped);
    process.stdout.write(stamped + '\n');
  }
  return 0;
}

main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});

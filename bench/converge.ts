// `npm run bench -- converge`: how fast weftd (vxlan) programs N peers, measured the two ways
// the issue means, for the file store and a real etcd:
//   burst    weftd runs; N peer leases are written as fast as the store allows (bulk writes:
//            one lock for the file store, ≤ 128-key transactions for etcd) → time from the first
//            write until all N routes are in the host's kernel.
//   restart  N leases are already in the store; weftd is started on a fresh host → time from
//            the process start until all N routes are in the kernel.
// Routes are written after their neighbour and FDB entries, so the last route is the last write;
// the bench still checks neighbours and FDB entries once at the end. RSS is read from /proc
// after programming settled. Options: --peers=a,b,c (default 1000,5000), --stores=file,etcd,
// --modes=burst,restart, --profile=DIR (weftd writes a CPU profile there on exit),
// --file-store-base=DIR (where the file store and etcd's data live; default /dev/shm), --settle=S (seconds of RSS watching after programming 5000 peers; default 30, 0 = off), --log-level=debug (weftd's log
// of each measurement, with its reconcile passes, on stderr). Under --profile V8 rejects
// weftd's code cache (made without --cpu-prof), so profiled start-ups are slower than real ones.
// bin/weftd runs its bundle only while it is newer than tsc's last run; each row says which ran.
// The measurement itself is common/converge-run.ts (bench kube runs it on kube-apiserver too);
// --stores=kube works here as well.
import type { Benchmark, BenchResult } from './main.js';
import { type ConvergeRow, measureConverge, type Mode, type StoreKind } from './common/converge-run.js';

export const benchmark: Benchmark = {
  name: 'converge',
  summary: 'weftd (vxlan) programming N peers: burst of store writes and restart with N leases, file store and etcd; RSS',
  async run(args: string[]): Promise<BenchResult> {
    const opt = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
    const sizes = (opt('peers') ?? '1000,5000').split(',').map(Number);
    const stores = (opt('stores') ?? 'file,etcd').split(',') as StoreKind[];
    const modes = (opt('modes') ?? 'burst,restart').split(',') as Mode[];
    const profileDir = opt('profile');
    const storeBaseDir = opt('file-store-base') ?? '/dev/shm';
    const settleMs = Number(opt('settle') ?? '30') * 1000;
    const settleFrom = 5000;
    const rows: ConvergeRow[] = [];
    for (const store of stores) {
      for (const mode of modes) {
        for (const n of sizes) {
          process.stderr.write(`  converge: ${store} ${mode} ${n} peers…\n`);
          rows.push(await measureConverge({ store, mode, n, profileDir, storeBaseDir, logLevel: opt('log-level') ?? 'warn', settleMs: n >= settleFrom ? settleMs : 0, prefix: 'wc2' }));
        }
      }
    }
    const f = (x: number) => x.toFixed(0);
    const target = (n: number) => (n <= 1000 ? 200 : n <= 5000 ? 1000 : NaN);
    const lines = [
      '# converge: weftd (vxlan) programming N peers',
      '',
      'One namespace host running weftd; the store is the file store or a real etcd (single member, in the',
      'topology\'s outside namespace, reached over the underlay). Each peer is a route, a permanent neighbour and',
      'an FDB entry on weft.1; "programmed" = all N weft-protocol routes are in the kernel (routes are written',
      'after their neighbour and FDB entries; both are checked at the end).',
      '',
      '- **burst**: weftd is running; N leases are written as fast as the store allows (file store: bulk writes',
      '  under one lock, 1024 keys per call; etcd: transactions of 128 keys, 8 of them in flight, as many nodes',
      '  writing at once would). Time from the first write.',
      '- **restart**: N leases are already in the store; weftd starts on a fresh host. Time from the process',
      '  start (includes Node start-up, reading the config, the lease, the listing, the first reconcile).',
      '',
      `- **RSS**: 300 ms after programming; for ${settleFrom} peers also the highest value over the next ${settleMs / 1000} s`,
      '  (weftd\'s full repair pass runs every 5 s meanwhile, so each row includes several of them).',
      '',
      'The file store and etcd\'s data directory are on tmpfs (/dev/shm): on this VM\'s disk a file creation or',
      'an fsync costs a varying fraction of a millisecond, which would measure the disk rather than weftd.',
      '',
      `| store | mode | peers | store writes (ms) | programmed (ms) | after last write / until ready (ms) | target (ms) | weftd RSS (MB) | settled RSS, highest over ${settleMs / 1000} s (MB) | weftd ran |`,
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
      ...rows.map((r) => `| ${r.store} | ${r.mode} | ${r.n} | ${r.mode === 'restart' ? `(${f(r.writeMs)})` : f(r.writeMs)} | **${f(r.totalMs)}** | ${f(r.partMs)} | ${f(target(r.n))} | ${r.rss.toFixed(1)} | ${r.settledRss === undefined ? '' : r.settledRss.toFixed(1)} | ${r.form} |`),
      '',
      'Targets (issue 4): 1000 peers ≤ 200 ms, 5000 ≤ 1 s, RSS ≤ 100 MB at 5000. Flannel v0.17 (shared/ANCHORS.md):',
      '1000 routes 0.88 s after the first write; restart with 1000 leases 0.17 s.',
    ];
    return { markdown: lines.join('\n') };
  },
};

// `npm run bench -- ui`: the web view at 200 and 1000 hosts (leases written straight into a file
// store, two pods each, a few policies; no weftd behind them, so every agent is 'unknown'), served
// by the real `weftctl ui` and read by headless Chromium. Measured per size:
//   - page load: navigation → every host drawn (the page's #host-count says N), median of 5;
//   - update latency: a lease written or deleted in the store → the page has rendered the model
//     without (or with) it, next to the store's own watch seeing that write in this process — the
//     reference: what the view adds on top of the store it follows;
//   - the model's size on the wire, and weftctl ui's RSS and CPU over the run.
// `--screenshots` also writes docs/ui-200-hosts.png from the 200-host run and docs/ui-3-hosts.png
// from a real 3-host vxlan lab with the doctor path between two pods drawn.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Benchmark } from './main.js';
import { cleanEnv, cpuSeconds, rssMB, stopProcess } from './common/process.js';
import { formatCidr, nthSubnet, parseCidr, parseIP } from '../src/net/ip.js';
import { openStore } from '../src/store/flags.js';
import { fileKeyValueStore } from '../src/store/kv.js';
import { LeaseWatcher } from '../src/store/watch.js';
import { endpointToJson } from '../src/policy/model.js';
import { createLogger } from '../src/log.js';
import { openBrowser } from '../test/ui/browser.js';
import { startWeftctlUi } from '../test/ui/weftctl-ui.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const WEFTCTL = join(ROOT, 'bin/weftctl');
const PREFIX = '/weft/network';
const NETWORK = parseCidr('10.0.0.0/8');
const UPDATES = 20;

interface Row {
  hosts: number;
  pods: number;
  modelKB: number;
  loadMs: number[];
  updateMs: number[];
  storeMs: number[];
  rssMB: number;
  cpuS: number;
}

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN; };
const p95 = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)] ?? NaN; };

async function fillStore(dir: string, hosts: number): Promise<void> {
  const store = await openStore({ type: 'file', dir, prefix: PREFIX }, { create: true });
  const kv = fileKeyValueStore(dir, PREFIX);
  try {
    await store.putConfig(JSON.stringify({ Network: formatCidr(NETWORK), SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    const items = Array.from({ length: hosts }, (_, i) => ({
      subnet: nthSubnet(NETWORK, 24, i),
      value: JSON.stringify({ PublicIP: `198.18.${i >> 7}.${(i & 127) + 1}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VtepMAC: '02:00:00:00:00:01' } }),
    }));
    await store.writeSubnetsIfAbsent(items, null);
    for (let i = 0; i < hosts; i++) {
      const s = nthSubnet(NETWORK, 24, i);
      for (const k of [0, 1]) {
        const ip = parseIP(`${formatCidr(s).split('.').slice(0, 3).join('.')}.${k + 2}`);
        await kv.put(`endpoints/node${i}/shop/p${i}-${k}/eth0`, JSON.stringify(endpointToJson({
          namespace: 'shop', pod: `p${i}-${k}`, labels: { app: k === 0 ? 'web' : 'db', tier: `t${i % 4}` }, ips: [ip], host: `node${i}`, ifname: 'eth0',
        })));
      }
    }
    const policy = (name: string, app: string) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: 'shop' }, spec: { podSelector: { matchLabels: { app } }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] } });
    await kv.put('policies/shop/db-from-web', JSON.stringify(policy('db-from-web', 'db')));
    await kv.put('policies/shop/web-from-web', JSON.stringify(policy('web-from-web', 'web')));
  } finally {
    await kv.close();
    await store.close();
  }
}

async function measure(hosts: number, screenshot: string | undefined): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-bench-ui-'));
  let ui: ChildProcess | undefined;
  const session = await openBrowser({ width: 1600, height: 1000 });
  try {
    await fillStore(dir, hosts);
    const started = await startWeftctlUi(['--store', 'file', '--store-dir', dir, '--prefix', PREFIX, '--health-addr', '127.0.0.1:1']);
    ui = started.child;
    const page = session.page;
    const loadMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = Date.now();
      await page.goto(started.url);
      await page.waitForFunction(`document.querySelector('#host-count')?.textContent?.includes('${hosts}')`, undefined, { timeout: 60_000 });
      loadMs.push(Date.now() - t0);
    }
    const modelKB = Number(await page.evaluate('fetch("/api/model").then((r) => r.text()).then((t) => t.length)')) / 1024;
    // The page notes when it rendered each model; the store's own watch, in this process, when
    // it saw the write.
    await page.evaluate(`(() => { window.__rendered = {}; new MutationObserver(() => { window.__rendered[document.body.dataset.seq] = Date.now(); }).observe(document.body, { attributes: true, attributeFilter: ['data-seq'] }); })()`);
    const store = await openStore({ type: 'file', dir, prefix: PREFIX }, { create: false });
    const seen = new Map<string, number>();
    const watcher = new LeaseWatcher({ store, onEvent: (ev) => { seen.set(`${ev.type} ${formatCidr(ev.lease.subnet)}`, Date.now()); }, log: createLogger({}, { level: 'error' }) });
    await watcher.start();
    const updateMs: number[] = [];
    const storeMs: number[] = [];
    try {
      for (let i = 0; i < UPDATES; i++) {
        const subnet = nthSubnet(NETWORK, 24, hosts + i);
        const adding = i % 2 === 0;
        const want = adding ? hosts + 1 : hosts;
        const t0 = Date.now();
        if (adding) await store.writeSubnet(subnet, JSON.stringify({ PublicIP: '198.19.0.1', PublicIPv6: null, BackendType: 'vxlan', BackendData: { VtepMAC: '02:00:00:00:00:02' } }), null, { type: 'absent' });
        else await store.deleteSubnet(nthSubnet(NETWORK, 24, hosts + i - 1));
        await page.waitForFunction(`document.querySelectorAll('[data-host-id]').length === ${want} || document.querySelector('#host-count')?.textContent?.match(/\\b${want}\\b/)`, undefined, { timeout: 30_000, polling: 'raf' });
        const seq = await page.evaluate('document.body.dataset.seq') as string;
        const rendered = Number(await page.evaluate(`window.__rendered[${JSON.stringify(seq)}] ?? Date.now()`));
        updateMs.push(rendered - t0);
        const key = `${adding ? 'added' : 'removed'} ${formatCidr(adding ? subnet : nthSubnet(NETWORK, 24, hosts + i - 1))}`;
        for (let w = 0; !seen.has(key) && w < 100; w++) await new Promise((r) => setTimeout(r, 10));
        storeMs.push((seen.get(key) ?? NaN) - t0);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await watcher.close();
      await store.close();
    }
    if (screenshot) {
      // A host selected: its panel, and its links to every other host drawn.
      await page.locator('[data-host-id]').nth(Math.min(hosts - 1, 37)).click();
      await page.mouse.move(5, 5);
      await page.waitForTimeout(300);
      await page.screenshot({ path: screenshot, fullPage: false });
    }
    const pid = ui.pid ?? 0;
    return { hosts, pods: hosts * 2, modelKB, loadMs, updateMs, storeMs, rssMB: rssMB(pid), cpuS: cpuSeconds(pid) };
  } finally {
    await session.close();
    await stopProcess(ui);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** docs/ui-3-hosts.png: a real 3-host vxlan lab, the doctor path between pods of h0 and h2 drawn. */
async function labScreenshot(path: string): Promise<void> {
  const name = `bui${process.pid % 10000}`;
  const lab = (args: string[]) => spawnSync(WEFTCTL, ['lab', ...args, '--name', name], { encoding: 'utf8', env: cleanEnv(), timeout: 180_000 });
  let ui: ChildProcess | undefined;
  try {
    const up = lab(['up', '--hosts', '3', '--pods', '2', '--backend', 'vxlan']);
    if (up.status !== 0) throw new Error(`lab up: ${up.stderr}`);
    const started = await startWeftctlUi(['--lab', name]);
    ui = started.child;
    const session = await openBrowser({ width: 1400, height: 900 });
    try {
      const page = session.page;
      await page.goto(started.url);
      await page.waitForFunction(`document.querySelectorAll('[data-link][data-state="ok"]').length === 3`, undefined, { timeout: 30_000 });
      await page.locator('[data-pod-id="lab/h0c0"]').first().click();
      await page.locator('[data-pod-id="lab/h2c1"]').first().click();
      await page.locator('#doctor [data-hop-id]').first().waitFor({ timeout: 30_000 });
      await page.screenshot({ path });
    } finally {
      await session.close();
    }
  } finally {
    await stopProcess(ui);
    lab(['down']);
  }
}

export const benchmark: Benchmark = {
  name: 'ui',
  summary: 'web view: page load and update latency at 200 and 1000 hosts (vs the store watch), model size, weftctl ui RSS',
  async run(args) {
    const shots = args.includes('--screenshots');
    if (shots) mkdirSync(join(ROOT, 'docs'), { recursive: true });
    const load = loadavg()[0]?.toFixed(2) ?? '?';
    const rows: Row[] = [];
    for (const hosts of [200, 1000]) rows.push(await measure(hosts, shots && hosts === 200 ? join(ROOT, 'docs/ui-200-hosts.png') : undefined));
    if (shots) await labScreenshot(join(ROOT, 'docs/ui-3-hosts.png'));
    const f = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '?');
    const lines = [
      '# Web view (`weftctl ui`)',
      '',
      `Leases written straight into a file store (two pods per host, two policies; no weftd behind them), served by \`weftctl ui\`, read by headless Chromium (Debian's). 1-minute load average at the start: ${load}.`,
      '',
      '| hosts | pods | model | page load (median of 5) | update → page rendered, p50 / p95 | store watch sees it, p50 / p95 | update ÷ store watch (p50) | weftctl ui RSS | weftctl ui CPU |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r) => `| ${r.hosts} | ${r.pods} | ${r.modelKB.toFixed(0)} KB | ${f(median(r.loadMs))} ms | ${f(median(r.updateMs))} / ${f(p95(r.updateMs))} ms | ${f(median(r.storeMs))} / ${f(p95(r.storeMs))} ms | ${(median(r.updateMs) / Math.max(1, median(r.storeMs))).toFixed(1)}× | ${r.rssMB.toFixed(0)} MB | ${r.cpuS.toFixed(1)} s |`),
      '',
      `Update: ${UPDATES} changes per size, alternately a new lease and its deletion, each timed from the store write to the page having rendered the model that has (or lacks) it (a MutationObserver on the page's data-seq). The store watch column is a LeaseWatcher in the bench process on the same store: the reference for what the view adds (building and sending the model — a burst is folded into one model per 50 ms, a lone change goes at once — and the page's render). The target is ≤ 1 s; no other container network ships a view to compare with.`,
    ];
    return { markdown: lines.join('\n') };
  },
};

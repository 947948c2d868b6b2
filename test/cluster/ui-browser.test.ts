// weftctl ui in headless Chromium against a real lab (vxlan, 3 hosts × 1 pod, file store): the
// page shows the three hosts, their subnets and ok links; a lease removed from the store leaves
// the page without a reload; a deny NetworkPolicy is the first broken hop of the doctor path
// clicked between two pods; a stopped weftd turns its host down and its links not ok. How fast the
// page follows is measured by `npm run bench -- ui`; here each wait is generous and the time
// seen is reported as a diagnostic. Run under /tmp/weft-netns.lock.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { LabRecord } from '../../src/lab/state.js';
import type { UiModel } from '../../src/ui/model.js';
import { openBrowser, type BrowserSession } from '../ui/browser.js';
import { startWeftctlUi } from '../ui/weftctl-ui.js';
import { iperf } from '../../src/lab/bench.js';
import { execIn } from '../../src/lab/exec.js';
import { ECHO_PORT } from '../../src/lab/lab.js';
import { WEFTCTL, cleanEnv, downQuietly, labName, stateDir, upOk } from './lab-harness.js';

const name = labName('wui');
const SPARE = '10.244.250.0/24';
let rec: LabRecord;
let ui: ChildProcess | undefined;
let session: BrowserSession | undefined;
let page: Page;

function storeFlags(): string[] {
  return ['--store', 'file', '--store-dir', join(stateDir(name), 'store')];
}

function weftctl(args: string[], input?: string): string {
  const r = spawnSync(WEFTCTL, args, { encoding: 'utf8', env: cleanEnv(), timeout: 30_000, ...(input !== undefined && { input }) });
  assert.equal(r.status, 0, `weftctl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** weftctl ui on a lab, asking its weftds every 300 ms; the URL it prints. */
async function startUi(lab = name, onChild: (c: ChildProcess) => void = (c) => { ui = c; }): Promise<string> {
  return (await startWeftctlUi(['--lab', lab, '--interval', '300'], onChild)).url;
}

async function model(): Promise<UiModel> {
  return await page.evaluate('fetch("/api/model").then((r) => r.json())') as UiModel;
}

function hostId(i: number, m: UiModel): string {
  const h = m.hosts.find((x) => x.name === `h${i}`);
  assert.ok(h, `the model names h${i}: ${JSON.stringify(m.hosts.map((x) => x.name))}`);
  return h.id;
}

const linkSel = (a: string, b: string): string => `[data-link="${[a, b].sort().join('|')}"]`;

describe('weftctl ui in a browser, on a 3-host vxlan lab', { timeout: 300_000 }, () => {
  before(async () => {
    rec = upOk(['--name', name, '--hosts', '3', '--pods', '1', '--backend', 'vxlan']);
    const url = await startUi();
    session = await openBrowser();
    page = session.page;
    await page.goto(url);
  });

  after(async () => {
    await session?.close();
    if (ui?.pid !== undefined && ui.exitCode === null) {
      const exited = new Promise((r) => ui?.once('exit', r));
      ui.kill('SIGTERM');
      await exited;
    }
    downQuietly(name);
  });

  it('shows the three hosts with their subnets, their pods, and every link programmed on both ends', async () => {
    await page.waitForFunction(`document.querySelectorAll('[data-host-id]').length === 3 && document.querySelectorAll('[data-link][data-state="ok"]').length === 3`, undefined, { timeout: 30_000 });
    const m = await model();
    for (const h of m.hosts) {
      const el = page.locator(`[data-host-id="${h.id}"]`).first();
      assert.match(await el.textContent() ?? '', new RegExp(h.subnet.replace(/\./g, '\\.').replace('/', '\\/')), `host ${h.name} shows its subnet`);
      assert.equal(await el.getAttribute('data-agent-state'), 'ready');
    }
    assert.deepEqual(m.hosts.map((h) => h.name).sort(), ['h0', 'h1', 'h2']);
    for (let i = 0; i < 3; i++) assert.equal(await page.locator(`[data-pod-id="lab/h${i}c0"]`).count() > 0, true, `pod h${i}c0 is drawn`);
    assert.deepEqual(m.pods.find((p) => p.id === 'lab/h1c0')?.labels, { app: 'echo', host: 'h1', pod: 'h1c0' });
  });

  it('a lease removed in the store leaves the page without a reload', async (t) => {
    weftctl(['leases', 'reserve', SPARE, '--public-ip', '198.18.0.250', ...storeFlags()]);
    await page.waitForSelector(`[data-host-id="${SPARE}"]`, { timeout: 10_000 });
    const seqBefore = Number(await page.evaluate('document.body.dataset.seq'));
    const t0 = Date.now();
    weftctl(['leases', 'release', SPARE, ...storeFlags()]);
    await page.waitForSelector(`[data-host-id="${SPARE}"]`, { state: 'detached', timeout: 10_000 });
    t.diagnostic(`lease release → gone from the page in ${Date.now() - t0} ms (includes weftctl's own start)`);
    assert.ok(Number(await page.evaluate('document.body.dataset.seq')) > seqBefore, 'a newer model, not a reload');
  });

  it('a link carrying pod traffic shows its rate (weftd\'s per-peer counters)', async (t) => {
    const m = await model();
    const [h0, h1] = [hostId(0, m), hostId(1, m)];
    const [c0, c1] = ['h0c0', 'h1c0'].map((n) => rec.containers.find((c) => c.name === n));
    assert.ok(c0 && c1?.ip);
    const run = iperf(c1.ns, c0.ns, c1.ip, 4);
    try {
      // attached, not visible: a horizontal line's box has no height, and a line is "hidden" then.
      await page.waitForSelector(`${linkSel(h0, h1)}[data-bps]`, { state: 'attached', timeout: 15_000 });
      const bps = Number(await page.locator(linkSel(h0, h1)).first().getAttribute('data-bps'));
      t.diagnostic(`link h0–h1 drawn at ${(bps / 1e9).toFixed(2)} Gbit/s during iperf3`);
      assert.ok(bps > 1e6, `a real rate, got ${bps} bit/s`);
    } finally {
      const r = await run;
      t.diagnostic(`iperf3 measured ${r.gbps.toFixed(2)} Gbit/s`);
    }
  });

  it('a deny NetworkPolicy is the first broken hop of the path clicked between two pods', async () => {
    const policy = {
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-to-h1', namespace: 'lab' },
      spec: { podSelector: { matchLabels: { host: 'h1' } }, policyTypes: ['Ingress'] },
    };
    const file = join(stateDir(name), 'deny-to-h1.json');
    writeFileSync(file, JSON.stringify(policy));
    weftctl(['policy', 'apply', '-f', file, ...storeFlags()]);
    await page.waitForSelector('[data-policy-id="lab/deny-to-h1"]', { timeout: 10_000 });
    await page.locator('[data-pod-id="lab/h0c0"]').first().click();
    await page.locator('[data-pod-id="lab/h1c0"]').first().click();
    const first = page.locator('#doctor [data-first-failure]');
    await first.waitFor({ timeout: 30_000 });
    assert.equal(await first.getAttribute('data-hop-id'), 'policy');
    assert.equal(await first.getAttribute('data-status'), 'fail');
    assert.match(await first.textContent() ?? '', /deny-to-h1/);
    // The hops before it passed: the path itself is fine, the policy stops it.
    const hops = page.locator('#doctor [data-hop-id]');
    const before: Array<[string | null, string | null]> = [];
    for (let k = 0; k < await hops.count(); k++) before.push([await hops.nth(k).getAttribute('data-hop-id'), await hops.nth(k).getAttribute('data-status')]);
    const i = before.findIndex(([id]) => id === 'policy');
    assert.ok(i > 0);
    assert.deepEqual(before.slice(0, i).filter(([, s]) => s === 'fail'), []);
  });

  it('a connection the policy drops is listed under "Dropped by policy" with the policy', async (t) => {
    const [c0, c1] = ['h0c0', 'h1c0'].map((n) => rec.containers.find((c) => c.name === n));
    assert.ok(c0 && c1?.ip);
    const drop = page.locator('#drops [data-drop="lab/h0c0>lab/h1c0"]');
    const t0 = Date.now();
    for (let i = 0; i < 20 && (await drop.count()) === 0; i++) {
      await execIn(c0.ns, ['timeout', '1', 'bash', '-c', `echo > /dev/tcp/${c1.ip}/${ECHO_PORT}`], { timeoutMs: 3000 });
      await page.waitForTimeout(500);
    }
    await drop.first().waitFor({ timeout: 5000 });
    t.diagnostic(`listed ${Date.now() - t0} ms after the first attempt`);
    assert.equal(await drop.first().getAttribute('data-policy'), 'lab/deny-to-h1');
  });

  it('a stopped weftd shows its host down and its links not ok', async (t) => {
    const m = await model();
    const [h0, h1, h2] = [hostId(0, m), hostId(1, m), hostId(2, m)];
    const weftd = rec.processes.find((p) => p.role === 'weftd h2');
    assert.ok(weftd, 'the lab recorded weftd h2');
    const t0 = Date.now();
    process.kill(weftd.pid, 'SIGTERM');
    await page.waitForSelector(`[data-host-id="${h2}"][data-agent-state="down"]`, { timeout: 15_000 });
    t.diagnostic(`weftd h2 stopped → shown down in ${Date.now() - t0} ms`);
    for (const other of [h0, h1]) {
      await page.waitForFunction(`(() => { const e = document.querySelector(${JSON.stringify(linkSel(other, h2))}); return e !== null && e.getAttribute('data-state') !== 'ok'; })()`, undefined, { timeout: 10_000 });
      assert.equal(await page.locator(linkSel(other, h2)).first().getAttribute('data-state'), 'one-sided');
    }
    assert.equal(await page.locator(linkSel(h0, h1)).first().getAttribute('data-state'), 'ok', 'the other hosts\' link stays ok');
  });
});

/** GET with a chosen Host header; resolves with the status once the headers arrive. */
function getStatus(url: string, path: string, host?: string): Promise<number> {
  const u = new URL(path, url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, headers: host ? { host } : {} }, (res) => { resolve(res.statusCode ?? 0); res.resume(); });
    req.on('error', reject);
    req.end();
  });
}

describe('weftctl ui on an etcd lab (served from host 0 behind a proxy)', { timeout: 300_000 }, () => {
  const etcdLab = labName('wue');
  let child: ChildProcess | undefined;
  let url = '';

  before(async () => {
    upOk(['--name', etcdLab, '--hosts', '2', '--pods', '1', '--backend', 'vxlan', '--store', 'etcd']);
    url = await startUi(etcdLab, (c) => { child = c; });
  });

  after(async () => {
    if (child?.pid !== undefined && child.exitCode === null) {
      // SIGTERM lets it stop the view it runs inside host 0; SIGKILL only if that hangs.
      const exited = new Promise((r) => child?.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child?.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    downQuietly(etcdLab);
  });

  it('the model through the proxy, the Host check behind it, and Ctrl-C with a page open ends it and its socket', async () => {
    let model: UiModel | undefined;
    for (let i = 0; i < 100; i++) {
      model = JSON.parse(await fetch(new URL('/api/model', url)).then((r) => r.text())) as UiModel;
      if (model.hosts.length === 2 && model.hosts.every((h) => h.agent.state === 'ready')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(model?.hosts.map((h) => [h.name, h.agent.state]).sort(), [['h0', 'ready'], ['h1', 'ready']]);
    assert.equal(model?.source.store, 'etcd');
    assert.equal(await getStatus(url, '/api/model', 'evil.example'), 403, 'DNS rebinding refused behind the proxy too');
    // An open page: its event stream stays open until the view ends it.
    const page = new URL('/api/events', url);
    const stream = request({ host: page.hostname, port: page.port, path: page.pathname });
    stream.on('error', () => {});
    stream.end();
    await new Promise((r) => setTimeout(r, 300));
    const exited = new Promise<number | null>((r) => child?.once('exit', (code) => r(code)));
    child?.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
    stream.destroy();
    assert.equal(code, 0, 'weftctl ui ended on SIGTERM with a page open');
    assert.deepEqual(readdirSync(stateDir(etcdLab)).filter((f) => f.startsWith('ui-') && f.endsWith('.sock')), [], 'its socket is gone');
  });
});

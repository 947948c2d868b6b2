// weftd's CNI fast path where it needs processes of its own: a socket left behind by a killed
// server is reclaimed, and the weft plugin's cold start, run as the runtime runs it, loads neither
// zod nor the bridge when weftd answers (and falls back to standalone when it does not).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startCniServer } from '../../src/agent/cni-server.js';
import { callFastPath } from '../../src/cni/fastpath-client.js';
import { createLogger } from '../../src/log.js';

const REPO = resolve(fileURLToPath(import.meta.url), '../../../..');
const PLUGIN = join(REPO, 'dist/src/plugins/weft/main.js');
const quiet = createLogger({}, { write: () => undefined });

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'wmp-fpp-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const sockPath = () => join(dir, `s${n++}.sock`);

describe('CNI server socket hygiene across processes', () => {
  it('reclaims a stale socket, refuses a live one and anything that is not a socket', async () => {
    const path = sockPath();
    // A process that died without cleaning up leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('ready'))`], { stdio: ['ignore', 'pipe', 'inherit'], env: { PATH: process.env.PATH ?? '' } });
    await new Promise<void>((r) => child.stdout.on('data', () => r()));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('close', r));
    assert.ok(statSync(path).isSocket(), 'stale socket left behind');

    const srv = await startCniServer({ socketPath: path, log: quiet, handle: async () => ({ stdout: 'new', exitCode: 0 }) });
    try {
      assert.deepEqual(await callFastPath(path, { env: {}, stdin: '' }), { kind: 'answered', stdout: 'new', exitCode: 0 });
      await assert.rejects(startCniServer({ socketPath: path, log: quiet }), /already serves/);
      assert.deepEqual(await callFastPath(path, { env: {}, stdin: '' }), { kind: 'answered', stdout: 'new', exitCode: 0 }, 'the live server kept its socket');
    } finally {
      await srv.close();
    }

    const file = join(dir, 'plain-file');
    writeFileSync(file, 'keep me');
    await assert.rejects(startCniServer({ socketPath: file, log: quiet }), /is not a socket/);
    assert.equal(readFileSync(file, 'utf8'), 'keep me');
  });
});

interface PluginRun { code: number; stdout: string; loaded: string[] }

/** Runs the plugin entry with a resolve hook that reports every file module it loads. */
function runPluginProcess(conf: Record<string, unknown>, env: Record<string, string>): Promise<PluginRun> {
  const hook = join(dir, 'hook.mjs');
  writeFileSync(hook, "export async function resolve(s, c, n) { const r = await n(s, c); if (r.url.startsWith('file:')) process.stderr.write('LOADED ' + r.url + '\\n'); return r; }\n");
  const register = `data:text/javascript,import {register} from "node:module"; register(${JSON.stringify(pathToFileURL(hook).href)});`;
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ['--import', register, PLUGIN], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', rej);
    child.on('close', (code) => {
      const loaded = stderr.split('\n').filter((l) => l.startsWith('LOADED ')).map((l) => l.slice(7).replace(pathToFileURL(REPO).href + '/', ''));
      res({ code: code ?? -1, stdout, loaded });
    });
    child.stdin.end(JSON.stringify(conf));
  });
}

describe('plugin cold start', () => {
  it('when weftd answers, prints its reply without loading zod, the CNI toolkit or the bridge', async () => {
    const path = sockPath();
    const received: string[] = [];
    const srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async (env, stdin) => {
        received.push(`${env.CNI_COMMAND} ${env.CNI_CONTAINERID} ${(JSON.parse(stdin) as { name: string }).name}`);
        return { stdout: '{"cniVersion":"1.1.0","interfaces":[],"ips":[]}\n', exitCode: 0 };
      },
    });
    const conf = { cniVersion: '1.1.0', name: 'wmpcold', type: 'weft', cniSocket: path, subnetFile: join(dir, 'absent.env'), dataDir: join(dir, 'state') };
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'wmp-cold', CNI_NETNS: '/run/netns/wmp-cold-absent', CNI_IFNAME: 'eth0', CNI_PATH: join(REPO, 'bin/cni') };
    try {
      const fast = await runPluginProcess(conf, env);
      assert.equal(fast.code, 0);
      assert.equal(fast.stdout, '{"cniVersion":"1.1.0","interfaces":[],"ips":[]}\n');
      assert.deepEqual(received, ['ADD wmp-cold wmpcold']);
      assert.ok(fast.loaded.includes('dist/src/cni/fastpath-client.js'), fast.loaded.join(' '));
      for (const heavy of ['zod', 'plugins/weft/standalone', 'plugins/bridge/', 'cni/skel', 'netlink']) {
        assert.ok(!fast.loaded.some((m) => m.includes(heavy)), `${heavy} loaded on the fast path: ${fast.loaded.join(' ')}`);
      }
    } finally {
      await srv.close();
    }
    // weftd gone: the same call is done standalone, which loads the plugin and reports the
    // missing subnet.env properly.
    const slow = await runPluginProcess(conf, env);
    assert.equal(slow.code, 1);
    assert.equal((JSON.parse(slow.stdout) as { code: number }).code, 11);
    assert.ok(slow.loaded.some((m) => m.includes('plugins/weft/standalone')));
  });
});

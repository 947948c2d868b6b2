// weftd's CNI fast path at the socket level (no kernel namespaces): the server's framing,
// concurrency, socket hygiene (mode 0600, stale socket reclaimed, live one refused, non-socket
// refused), graceful close; the client's outcome classification (unavailable vs lost vs
// answered); and the plugin binary's cold start, which must not load zod or the bridge when
// weftd answers.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startCniServer, type CniServer } from '../../src/agent/cni-server.js';
import { callFastPath } from '../../src/cni/fastpath-client.js';
import { createLogger } from '../../src/log.js';

const REPO = resolve(fileURLToPath(import.meta.url), '../../../..');
const PLUGIN = join(REPO, 'dist/src/plugins/weft/main.js');
const quiet = createLogger({}, { write: () => undefined });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir = '';
before(() => { dir = mkdtempSync(join(tmpdir(), 'wmp-fp-')); });
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const sockPath = () => join(dir, `s${n++}.sock`);

/** A server speaking raw bytes, for the client's failure cases. */
function rawServer(path: string, onConn: (s: import('node:net').Socket) => void): Promise<Server> {
  return new Promise((res) => {
    const srv = createServer({ allowHalfOpen: true }, onConn);
    srv.listen(path, () => res(srv));
  });
}

const closeRaw = (s: Server) => new Promise<void>((r) => s.close(() => r()));

describe('CNI server', () => {
  it('answers {env, stdin} with the handler\'s reply, forwarding only CNI_* variables', async () => {
    const path = sockPath();
    const seen: Array<[NodeJS.ProcessEnv, string]> = [];
    const srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async (env, stdin) => {
        seen.push([env, stdin]);
        return { stdout: `${env.CNI_COMMAND}:${stdin.length}\n`, exitCode: env.CNI_COMMAND === 'DEL' ? 1 : 0 };
      },
    });
    try {
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary socket left');
      const r = await callFastPath(path, { env: { CNI_COMMAND: 'ADD', HOME: '/root' }, stdin: '{"a":1}' });
      assert.deepEqual(r, { kind: 'answered', stdout: 'ADD:7\n', exitCode: 0 });
      assert.deepEqual(seen[0]?.[0], { CNI_COMMAND: 'ADD' });
      const d = await callFastPath(path, { env: { CNI_COMMAND: 'DEL' }, stdin: '' });
      assert.deepEqual(d, { kind: 'answered', stdout: 'DEL:0\n', exitCode: 1 });
      assert.deepEqual(srv.stats(), { ok: 1, failed: 1, inFlight: 0 });
    } finally {
      await srv.close();
    }
    assert.ok(!existsSync(path), 'close removes the socket');
  });

  it('serves many requests at once', async () => {
    const path = sockPath();
    let running = 0;
    let peak = 0;
    const srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async (env) => {
        running++;
        peak = Math.max(peak, running);
        await sleep(30);
        running--;
        return { stdout: env.CNI_CONTAINERID ?? '', exitCode: 0 };
      },
    });
    try {
      const ids = Array.from({ length: 24 }, (_, i) => `c${i}`);
      const replies = await Promise.all(ids.map((id) => callFastPath(path, { env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: id }, stdin: '{}' })));
      assert.deepEqual(replies.map((r) => (r.kind === 'answered' ? r.stdout : r.kind)), ids);
      assert.ok(peak > 1, `requests overlapped (peak ${peak})`);
    } finally {
      await srv.close();
    }
  });

  it('drops malformed requests and keeps serving; a handler crash becomes a CNI error', async () => {
    const path = sockPath();
    const srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async (env) => {
        if (env.CNI_COMMAND === 'GC') throw new Error('boom');
        return { stdout: 'fine', exitCode: 0 };
      },
    });
    try {
      const reply = await new Promise<string>((res) => {
        const s = connect(path);
        let got = '';
        s.on('data', (c) => { got += c.toString(); });
        s.on('close', () => res(got));
        s.on('error', () => undefined);
        s.end('{"env": "not an object"}');
      });
      assert.equal(reply, '', 'no answer to a malformed request');
      const crash = await callFastPath(path, { env: { CNI_COMMAND: 'GC' }, stdin: '{}' });
      assert.equal(crash.kind, 'answered');
      if (crash.kind === 'answered') {
        assert.equal(crash.exitCode, 1);
        const err = JSON.parse(crash.stdout) as { code: number; msg: string };
        assert.equal(err.code, 100);
        assert.match(err.msg, /boom/);
      }
      assert.deepEqual(await callFastPath(path, { env: { CNI_COMMAND: 'ADD' }, stdin: '{}' }), { kind: 'answered', stdout: 'fine', exitCode: 0 });
    } finally {
      await srv.close();
    }
  });

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

  it('close() lets a request in flight finish, then refuses new ones', async () => {
    const path = sockPath();
    let srv: CniServer | undefined;
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => { entered = r; });
    srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async () => {
        entered();
        await sleep(100);
        return { stdout: 'finished', exitCode: 0 };
      },
    });
    const pending = callFastPath(path, { env: {}, stdin: '' });
    await inHandler;
    const closed = srv.close();
    assert.deepEqual(await pending, { kind: 'answered', stdout: 'finished', exitCode: 0 });
    await closed;
    srv = undefined;
    const after = await callFastPath(path, { env: {}, stdin: '' });
    assert.equal(after.kind, 'unavailable');
  });
});

describe('fast-path client outcomes', () => {
  it('no socket → unavailable (safe to work locally)', async () => {
    const r = await callFastPath(join(dir, 'absent.sock'), { env: {}, stdin: '' });
    assert.equal(r.kind, 'unavailable');
    if (r.kind === 'unavailable') assert.match(r.reason, /ENOENT/);
  });

  it('connection dropped after the request, a garbage answer or no answer in time → lost', async () => {
    const dropPath = sockPath();
    const drop = await rawServer(dropPath, (s) => s.on('data', () => s.destroy()));
    const garbagePath = sockPath();
    const garbage = await rawServer(garbagePath, (s) => { s.resume(); s.on('end', () => s.end('{"stdout": 3}')); });
    const silentPath = sockPath();
    const held: import('node:net').Socket[] = [];
    const silent = await rawServer(silentPath, (s) => { held.push(s); });
    try {
      assert.equal((await callFastPath(dropPath, { env: {}, stdin: '{}' })).kind, 'lost');
      assert.equal((await callFastPath(garbagePath, { env: {}, stdin: '{}' })).kind, 'lost');
      const t = performance.now();
      const r = await callFastPath(silentPath, { env: {}, stdin: '{}' }, { replyTimeoutMs: 150 });
      assert.equal(r.kind, 'lost');
      if (r.kind === 'lost') assert.match(r.reason, /within 150 ms/);
      assert.ok(performance.now() - t >= 140);
    } finally {
      for (const s of held) s.destroy();
      await Promise.all([closeRaw(drop), closeRaw(garbage), closeRaw(silent)]);
    }
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
      for (const heavy of ['zod', 'plugins/weft/standalone', 'plugins/bridge', 'cni/skel', 'netlink']) {
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

// weftd's CNI fast path at the socket level, in this process: the server's framing, concurrency,
// socket mode, graceful close; the client's outcome classification (unavailable vs lost vs
// answered). What needs processes of its own (a stale socket, the plugin's cold start) is in
// test/netns/weft-plugin-fastpath-process.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCniServer, type CniServer } from '../../src/agent/cni-server.js';
import { callFastPath } from '../../src/cni/fastpath-client.js';
import { createLogger } from '../../src/log.js';

const quiet = createLogger({}, { write: () => undefined });

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
    let overlap!: () => void;
    const overlapped = new Promise<void>((r) => { overlap = r; });
    const srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async (env) => {
        running++;
        peak = Math.max(peak, running);
        // Each handler waits until a second one is in: a server taking one request at a time
        // never gets there, and the test fails on its time limit instead of passing by chance.
        if (running === 2) overlap();
        await overlapped;
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

  it('close() lets a request in flight finish, then refuses new ones', async () => {
    const path = sockPath();
    let srv: CniServer | undefined;
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => { entered = r; });
    let finish!: () => void;
    const finished = new Promise<void>((r) => { finish = r; });
    srv = await startCniServer({
      socketPath: path,
      log: quiet,
      handle: async () => {
        entered();
        await finished;
        return { stdout: 'finished', exitCode: 0 };
      },
    });
    const pending = callFastPath(path, { env: {}, stdin: '' });
    await inHandler;
    const closed = srv.close();
    finish();
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
      const r = await callFastPath(silentPath, { env: {}, stdin: '{}' }, { replyTimeoutMs: 150 });
      assert.equal(r.kind, 'lost');
      if (r.kind === 'lost') assert.match(r.reason, /within 150 ms/);
    } finally {
      for (const s of held) s.destroy();
      await Promise.all([closeRaw(drop), closeRaw(garbage), closeRaw(silent)]);
    }
  });
});

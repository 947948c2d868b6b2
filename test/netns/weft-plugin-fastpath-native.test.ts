// bin/cni/weft's native front (native/cni_client.c) without kernel namespaces: compiled here
// from source into a temporary directory, run against startCniServer with scripted handlers and
// against raw sockets. Covers the answer passed through byte for byte with weftd's exit code,
// only CNI_* variables forwarded, the socket rules of fastPathSocketFor (cniSocket, subnet.env's
// WEFT_CNI_SOCKET, cni.sock next to the subnet file, fastPath:false, configs left to Node), the
// fallback with stdin replayed and the outcome relayed, a truncated answer, VERSION untouched;
// then the real shim and Node plugin: weftd answering, absent, and killed mid-request.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCniServer, type CniServer } from '../../src/agent/cni-server.js';
import { encodeRawReply, fastPathSocketFor, parseRawReply, relayedOutcome, type FastPathReply } from '../../src/cni/fastpath-client.js';
import { createLogger } from '../../src/log.js';

const REPO = resolve(fileURLToPath(import.meta.url), '../../../..');
const quiet = createLogger({}, { write: () => undefined });

let dir = '';
let client = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'wfp-native-'));
  client = join(dir, 'weft.native');
  const cc = spawnSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', client, join(REPO, 'native/cni_client.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `cc: ${cc.stderr}`);
});
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const sockPath = (): string => join(dir, `s${n++}.sock`);

/** Stands in for `node MAIN`: prints what the Node plugin would have been given. */
const FALLBACK = ['sh', '-c', 'printf "fallback argv=%s outcome=%s\\n" "$0" "${WEFT_CNI_FASTPATH_OUTCOME-unset}"; cat; exit 7', 'node-main'];

interface Run { code: number | null; stdout: Buffer; stderr: string }

function runClient(env: Record<string, string>, stdin: string | Buffer, argv: readonly string[] = FALLBACK): Promise<Run> {
  return new Promise((res, rej) => {
    const child = spawn(client, argv, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout: Buffer.concat(out), stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
  });
}

const ADD_ENV = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'wfp-ctr', CNI_NETNS: '/run/netns/wfp-x', CNI_IFNAME: 'eth0', CNI_ARGS: 'A=1;B=2', CNI_PATH: '/opt/cni/bin' };

async function withServer<T>(handle: (env: NodeJS.ProcessEnv, stdin: string) => Promise<FastPathReply>, fn: (path: string, srv: CniServer) => Promise<T>): Promise<T> {
  const path = sockPath();
  const srv = await startCniServer({ socketPath: path, log: quiet, handle });
  try {
    return await fn(path, srv);
  } finally {
    await srv.close();
  }
}

function rawServer(path: string, onConn: (s: Socket) => void): Promise<Server> {
  return new Promise((res) => {
    const srv = createServer({ allowHalfOpen: true }, onConn);
    srv.listen(path, () => res(srv));
  });
}
const closeRaw = (s: Server): Promise<void> => new Promise((r) => s.close(() => r()));

describe('raw reply framing and the relayed outcome', () => {
  it('round-trips multi-byte stdout and rejects truncated or malformed frames', () => {
    const reply = { stdout: '{"msg":"é ✓ \\u0000"}\n', exitCode: 3 };
    const frame = encodeRawReply(reply);
    assert.deepEqual(parseRawReply(frame), reply);
    assert.equal(parseRawReply(frame.subarray(0, frame.length - 1)), undefined, 'one byte short');
    assert.equal(parseRawReply(Buffer.concat([frame, Buffer.from('x')])), undefined, 'one byte too many');
    assert.equal(parseRawReply(Buffer.from('256 0\n')), undefined, 'not an exit code');
    assert.equal(parseRawReply(Buffer.from('0 x\n')), undefined);
    assert.deepEqual(parseRawReply(Buffer.from('0 0\n')), { stdout: '', exitCode: 0 });
  });

  it('reads WEFT_CNI_FASTPATH_OUTCOME; anything else counts as not tried', () => {
    assert.deepEqual(relayedOutcome({ WEFT_CNI_FASTPATH_OUTCOME: 'lost /s: weftd closed\nthe connection' }), { kind: 'lost', reason: '/s: weftd closed\nthe connection' });
    assert.deepEqual(relayedOutcome({ WEFT_CNI_FASTPATH_OUTCOME: 'unavailable /s: ENOENT' }), { kind: 'unavailable', reason: '/s: ENOENT' });
    assert.equal(relayedOutcome({ WEFT_CNI_FASTPATH_OUTCOME: 'answered 0' }), undefined);
    assert.equal(relayedOutcome({}), undefined);
  });
});

describe('native client against a CNI server', () => {
  it('passes weftd\'s stdout through byte for byte with its exit code; only CNI_* variables and stdin are sent', async () => {
    const seen: Array<[NodeJS.ProcessEnv, string]> = [];
    const stdout = '{"cniVersion":"1.0.0","msg":"ünïcödé \\" \\\\ \\n"}\n';
    await withServer(async (env, stdin) => {
      seen.push([env, stdin]);
      return { stdout, exitCode: env.CNI_COMMAND === 'DEL' ? 0 : 42 };
    }, async (path) => {
      // Every byte that needs escaping in JSON, and non-ASCII text, in the config.
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'wfp"\\\t\u0001ö', cniSocket: path, nested: { cniSocket: '/nowhere', a: ['}', '{'] } }) + '\n';
      const r = await runClient({ ...ADD_ENV, HOME: '/root', WEFT_SECRET: 'x' }, conf);
      assert.equal(r.code, 42, r.stderr);
      assert.equal(r.stdout.toString('utf8'), stdout);
      assert.deepEqual(seen[0], [ADD_ENV, conf]);
      const d = await runClient({ CNI_COMMAND: 'DEL' }, conf);
      assert.equal(d.code, 0);
      assert.deepEqual(seen[1]?.[0], { CNI_COMMAND: 'DEL' });
    });
  });

  it('finds the socket like fastPathSocketFor: WEFT_CNI_SOCKET in subnet.env (last line wins, quotes dropped), else cni.sock beside it', async () => {
    await withServer(async () => ({ stdout: 'served\n', exitCode: 0 }), async (path) => {
      const subnetFile = join(dir, 'subnet.env');
      writeFileSync(subnetFile, `FLANNEL_MTU=1450\nWEFT_CNI_SOCKET=/nowhere.sock\n  # comment\n WEFT_CNI_SOCKET = "${path}" \n`);
      const viaEnvConf = JSON.stringify({ subnetFile, delegate: { subnetFile: '/x' } });
      assert.equal(await fastPathSocketFor(viaEnvConf), path, 'the Node client agrees');
      const viaEnv = await runClient(ADD_ENV, viaEnvConf);
      assert.equal(viaEnv.stdout.toString(), 'served\n', viaEnv.stderr);
      // No WEFT_CNI_SOCKET (or no subnet file at all): cni.sock in the subnet file's directory.
      const sub = mkdtempSync(join(dir, 'd'));
      const beside = join(sub, 'cni.sock');
      const srv2 = await startCniServer({ socketPath: beside, log: quiet, handle: async () => ({ stdout: 'beside\n', exitCode: 0 }) });
      try {
        assert.equal(await fastPathSocketFor(JSON.stringify({ subnetFile: join(sub, 'absent.env') })), beside, 'the Node client agrees');
        const r = await runClient(ADD_ENV, JSON.stringify({ subnetFile: join(sub, 'absent.env') }));
        assert.equal(r.stdout.toString(), 'beside\n');
        writeFileSync(join(sub, 'subnet.env'), 'WEFT_CNI_SOCKET=\n');
        const empty = await runClient(ADD_ENV, JSON.stringify({ subnetFile: join(sub, 'subnet.env') }));
        assert.equal(empty.stdout.toString(), 'beside\n', 'an empty value is no value');
      } finally {
        await srv2.close();
      }
    });
  });

  it('reads only a regular subnet file of at most 64 KiB, like fastPathSocketFor: /dev/zero, a FIFO and an oversized file are passed over', async () => {
    const sub = mkdtempSync(join(dir, 'z'));
    const beside = join(sub, 'cni.sock');
    const fifo = join(sub, 'subnet.fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const big = join(sub, 'big.env');
    writeFileSync(big, `WEFT_CNI_SOCKET=/nowhere.sock
${'#'.repeat(64 * 1024)}
`);
    const srv = await startCniServer({ socketPath: beside, log: quiet, handle: async () => ({ stdout: 'beside\n', exitCode: 0 }) });
    try {
      for (const subnetFile of [fifo, big]) {
        const conf = JSON.stringify({ subnetFile });
        assert.equal(await fastPathSocketFor(conf), beside, `the Node client agrees (${subnetFile})`);
        const r = await runClient(ADD_ENV, conf);
        assert.equal(r.stdout.toString(), 'beside\n', `${subnetFile}: ${r.stderr}`);
      }
    } finally {
      await srv.close();
    }
    // /dev/zero: nothing to read, and no socket beside it: Node gets the call (and reports the file).
    const zero = JSON.stringify({ subnetFile: '/dev/zero' });
    assert.equal(await fastPathSocketFor(zero), '/dev/cni.sock');
    const r = await runClient(ADD_ENV, zero);
    assert.match(r.stdout.toString(), /^fallback argv=node-main outcome=unavailable /);
  });

  it('leaves the decision to Node, untried, for fastPath:false, configs it cannot read with certainty, and VERSION', async () => {
    const calls: string[] = [];
    await withServer(async (env) => { calls.push(env.CNI_COMMAND ?? ''); return { stdout: 'served\n', exitCode: 0 }; }, async (path) => {
      for (const conf of [
        JSON.stringify({ cniSocket: path, fastPath: false }),
        `{"cni\\u0053ocket": ${JSON.stringify(path)}}`,
        `{"cniSocket": "${path.replace('/', '\\/')}"}`,
        `[${JSON.stringify({ cniSocket: path })}]`,
        `{"cniSocket": ${JSON.stringify(path)}`,
        'not json',
      ]) {
        const r = await runClient(ADD_ENV, conf);
        assert.equal(r.code, 7, `${conf}: ${r.stderr}`);
        assert.equal(r.stdout.toString(), `fallback argv=node-main outcome=unset\n${conf}`, 'stdin replayed unchanged, nothing relayed');
      }
      const v = await runClient({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
      assert.equal(v.stdout.toString(), 'fallback argv=node-main outcome=unset\n{"cniVersion":"1.0.0"}');
      assert.deepEqual(calls, [], 'weftd never asked');
    });
  });

  it('no socket, refused, or a path too long: falls back with the reason and the whole stdin replayed', async () => {
    const big = JSON.stringify({ cniSocket: join(dir, 'absent.sock'), pad: 'x'.repeat(300_000) });
    const r = await runClient(ADD_ENV, big);
    assert.equal(r.code, 7);
    const text = r.stdout.toString();
    assert.equal(text.slice(0, text.indexOf('\n')), `fallback argv=node-main outcome=unavailable ${join(dir, 'absent.sock')}: ENOENT`);
    assert.equal(text.slice(text.indexOf('\n') + 1), big);
    const long = await runClient(ADD_ENV, JSON.stringify({ cniSocket: `/${'a'.repeat(120)}` }));
    assert.match(long.stdout.toString(), /outcome=unavailable \/a+: ENAMETOOLONG/);
    // Something at the path that accepts no connection (a file; a dead weftd's socket alike).
    writeFileSync(join(dir, 'placeholder'), '');
    const refused = await runClient(ADD_ENV, JSON.stringify({ cniSocket: join(dir, 'placeholder') }));
    assert.match(refused.stdout.toString(), /outcome=unavailable .*placeholder: ECONNREFUSED/);
  });

  it('a request taken but not answered completely is relayed as lost', async () => {
    const cut = sockPath();
    // Answers with a frame one byte short, as a weftd dying while writing would.
    const cutSrv = await rawServer(cut, (s) => { s.resume(); s.on('end', () => s.end('0 10\n{"ips":[]')); });
    const drop = sockPath();
    const dropSrv = await rawServer(drop, (s) => s.on('data', () => s.destroy()));
    try {
      for (const [path, why] of [[cut, 'without a complete answer'], [drop, '']] as const) {
        const conf = JSON.stringify({ cniSocket: path });
        const r = await runClient(ADD_ENV, conf);
        assert.equal(r.code, 7);
        const [head, rest] = [r.stdout.toString().split('\n')[0]!, r.stdout.toString().split('\n').slice(1).join('\n')];
        assert.match(head, new RegExp(`^fallback argv=node-main outcome=lost ${path}: .*${why}`));
        assert.equal(rest, conf);
      }
    } finally {
      await Promise.all([closeRaw(cutSrv), closeRaw(dropSrv)]);
    }
  });
});

describe('bin/cni/weft through its native front', () => {
  const SHIM = join(REPO, 'bin/cni/weft');

  /** weftd's CNI server in a child process whose handler never answers ADD: killed mid-request. */
  function hangingServer(path: string): Promise<{ kill(): Promise<void>; requests: Promise<void> }> {
    const js = `
      const { startCniServer } = await import(${JSON.stringify(join(REPO, 'dist/src/agent/cni-server.js'))});
      const { createLogger } = await import(${JSON.stringify(join(REPO, 'dist/src/log.js'))});
      await startCniServer({ socketPath: ${JSON.stringify(path)}, log: createLogger({}, { write: () => undefined }),
        handle: () => { console.log('request'); return new Promise(() => {}); } });
      console.log('ready');`;
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const child = spawn(process.execPath, ['--input-type=module', '-e', js], { stdio: ['ignore', 'pipe', 'inherit'], env });
    const closed = new Promise((r) => child.on('close', r));
    let out = '';
    let onRequest!: () => void;
    const requests = new Promise<void>((r) => { onRequest = r; });
    return new Promise((res, rej) => {
      child.on('error', rej);
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        if (out.includes('request')) onRequest();
        if (out.includes('ready')) res({ requests, kill: async () => { child.kill('SIGKILL'); await closed; } });
      });
    });
  }

  function runShim(env: Record<string, string>, conf: unknown): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((res, rej) => {
      const child = spawn(SHIM, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
      child.on('error', rej);
      child.on('close', (code) => res({ code, stdout, stderr }));
      child.stdin.end(JSON.stringify(conf));
    });
  }

  it('is built by scripts/build.sh where the shim looks for it', () => {
    const r = spawnSync('sh', ['-c', `test -x "${join(REPO, 'dist/cni/weft.native')}"`]);
    assert.equal(r.status, 0, 'dist/cni/weft.native missing: run scripts/build.sh');
  });

  it('weftd killed while handling ADD: code 11 and not redone; DEL is then done by the Node plugin locally', async () => {
    const path = sockPath();
    const conf = { cniVersion: '1.0.0', name: 'wfpkill', type: 'weft', cniSocket: path, subnetFile: join(dir, 'none.env'), dataDir: join(dir, 'state') };
    const env = { ...ADD_ENV, CNI_CONTAINERID: 'wfp-kill', CNI_PATH: join(REPO, 'bin/cni'), WEFT_LOG_LEVEL: 'debug' };
    const srv = await hangingServer(path);
    try {
      const pending = runShim(env, conf);
      await srv.requests;
      await srv.kill();
      const add = await pending;
      assert.equal(add.code, 1);
      const err = JSON.parse(add.stdout) as { cniVersion: string; code: number; msg: string; details: string };
      assert.equal(err.cniVersion, '1.0.0');
      assert.equal(err.code, 11);
      assert.match(err.msg, /weftd took the ADD request but gave no answer/);
      assert.match(err.details, /run DEL for this container/);
      assert.match(add.stderr, /"msg":"weftd took the request but gave no answer"/);
    } finally {
      await srv.kill();
    }
    // The dead server's socket file is still there: refused, so the Node plugin works locally —
    // nothing saved for this container, so DEL succeeds with nothing to do.
    const del = await runShim({ ...env, CNI_COMMAND: 'DEL' }, conf);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.equal(del.stdout, '');
    assert.match(del.stderr, /fast path unavailable, working standalone.*ECONNREFUSED/);
  });
});

// Many plugin processes at once against one store: the lock must keep allocations unique and the
// store consistent, and exhaustion must fail cleanly. Also weft-ipam next to host-local: same
// config and env in, same result and same files out.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invokeDelegate } from '../../src/cni/exec.js';
import { standalonePluginHost } from '../../src/plugins/pkg/host.js';
import { resultToJson } from '../../src/cni/result.js';
import { weftIpamPlugin } from '../../src/plugins/ipam/main.js';
import { LOCK_FILE } from '../../src/plugins/ipam/store.js';

const repo = resolve(fileURLToPath(import.meta.url), '../../../..');
const WEFT_IPAM = join(repo, 'bin/cni/weft-ipam');
const HOST_LOCAL = '/usr/lib/cni/host-local';

interface Run { code: number; stdout: string; stderr: string }

function runPlugin(bin: string, env: Record<string, string>, stdin: string): Promise<Run> {
  return new Promise((res, rej) => {
    const penv: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env };
    const child = spawn(bin, [], { env: penv, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', rej);
    child.on('close', (code) => res({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

function cniEnv(command: string, id: string, ifname = 'eth0'): Record<string, string> {
  return { CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${id}`, CNI_IFNAME: ifname, CNI_PATH: '/usr/lib/cni' };
}

function conf(dataDir: string, ranges: unknown, version = '1.0.0', name = 'mp'): string {
  return JSON.stringify({ cniVersion: version, name, type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir, ranges, routes: [{ dst: '0.0.0.0/0' }] } });
}

let root = '';
before(() => { root = mkdtempSync(join(tmpdir(), 'wcn-mp-')); });
after(() => { rmSync(root, { recursive: true, force: true }); });

describe('weft-ipam under concurrency', () => {
  it('100 concurrent ADDs into one /24 get 100 unique addresses; 100 DELs leave only bookkeeping', async () => {
    const dataDir = join(root, 'hundred');
    const c = conf(dataDir, [[{ subnet: '10.50.0.0/24' }]]);
    const ids = Array.from({ length: 100 }, (_, i) => `ctr${i}`);
    const t0 = Date.now();
    const adds = await Promise.all(ids.map((id) => runPlugin(WEFT_IPAM, cniEnv('ADD', id), c)));
    const addMs = Date.now() - t0;
    for (const r of adds) assert.equal(r.code, 0, r.stdout + r.stderr);
    const ips = adds.map((r) => (JSON.parse(r.stdout) as { ips: Array<{ address: string }> }).ips[0]?.address);
    assert.equal(new Set(ips).size, 100);
    for (const a of ips) assert.match(a ?? '', /^10\.50\.0\.(\d+)\/24$/);
    const files = readdirSync(join(dataDir, 'mp'));
    assert.equal(files.filter((f) => f.startsWith('10.50.0.')).length, 100);
    // Each file names its owner, and owners match what each process printed.
    adds.forEach((r, i) => {
      const ip = (JSON.parse(r.stdout) as { ips: Array<{ address: string }> }).ips[0]?.address.split('/')[0] ?? '';
      assert.equal(readFileSync(join(dataDir, 'mp', ip), 'utf8'), `${ids[i]}\r\neth0`);
    });
    const t1 = Date.now();
    const dels = await Promise.all(ids.map((id) => runPlugin(WEFT_IPAM, cniEnv('DEL', id), c)));
    const delMs = Date.now() - t1;
    for (const r of dels) assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(readdirSync(join(dataDir, 'mp')).sort(), ['last_reserved_ip.0']);
    process.stderr.write(`# 100 concurrent ADD: ${addMs} ms, 100 concurrent DEL: ${delMs} ms\n`);
  });

  it('exhaustion under concurrency: exactly the free addresses are handed out, the rest fail with 103, nothing leaks', async () => {
    const dataDir = join(root, 'exhaust');
    // 10.51.0.0/28: .1 is the gateway, .15 broadcast → 13 usable.
    const c = conf(dataDir, [[{ subnet: '10.51.0.0/28' }]]);
    const ids = Array.from({ length: 20 }, (_, i) => `x${i}`);
    const runs = await Promise.all(ids.map((id) => runPlugin(WEFT_IPAM, cniEnv('ADD', id), c)));
    const ok = runs.filter((r) => r.code === 0);
    const failed = runs.filter((r) => r.code !== 0);
    assert.equal(ok.length, 13);
    for (const f of failed) {
      const e = JSON.parse(f.stdout) as { code: number; msg: string; cniVersion: string };
      assert.equal(e.code, 103);
      assert.equal(e.cniVersion, '1.0.0');
      assert.match(e.msg, /no IP addresses available in range set 10\.51\.0\.1-10\.51\.0\.14/);
    }
    const held = readdirSync(join(dataDir, 'mp')).filter((f) => f.startsWith('10.'));
    assert.equal(held.length, 13);
    assert.ok(!held.includes('10.51.0.1') && !held.includes('10.51.0.0') && !held.includes('10.51.0.15'));
    // STATUS (1.1.0) reports the exhaustion as 50.
    const st = await runPlugin(WEFT_IPAM, { CNI_COMMAND: 'STATUS', CNI_PATH: '/usr/lib/cni' }, conf(dataDir, [[{ subnet: '10.51.0.0/28' }]], '1.1.0'));
    assert.equal(st.code, 1);
    assert.equal((JSON.parse(st.stdout) as { code: number }).code, 50);
    // GC with only x0 valid frees the others.
    const valid = [{ containerID: 'x0', ifname: 'eth0' }];
    const gcConf = JSON.stringify({ ...JSON.parse(conf(dataDir, [[{ subnet: '10.51.0.0/28' }]], '1.1.0')), 'cni.dev/valid-attachments': valid });
    const gc = await runPlugin(WEFT_IPAM, { CNI_COMMAND: 'GC', CNI_PATH: '/usr/lib/cni' }, gcConf);
    assert.equal(gc.code, 0, gc.stdout);
    const left = readdirSync(join(dataDir, 'mp')).filter((f) => f.startsWith('10.'));
    const x0 = runs[0]?.code === 0 ? (JSON.parse(runs[0].stdout) as { ips: Array<{ address: string }> }).ips[0]?.address.split('/')[0] : undefined;
    assert.deepEqual(left, x0 ? [x0] : []);
  });
});

describe('weft-ipam lock recovery', () => {
  it('20 concurrent ADDs recover from a lock left by a dead process, then leave no lock files', async () => {
    const dataDir = join(root, 'stale');
    const c = conf(dataDir, [[{ subnet: '10.52.0.0/24' }]]);
    mkdirSync(join(dataDir, 'mp'), { recursive: true });
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(join(dataDir, 'mp', LOCK_FILE), `${dead.stdout} 1 ${readlinkSync('/proc/self/ns/pid')}\n`);
    const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => runPlugin(WEFT_IPAM, cniEnv('ADD', `s${i}`), c)));
    for (const r of runs) assert.equal(r.code, 0, r.stdout + r.stderr);
    const ips = runs.map((r) => (JSON.parse(r.stdout) as { ips: Array<{ address: string }> }).ips[0]?.address);
    assert.equal(new Set(ips).size, 20);
    const left = readdirSync(join(dataDir, 'mp'));
    assert.equal(left.filter((f) => f.startsWith('10.')).length, 20);
    assert.deepEqual(left.filter((f) => !f.startsWith('10.')), ['last_reserved_ip.0']);
  });
});

describe('weft-ipam side by side with host-local', () => {
  for (const version of ['0.3.1', '0.4.0', '1.0.0']) {
    it(`same results and files for cniVersion ${version}`, async () => {
      const ranges = [[{ subnet: '10.60.0.0/28', rangeStart: '10.60.0.4' }], [{ subnet: 'fd00:60::/120' }]];
      const dirs = { weft: join(root, `cmp-weft-${version}`), ref: join(root, `cmp-ref-${version}`) };
      const steps: Array<[string, string, string]> = [['ADD', 'a', 'eth0'], ['ADD', 'b', 'eth0'], ['ADD', 'a', 'net1'], ['DEL', 'b', 'eth0'], ['ADD', 'c', 'eth0'], ['DEL', 'zz', 'eth0']];
      for (const [cmd, id, ifname] of steps) {
        const w = await runPlugin(WEFT_IPAM, cniEnv(cmd, id, ifname), conf(dirs.weft, ranges, version));
        const r = await runPlugin(HOST_LOCAL, cniEnv(cmd, id, ifname), conf(dirs.ref, ranges, version));
        assert.equal(w.code, r.code, `${cmd} ${id}: ${w.stdout} vs ${r.stdout}`);
        if (cmd === 'ADD') assert.deepEqual(JSON.parse(w.stdout), JSON.parse(r.stdout), `${cmd} ${id}/${ifname}`);
        else assert.equal(w.stdout, r.stdout);
      }
      const listing = (d: string): Array<[string, string]> =>
        readdirSync(join(d, 'mp')).filter((f) => f !== 'lock').sort().map((f) => [f, readFileSync(join(d, 'mp', f), 'utf8')]);
      assert.deepEqual(listing(dirs.weft), listing(dirs.ref));
    });
  }

  it('same error codes for env mistakes, and CHECK before 0.4.0 is refused by both', async () => {
    const c = conf(join(root, 'err'), [[{ subnet: '10.61.0.0/24' }]]);
    const envs: Array<Record<string, string>> = [
      { CNI_COMMAND: 'ADD', CNI_NETNS: '/x', CNI_IFNAME: 'eth0', CNI_PATH: '/p' },
      { ...cniEnv('ADD', 'a'), CNI_IFNAME: 'way-too-long-ifname' },
      { ...cniEnv('ADD', 'a'), CNI_IFNAME: 'a/b' },
      { ...cniEnv('ADD', 'bad id') },
    ];
    for (const env of envs) {
      const w = await runPlugin(WEFT_IPAM, env, c);
      const r = await runPlugin(HOST_LOCAL, env, c);
      const we = JSON.parse(w.stdout) as { code: number; msg: string };
      const re = JSON.parse(r.stdout) as { code: number; msg: string };
      assert.equal(w.code, 1);
      assert.equal(we.code, re.code, JSON.stringify(env));
      assert.equal(we.msg, re.msg);
    }
    const old = conf(join(root, 'err'), [[{ subnet: '10.61.0.0/24' }]], '0.3.1');
    const w = JSON.parse((await runPlugin(WEFT_IPAM, cniEnv('CHECK', 'a'), old)).stdout) as { code: number; msg: string };
    const r = JSON.parse((await runPlugin(HOST_LOCAL, cniEnv('CHECK', 'a'), old)).stdout) as { code: number; msg: string };
    assert.deepEqual([w.code, w.msg], [r.code, r.msg]);
  });

  it('shares a store with host-local: continues its round robin and releases its allocations', async () => {
    const dataDir = join(root, 'shared');
    const ranges = [[{ subnet: '10.62.0.0/24' }]];
    const r1 = await runPlugin(HOST_LOCAL, cniEnv('ADD', 'h1'), conf(dataDir, ranges));
    assert.equal(r1.code, 0, r1.stdout);
    const w1 = await runPlugin(WEFT_IPAM, cniEnv('ADD', 'w1'), conf(dataDir, ranges));
    assert.equal((JSON.parse(w1.stdout) as { ips: Array<{ address: string }> }).ips[0]?.address, '10.62.0.3/24');
    const chk = await runPlugin(WEFT_IPAM, cniEnv('CHECK', 'h1'), conf(dataDir, ranges));
    assert.equal(chk.code, 0, chk.stdout);
    assert.equal((await runPlugin(WEFT_IPAM, cniEnv('DEL', 'h1'), conf(dataDir, ranges))).code, 0);
    assert.equal((await runPlugin(HOST_LOCAL, cniEnv('DEL', 'w1'), conf(dataDir, ranges))).code, 0);
    assert.deepEqual(readdirSync(join(dataDir, 'mp')).sort(), ['last_reserved_ip.0', 'lock']);
  });
});

describe('delegation', () => {
  it('exec and in-process delegates give the same typed result', async () => {
    const base = { containerId: 'd1', netns: '/run/netns/d1', ifname: 'eth0', args: [] as Array<[string, string]>, path: [join(repo, 'bin/cni'), '/usr/lib/cni'] };
    const mk = (d: string): Record<string, unknown> => JSON.parse(conf(join(root, d), [[{ subnet: '10.63.0.0/24' }]], '1.1.0')) as Record<string, unknown>;
    const viaExec = await invokeDelegate({ target: { kind: 'exec', type: 'weft-ipam' }, command: 'ADD', env: { ...base, command: 'ADD' }, conf: mk('dele') });
    const inProc = await invokeDelegate({ target: { kind: 'in-process', plugin: weftIpamPlugin, host: standalonePluginHost }, command: 'ADD', env: { ...base, command: 'ADD' }, conf: mk('deli') });
    assert.equal(viaExec.kind, 'result');
    assert.equal(inProc.kind, 'result');
    if (viaExec.kind !== 'result' || inProc.kind !== 'result') return;
    assert.deepEqual(resultToJson(viaExec.result, '1.1.0'), resultToJson(inProc.result, '1.1.0'));
    // A delegate's CNI error comes back with its own code, through either path.
    for (const target of [{ kind: 'exec', type: 'weft-ipam' } as const, { kind: 'in-process', plugin: weftIpamPlugin, host: standalonePluginHost } as const]) {
      await assert.rejects(
        invokeDelegate({ target, command: 'ADD', env: { ...base, command: 'ADD' }, conf: mk(target.kind === 'exec' ? 'dele' : 'deli') }),
        (e: unknown) => e instanceof Error && 'code' in e && e.code === 100 && /duplicate allocation/.test(e.message),
      );
    }
    // A reference plugin's error is parsed too (host-local does not speak 1.1.0).
    await assert.rejects(
      invokeDelegate({ target: { kind: 'exec', type: 'host-local' }, command: 'ADD', env: { ...base, command: 'ADD' }, conf: mk('delh') }),
      (e: unknown) => e instanceof Error && 'code' in e && e.code === 1 && /incompatible CNI versions/.test(e.message),
    );
    await assert.rejects(
      invokeDelegate({ target: { kind: 'exec', type: 'no-such-plugin' }, command: 'DEL', env: { ...base, command: 'DEL' }, conf: mk('delh') }),
      /failed to find plugin "no-such-plugin"/,
    );
    for (const d of ['dele', 'deli']) {
      await invokeDelegate({ target: { kind: 'exec', type: 'weft-ipam' }, command: 'DEL', env: { ...base, command: 'DEL' }, conf: mk(d) });
      assert.deepEqual(readdirSync(join(root, d, 'mp')), ['last_reserved_ip.0']);
    }
  });
});

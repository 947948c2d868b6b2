// weftd's batched container-interface deletion on the real kernel. The "host" is a throwaway
// namespace: the code under test runs in a child process entered into it (nsenter), since it
// deletes host-side veth ends in its own namespace. Checked against `ip -json`.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netlink } from '../../src/netlink/index.js';
import { NetnsPool, ipJson, type TestNetns } from '../../src/netns/testing.js';
import { callFastPath, type FastPathOutcome } from '../../src/cni/fastpath-client.js';
import type { BatchReport, DeleteInterfaceRequest } from '../../src/agent/cni-worker.js';
import { CNI_PATH } from './cni-harness.js';

const distSrc = (rel: string): string => new URL(`../../src/${rel}`, import.meta.url).href;

function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...extra };
}

/** Runs an ES module snippet with node inside the namespace at nsPath; returns its stdout. */
function nodeIn(nsPath: string, script: string): string {
  const r = spawnSync('nsenter', [`--net=${nsPath}`, '--', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', env: childEnv() });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return r.stdout;
}

function linkNames(ns: TestNetns): string[] {
  return ipJson<Array<{ ifname: string }>>(ns.name, ['link', 'show']).map((l) => l.ifname).sort();
}

describe('batched container-interface deletion', { timeout: 120_000 }, () => {
  const pool = new NetnsPool('wdl');
  const tmp = mkdtempSync(join(tmpdir(), 'wdl-'));
  const children: ChildProcessWithoutNullStreams[] = [];
  after(() => {
    for (const c of children) if (c.exitCode === null && c.pid !== undefined) c.kill('SIGKILL');
    pool.cleanup();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('deletes 20 veths in one group request; each request answered, repeats idempotent, odd cases per request', () => {
    const host = pool.make();
    const pods = Array.from({ length: 20 }, () => pool.make());
    Netlink.with(host.path, (nl) => {
      pods.forEach((p, i) => nl.createVeth({ name: `wdlv${i}`, peerName: 'eth0', peerNsPath: p.path, up: true, peerUp: true }));
    });
    // A container interface that is no veth (plain delete inside the pod), a pod whose interface
    // is already gone, and a namespace that no longer exists.
    const odd = pool.make();
    Netlink.with(odd.path, (nl) => nl.createBridge({ name: 'eth0' }));
    const empty = pool.make();
    const requests: DeleteInterfaceRequest[] = [
      ...pods.map((p, i) => ({ id: i + 1, netns: p.path, ifname: 'eth0' })),
      { id: 101, netns: odd.path, ifname: 'eth0' },
      { id: 102, netns: empty.path, ifname: 'eth0' },
      { id: 103, netns: '/run/netns/wdl-gone-already', ifname: 'eth0' },
    ];
    const run = (): BatchReport => JSON.parse(nodeIn(host.path, `
      const { deleteContainerInterfaces } = await import(${JSON.stringify(distSrc('agent/cni-worker.js'))});
      process.stdout.write(JSON.stringify(deleteContainerInterfaces(${JSON.stringify(requests)})));
    `)) as BatchReport;

    const first = run();
    assert.deepEqual(first.replies, requests.map((r) => ({ id: r.id, ok: true })));
    assert.equal(first.grouped, 20, 'every pod veth went in the group delete');
    assert.ok(first.group !== undefined && first.group > 0xffff, `a high group (${String(first.group)})`);
    assert.deepEqual(linkNames(host), ['lo'], 'no host-side end is left');
    for (const p of [...pods, odd]) assert.deepEqual(linkNames(p), ['lo'], `${p.name} has no eth0`);

    const again = run();
    assert.deepEqual(again.replies, requests.map((r) => ({ id: r.id, ok: true })), 'DEL of what is gone succeeds');
    assert.equal(again.grouped, 0);
  });

  it('a failing request gets its own error; the rest of the batch still goes', () => {
    const host = pool.make();
    const pods = Array.from({ length: 3 }, () => pool.make());
    Netlink.with(host.path, (nl) => {
      pods.forEach((p, i) => nl.createVeth({ name: `wdlf${i}`, peerName: 'eth0', peerNsPath: p.path }));
    });
    // A name the kernel refuses outright (longer than IFNAMSIZ): that request fails, alone.
    const requests: DeleteInterfaceRequest[] = [
      ...pods.map((p, i) => ({ id: i + 1, netns: p.path, ifname: 'eth0' })),
      { id: 9, netns: pods[0]!.path, ifname: 'x'.repeat(20) },
    ];
    const report = JSON.parse(nodeIn(host.path, `
      const { deleteContainerInterfaces } = await import(${JSON.stringify(distSrc('agent/cni-worker.js'))});
      process.stdout.write(JSON.stringify(deleteContainerInterfaces(${JSON.stringify(requests)})));
    `)) as BatchReport;
    assert.deepEqual(report.replies.slice(0, 3), [1, 2, 3].map((id) => ({ id, ok: true })));
    const bad = report.replies[3];
    assert.ok(bad && !bad.ok && bad.id === 9, JSON.stringify(bad));
    assert.match(bad.message, /x{20}/, 'the error names the request\'s interface');
    assert.equal(report.grouped, 3);
    assert.deepEqual(linkNames(host), ['lo']);
  });

  it('20 concurrent DELs through a CNI server: all veths gone, each answered, batched, repeats succeed', async () => {
    const host = pool.make();
    const subnetFile = join(tmp, 'subnet.env');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.86.0.0/16\nFLANNEL_SUBNET=10.86.3.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n');
    const socketPath = join(tmp, 'cni.sock');
    // A script file, not --eval: worker threads inherit the parent's execArgv.
    const script = join(tmp, 'server.mjs');
    writeFileSync(script, `
      const { startCniServer } = await import(${JSON.stringify(distSrc('agent/cni-server.js'))});
      const { createLogger } = await import(${JSON.stringify(distSrc('log.js'))});
      const server = await startCniServer({ socketPath: ${JSON.stringify(socketPath)}, log: createLogger({}, { level: 'debug' }) });
      process.stdout.write('ready\\n');
      process.stdin.resume();
      process.stdin.on('end', () => { void server.close().then(() => process.exit(0)); });
    `);
    const server = spawn('nsenter', [`--net=${host.path}`, '--', process.execPath, script], { env: childEnv() });
    children.push(server);
    const stderr: string[] = [];
    server.stderr.on('data', (c: Buffer) => stderr.push(c.toString()));
    await new Promise<void>((resolve, reject) => {
      server.stdout.on('data', (c: Buffer) => { if (c.toString().includes('ready')) resolve(); });
      server.on('exit', (code) => reject(new Error(`server exited ${String(code)}: ${stderr.join('')}`)));
    });

    const conf = JSON.stringify({
      cniVersion: '1.0.0', name: 'wdlnet', type: 'weft', subnetFile, dataDir: join(tmp, 'state'),
      ipam: { type: 'weft-ipam', dataDir: join(tmp, 'ipam') }, delegate: { bridge: 'wdlbr0', isDefaultGateway: false },
    });
    const pods = Array.from({ length: 20 }, () => pool.make());
    const call = (command: 'ADD' | 'DEL', p: TestNetns, i: number): Promise<FastPathOutcome> =>
      callFastPath(socketPath, { env: { CNI_COMMAND: command, CNI_CONTAINERID: `wdl-c${i}`, CNI_NETNS: p.path, CNI_IFNAME: 'eth0', CNI_PATH }, stdin: conf });
    const expectOk = (o: FastPathOutcome, what: string): void => {
      assert.equal(o.kind, 'answered', `${what}: ${JSON.stringify(o)}`);
      if (o.kind === 'answered') assert.equal(o.exitCode, 0, `${what}: ${o.stdout}`);
    };
    for (const [i, p] of pods.entries()) expectOk(await call('ADD', p, i), `ADD ${i}`);
    const ports = ipJson<unknown[]>(host.name, ['link', 'show', 'master', 'wdlbr0']);
    assert.equal(ports.length, 20, '20 veths on the bridge after the ADDs');

    const dels = await Promise.all(pods.map((p, i) => call('DEL', p, i)));
    dels.forEach((o, i) => expectOk(o, `DEL ${i}`));
    assert.deepEqual(ipJson<unknown[]>(host.name, ['link', 'show', 'master', 'wdlbr0']), [], 'no veth left on the bridge');
    for (const p of pods) assert.deepEqual(linkNames(p), ['lo'], `${p.name} has no eth0`);
    const batches = stderr.join('').split('\n').filter((l) => l.includes('"msg":"cni delete batch"')).map((l) => JSON.parse(l) as { size: number; grouped: number });
    assert.ok(batches.some((b) => b.grouped >= 2), `some DELs shared one group delete: ${JSON.stringify(batches)}`);

    const repeats = await Promise.all(pods.map((p, i) => call('DEL', p, i)));
    repeats.forEach((o, i) => expectOk(o, `repeated DEL ${i}`));

    server.stdin.end();
    const code = await new Promise<number | null>((resolve) => { if (server.exitCode !== null) resolve(server.exitCode); else server.on('exit', resolve); });
    assert.equal(code, 0, stderr.join(''));
  });
});

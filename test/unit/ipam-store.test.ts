import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { CniCode, WeftError } from '../../src/errors.js';
import { parseIpamConfig } from '../../src/plugins/ipam/config.js';
import { ipamAdd, ipamCheck, ipamDel, ipamGc, ipamStatus, ipamUsage, requestedIPs, type IpamTarget } from '../../src/plugins/ipam/ipam.js';
import { acquireFileLock, isStale } from '../../src/fs/lock.js';
import { DiskStore, LOCK_FILE } from '../../src/plugins/ipam/store.js';
import { formatCidr, formatIP, parseIP } from '../../src/net/ip.js';
import { parseCniArgs } from '../../src/cni/env.js';
import { invokePlugin, renderOutcome, type CniPlugin } from '../../src/cni/skel.js';
import { standalonePluginHost } from '../../src/plugins/pkg/host.js';
import { z } from 'zod';
import { createLogger } from '../../src/log.js';
import { parseResolvConf } from '../../src/plugins/ipam/resolv.js';
import { checkIpam, ipamDelegateTarget, ipamExec, ipamExecAdd, ipamExecDel, weftIpamPlugin } from '../../src/plugins/ipam/main.js';

let root = '';
before(() => { root = mkdtempSync(join(tmpdir(), 'wcn-ipam-')); });
after(() => { rmSync(root, { recursive: true, force: true }); });

let n = 0;
function target(section: Record<string, unknown>): IpamTarget {
  n++;
  return { config: parseIpamConfig({ type: 'weft-ipam', dataDir: join(root, `d${n}`), ...section }), network: 'net' };
}
const dir = (t: IpamTarget): string => join(t.config.dataDir, t.network);
const files = (t: IpamTarget): string[] => { try { return readdirSync(dir(t)).sort(); } catch { return []; } };
const addrs = (r: { ips: Array<{ address: Parameters<typeof formatCidr>[0] }> }): string[] => r.ips.map((i) => formatCidr(i.address));

async function rejects(p: Promise<unknown>, code: number, msg: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof WeftError && e.code === code && msg.test(e.message));
}

describe('ipam operations on disk', () => {
  it('allocates one address per range set, v4 and v6, in host-local file format', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.0.0/29' }], [{ subnet: 'fd00::/125' }]], routes: [{ dst: '0.0.0.0/0' }] });
    const r = await ipamAdd(t, 'c1', 'eth0');
    assert.deepEqual(addrs(r), ['10.9.0.2/29', 'fd00::2/125']);
    assert.deepEqual(r.ips.map((i) => i.gateway && formatIP(i.gateway)), ['10.9.0.1', 'fd00::1']);
    assert.equal(r.routes.length, 1);
    assert.deepEqual(files(t), ['10.9.0.2', 'fd00::2', 'last_reserved_ip.0', 'last_reserved_ip.1']);
    assert.equal(readFileSync(join(dir(t), '10.9.0.2'), 'utf8'), 'c1\r\neth0');
    assert.equal(readFileSync(join(dir(t), 'last_reserved_ip.1'), 'utf8'), 'fd00::2');
  });

  it('round-robins: a released address is not reused until the range wraps', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.1.0/29' }]] });
    assert.deepEqual(addrs(await ipamAdd(t, 'a', 'eth0')), ['10.9.1.2/29']);
    assert.deepEqual(addrs(await ipamAdd(t, 'b', 'eth0')), ['10.9.1.3/29']);
    await ipamDel(t, 'a', 'eth0');
    assert.deepEqual(addrs(await ipamAdd(t, 'c', 'eth0')), ['10.9.1.4/29']);
    for (const id of ['d', 'e']) await ipamAdd(t, id, 'eth0'); // .5 .6
    assert.deepEqual(addrs(await ipamAdd(t, 'f', 'eth0')), ['10.9.1.2/29']); // wrapped
  });

  it('exhaustion is code 103 naming the range, and leaves nothing behind', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.2.0/30' }], [{ subnet: '10.9.3.0/29' }]] }); // first set: one address
    await ipamAdd(t, 'a', 'eth0');
    const before = files(t);
    await rejects(ipamAdd(t, 'b', 'eth0'), CniCode.IpamExhausted, /no IP addresses available in range set 10\.9\.2\.1-10\.9\.2\.2/);
    assert.deepEqual(files(t), before);
    // Exhaustion in the second set releases what the first set got in the same call.
    const t2 = target({ ranges: [[{ subnet: '10.9.4.0/29' }], [{ subnet: '10.9.5.0/30' }]] });
    await ipamAdd(t2, 'a', 'eth0');
    const before2 = files(t2).filter((f) => !f.startsWith('last_'));
    await rejects(ipamAdd(t2, 'b', 'eth0'), CniCode.IpamExhausted, /10\.9\.5\.1-10\.9\.5\.2/);
    assert.deepEqual(files(t2).filter((f) => !f.startsWith('last_')), before2);
    await rejects(ipamStatus(t2), CniCode.PluginNotAvailable, /range set 1/);
  });

  it('hands out requested addresses from CNI_ARGS, args.cni.ips and runtimeConfig.ips', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.6.0/24' }], [{ subnet: 'fd00:6::/64' }]] });
    const req = requestedIPs(
      { args: { cni: { ips: ['fd00:6::77'] } }, runtimeConfig: { ips: ['10.9.6.50/24'] } },
      { args: parseCniArgs('IgnoreUnknown=1;IP=10.9.6.50') },
    );
    assert.deepEqual(req.map(formatIP), ['10.9.6.50', 'fd00:6::77']);
    assert.deepEqual(addrs(await ipamAdd(t, 'a', 'eth0', req)), ['10.9.6.50/24', 'fd00:6::77/64']);
    await rejects(ipamAdd(t, 'b', 'eth0', [parseIP('10.9.6.50')]), CniCode.IpamExhausted, /10\.9\.6\.50 is not available/);
    await rejects(ipamAdd(t, 'c', 'eth0', [parseIP('10.9.6.1')]), CniCode.InvalidNetworkConfig, /gateway/);
    await rejects(ipamAdd(t, 'd', 'eth0', [parseIP('192.168.1.1')]), CniCode.InvalidNetworkConfig, /failed to allocate all requested IPs: 192\.168\.1\.1/);
    assert.deepEqual(files(t).filter((f) => !f.startsWith('last_')), ['10.9.6.50', 'fd00:6::77']);
  });

  it('refuses a second allocation for the same container and ifname', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.7.0/24' }]] });
    await ipamAdd(t, 'a', 'eth0');
    await rejects(ipamAdd(t, 'a', 'eth0'), CniCode.Internal, /duplicate allocation/);
    assert.deepEqual(addrs(await ipamAdd(t, 'a', 'net1')), ['10.9.7.3/24']);
  });

  it('DEL releases by container and ifname, succeeds when nothing is allocated', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.8.0/24' }]] });
    await ipamDel(t, 'ghost', 'eth0'); // before the directory even exists
    await ipamAdd(t, 'a', 'eth0');
    await ipamAdd(t, 'a', 'eth1');
    assert.deepEqual((await ipamDel(t, 'a', 'eth0')).map(formatIP), ['10.9.8.2']);
    assert.deepEqual(files(t), ['10.9.8.3', 'last_reserved_ip.0']);
    await ipamDel(t, 'a', 'eth0');
    // A host-local file from before ifnames were recorded is released by ID alone.
    writeFileSync(join(dir(t), '10.9.8.9'), 'old');
    assert.deepEqual((await ipamDel(t, 'old', 'eth0')).map(formatIP), ['10.9.8.9']);
  });

  it('CHECK finds the allocation and notices a missing one', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.9.0/24' }]] });
    const r = await ipamAdd(t, 'a', 'eth0');
    await ipamCheck(t, 'a', 'eth0', r);
    await rejects(ipamCheck(t, 'b', 'eth0'), CniCode.UnknownContainer, /failed to find address/);
    const wrong = { ...r, ips: [{ address: { ip: parseIP('10.9.9.99'), prefix: 24 } }] };
    await rejects(ipamCheck(t, 'a', 'eth0', wrong), CniCode.UnknownContainer, /10\.9\.9\.99 from prevResult/);
  });

  it('GC releases everything not in valid attachments', async () => {
    const t = target({ ranges: [[{ subnet: '10.9.10.0/24' }]] });
    for (const id of ['a', 'b', 'c']) await ipamAdd(t, id, 'eth0');
    await ipamAdd(t, 'b', 'eth1');
    const released = await ipamGc(t, [{ containerID: 'b', ifname: 'eth0' }, { containerID: 'zzz', ifname: 'eth0' }]);
    assert.deepEqual(released.map(formatIP).sort(), ['10.9.10.2', '10.9.10.4', '10.9.10.5']);
    assert.deepEqual(files(t), ['10.9.10.3', 'last_reserved_ip.0']);
    const usage = ipamUsage(t);
    assert.deepEqual(usage, { type: 'available', free: [252n] });
  });
});

describe('weft-ipam plugin edges', () => {
  const quiet = createLogger({}, { write: () => undefined });
  const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'p1', CNI_NETNS: '/x', CNI_IFNAME: 'eth0', CNI_PATH: '/p' };

  it('an invalid subnet is code 7 naming the key, and nothing is written', async () => {
    const dataDir = join(root, 'bad-subnet');
    const conf = { cniVersion: '1.0.0', name: 'n', type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir, ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.1.0.0/99' }]] } };
    const o = await invokePlugin(weftIpamPlugin, env, JSON.stringify(conf), { log: quiet, host: standalonePluginHost });
    assert.equal(o.kind, 'error');
    if (o.kind !== 'error') return;
    assert.equal(o.error.code, CniCode.InvalidNetworkConfig);
    assert.match(o.error.message, /ipam\.ranges\.1\.0\.subnet/);
    assert.equal(existsSync(dataDir), false);
  });

  it('fills dns from resolvConf', async () => {
    const resolv = join(root, 'resolv.conf');
    writeFileSync(resolv, '# comment\nnameserver 10.96.0.10\nnameserver fd00::10\nsearch a.svc b.svc\ndomain cluster.local\noptions ndots:5 edns0\n');
    assert.deepEqual(parseResolvConf(readFileSync(resolv, 'utf8')), {
      nameservers: ['10.96.0.10', 'fd00::10'], search: ['a.svc', 'b.svc'], domain: 'cluster.local', options: ['ndots:5', 'edns0'],
    });
    const conf = { cniVersion: '0.3.1', name: 'n', type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir: join(root, 'dns'), subnet: '10.3.0.0/24', resolvConf: resolv } };
    const o = renderOutcome(await invokePlugin(weftIpamPlugin, env, JSON.stringify(conf), { log: quiet, host: standalonePluginHost }));
    const json = JSON.parse(o.stdout);
    assert.equal(json.dns.domain, 'cluster.local');
    assert.deepEqual(json.ips, [{ version: '4', address: '10.3.0.2/24', gateway: '10.3.0.1' }]);
  });

  it('DEL needs only dataDir: a section ADD would refuse still releases, and one with nothing allocated succeeds', async () => {
    const dataDir = join(root, 'lenient-del');
    const good = { cniVersion: '1.1.0', name: 'n', type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir, subnet: '10.5.0.0/24' } };
    const bad = { ...good, ipam: { type: 'weft-ipam', dataDir, ranges: [[{ subnet: '10.5.0.0/99' }]], routes: [{ dst: 'nowhere' }] } };
    assert.equal((await invokePlugin(weftIpamPlugin, env, JSON.stringify(good), { log: quiet, host: standalonePluginHost })).kind, 'result');
    assert.equal((await invokePlugin(weftIpamPlugin, env, JSON.stringify(bad), { log: quiet, host: standalonePluginHost })).kind, 'error', 'ADD refuses it');
    assert.deepEqual(readdirSync(join(dataDir, 'n')).filter((f) => f.startsWith('10.')), ['10.5.0.2']);
    const del = { ...env, CNI_COMMAND: 'DEL' };
    assert.equal((await invokePlugin(weftIpamPlugin, del, JSON.stringify(bad), { log: quiet, host: standalonePluginHost })).kind, 'done');
    assert.deepEqual(readdirSync(join(dataDir, 'n')).filter((f) => f.startsWith('10.')), [], 'released from dataDir');
    assert.equal((await invokePlugin(weftIpamPlugin, del, JSON.stringify({ ...bad, name: 'never' }), { log: quiet, host: standalonePluginHost })).kind, 'done');
  });

  it('GC without cni.dev/valid-attachments refuses instead of wiping the network', async () => {
    const conf = { cniVersion: '1.1.0', name: 'n', type: 'weft-ipam', ipam: { type: 'weft-ipam', dataDir: join(root, 'dns'), subnet: '10.3.0.0/24' } };
    const o = await invokePlugin(weftIpamPlugin, { CNI_COMMAND: 'GC', CNI_PATH: '/p' }, JSON.stringify(conf), { log: quiet, host: standalonePluginHost });
    assert.equal(o.kind, 'error');
    assert.deepEqual(readdirSync(join(root, 'dns', 'n')).filter((f) => f.startsWith('10.')), ['10.3.0.2']);
  });
});

describe('IPAM delegation from a main plugin', () => {
  const quiet = createLogger({}, { write: () => undefined });
  // A minimal main plugin that, like bridge, hands its ipam section to the IPAM plugin.
  const main: CniPlugin<unknown> = {
    name: 'main',
    confSchema: z.unknown(),
    add: (ctx) => ipamExecAdd(ctx),
    del: (ctx) => ipamExec(ctx, 'DEL'),
  };
  for (const type of ['weft-ipam', 'host-local']) {
    it(`ADD/DEL through ipam.type ${type} (${type === 'weft-ipam' ? 'in-process' : 'exec'})`, async () => {
      const dataDir = join(root, `deleg-${type}`);
      assert.equal(ipamDelegateTarget(type, standalonePluginHost).kind, type === 'weft-ipam' ? 'in-process' : 'exec');
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'dn', type: 'main', ipam: { type, dataDir, ranges: [[{ subnet: '10.4.0.0/24' }]] } });
      const env = { CNI_CONTAINERID: 'm1', CNI_NETNS: '/x', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
      const o = renderOutcome(await invokePlugin(main, { CNI_COMMAND: 'ADD', ...env }, conf, { log: quiet, host: standalonePluginHost }));
      assert.equal(o.exitCode, 0, o.stdout);
      assert.deepEqual(JSON.parse(o.stdout).ips, [{ address: '10.4.0.2/24', gateway: '10.4.0.1' }]);
      assert.equal((await invokePlugin(main, { CNI_COMMAND: 'DEL', ...env }, conf, { log: quiet, host: standalonePluginHost })).kind, 'done');
      assert.deepEqual(readdirSync(join(dataDir, 'dn')).filter((f) => f.startsWith('10.')), []);
    });
  }

  it('ipamExecDel: no type or an IPAM plugin that does not exist has nothing to release (DEL succeeds); ADD refuses both up front', async () => {
    const tolerant: CniPlugin<unknown> = { ...main, name: 'tolerant', add: async (ctx) => { await checkIpam(ctx); return ipamExecAdd(ctx); }, del: (ctx) => ipamExecDel(ctx) };
    const env = { CNI_CONTAINERID: 'm2', CNI_NETNS: '/x', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
    for (const [ipam, msg] of [[{ type: 'weft-nope', dataDir: join(root, 'nope') }, /weft-nope/], [{ dataDir: join(root, 'nope') }, /ipam\.type/]] as const) {
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'dn', type: 'tolerant', ipam });
      const add = await invokePlugin(tolerant, { CNI_COMMAND: 'ADD', ...env }, conf, { log: quiet, host: standalonePluginHost });
      assert.equal(add.kind, 'error');
      if (add.kind === 'error') {
        assert.equal(add.error.code, CniCode.InvalidNetworkConfig);
        assert.match(add.error.message, msg);
      }
      assert.equal((await invokePlugin(tolerant, { CNI_COMMAND: 'DEL', ...env }, conf, { log: quiet, host: standalonePluginHost })).kind, 'done');
    }
    assert.equal(existsSync(join(root, 'nope')), false);
  });
});

describe('file lock', () => {
  it('excludes a second holder until release', async () => {
    const path = join(root, 'l1');
    const a = await acquireFileLock(path);
    let got = false;
    const b = acquireFileLock(path).then((l) => { got = true; return l; });
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(got, false);
    a.release();
    (await b).release();
    assert.deepEqual(readdirSync(root).filter((f) => f.startsWith('l1')), []);
  });

  it('breaks a lock whose owner is dead', async () => {
    const path = join(root, LOCK_FILE);
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const pidns = readlinkSync('/proc/self/ns/pid');
    writeFileSync(path, `${dead.stdout} 12345 ${pidns}\n`);
    const l = await acquireFileLock(path, { timeoutMs: 2000 });
    assert.match(readFileSync(path, 'utf8'), new RegExp(`^${process.pid} `));
    l.release();
  });

  it('keeps a live owner\'s lock and times out with code 11', async () => {
    const path = join(root, 'l3');
    const mine = await acquireFileLock(path);
    await assert.rejects(acquireFileLock(path, { timeoutMs: 50 }), (e: unknown) => e instanceof WeftError && e.code === CniCode.TryAgainLater);
    mine.release();
  });

  it('judges staleness: half-written and foreign-namespace locks only by age', () => {
    assert.equal(isStale('', 100, 60_000), false);
    assert.equal(isStale('', 20_000, 60_000), true);
    assert.equal(isStale('1 1 pid:[1]\n', 100, 60_000), false);
    assert.equal(isStale('1 1 pid:[1]\n', 70_000, 60_000), true);
  });

  it('a store in a fresh directory lists nothing', () => {
    assert.deepEqual(new DiskStore(join(root, 'none'), 'x').all(), []);
  });
});

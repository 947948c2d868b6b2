import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { CniCode, WeftError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { invokePlugin, renderOutcome, type CniPlugin, type InvocationOutcome } from '../../src/cni/skel.js';
import { standalonePluginHost } from '../../src/plugins/pkg/host.js';
import { commandAllowed, SUPPORTED_VERSIONS, type CniCommand } from '../../src/cni/version.js';
import { formatIP, parseCidr } from '../../src/net/ip.js';

// A small but real plugin: echoes prevResult plus one address derived from its own `octet` key,
// and records which commands reached it.
const echoSchema = z.object({ octet: z.number().int().min(1).max(254), label: z.string().optional() }).passthrough();
type EchoConf = z.infer<typeof echoSchema>;
const calls: string[] = [];
const echo: CniPlugin<EchoConf> = {
  name: 'echo',
  confSchema: echoSchema,
  async add(ctx) {
    calls.push(`ADD ${ctx.env.containerId}`);
    const prev = ctx.conf.prevResult ?? { interfaces: [], ips: [], routes: [], dns: {} };
    return { ...prev, ips: [...prev.ips, { address: parseCidr(`10.1.0.${ctx.config.octet}/24`) }] };
  },
  async del(ctx) {
    calls.push(`DEL ${ctx.env.netns || '-'}`);
  },
  async check(ctx) {
    if (!ctx.conf.prevResult) throw new WeftError(CniCode.InvalidNetworkConfig, 'CHECK needs prevResult');
    calls.push(`CHECK ${ctx.conf.prevResult.ips.map((i) => formatIP(i.address.ip)).join(',')}`);
  },
  async gc(ctx) {
    calls.push(`GC ${(ctx.conf.validAttachments ?? []).map((a) => a.containerID).join(',')}`);
  },
};

const quiet = createLogger({}, { write: () => undefined });
const ENV = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };

function conf(extra: Record<string, unknown> = {}, version = '1.1.0'): string {
  return JSON.stringify({ cniVersion: version, name: 'net1', type: 'echo', octet: 5, ...extra });
}

async function run(command: string, stdin: string, env: Record<string, string> = ENV): Promise<InvocationOutcome> {
  return invokePlugin(echo, { CNI_COMMAND: command, ...env }, stdin, { log: quiet, host: standalonePluginHost });
}

function errorOf(o: InvocationOutcome): WeftError {
  assert.equal(o.kind, 'error', JSON.stringify(o));
  if (o.kind !== 'error') throw new Error('unreachable');
  return o.error;
}

describe('plugin skeleton', () => {
  it('answers VERSION in the asked version, listing all five', async () => {
    const o = renderOutcome(await run('VERSION', '{"cniVersion":"0.4.0"}', {}));
    assert.equal(o.exitCode, 0);
    assert.deepEqual(JSON.parse(o.stdout), { cniVersion: '0.4.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    assert.equal(JSON.parse(renderOutcome(await run('VERSION', '', {})).stdout).cniVersion, '1.1.0');
  });

  it('prints ADD results in the conf version', async () => {
    for (const v of SUPPORTED_VERSIONS) {
      const o = renderOutcome(await run('ADD', conf({}, v)));
      assert.equal(o.exitCode, 0);
      const json = JSON.parse(o.stdout);
      assert.equal(json.cniVersion, v);
      assert.equal(json.ips[0].address, '10.1.0.5/24');
      assert.equal(json.ips[0].version, v.startsWith('0.') ? '4' : undefined);
    }
  });

  it('passes prevResult through typed, whatever layout it came in', async () => {
    const prev = { cniVersion: '0.3.1', ips: [{ version: '4', address: '10.2.0.9/16' }] };
    const o = renderOutcome(await run('ADD', conf({ prevResult: prev }, '0.3.1')));
    assert.deepEqual(JSON.parse(o.stdout).ips.map((i: { address: string }) => i.address), ['10.2.0.9/16', '10.1.0.5/24']);
  });

  it('gates commands by version: CHECK from 0.4.0, STATUS and GC from 1.1.0 (code 1)', async () => {
    const gates: Array<[CniCommand, string]> = [['CHECK', '0.3.1'], ['STATUS', '1.0.0'], ['GC', '1.0.0']];
    for (const [cmd, v] of gates) {
      assert.equal(commandAllowed(v as '0.3.1', cmd), false);
      const e = errorOf(await run(cmd, conf({ prevResult: { ips: [] } }, v)));
      assert.equal(e.code, CniCode.IncompatibleVersion);
      assert.equal(e.message, `config version does not allow ${cmd}`);
    }
    calls.length = 0;
    assert.equal((await run('CHECK', conf({ prevResult: { ips: [{ version: '4', address: '10.1.0.5/24' }] } }, '0.4.0'))).kind, 'done');
    assert.equal((await run('GC', conf({ 'cni.dev/valid-attachments': [{ containerID: 'a', ifname: 'eth0' }] }))).kind, 'done');
    assert.equal((await run('STATUS', conf())).kind, 'done'); // no status(): always ready
    assert.deepEqual(calls, ['CHECK 10.1.0.5', 'GC a']);
  });

  it('DEL runs without CNI_NETNS', async () => {
    calls.length = 0;
    const { CNI_NETNS: _drop, ...noNetns } = ENV;
    assert.equal((await run('DEL', conf(), noNetns)).kind, 'done');
    assert.deepEqual(calls, ['DEL -']);
  });

  it("refuses the plugin's own network namespace as CNI_NETNS for ADD, CHECK and DEL (code 4), before the plugin runs", async () => {
    calls.length = 0;
    const prevResult = { cniVersion: '1.1.0', interfaces: [], ips: [{ address: '10.1.0.5/24' }] };
    for (const netns of ['/proc/self/ns/net', `/proc/${process.pid}/ns/net`, '/proc/thread-self/ns/net']) {
      for (const [command, stdin] of [['ADD', conf()], ['CHECK', conf({ prevResult })], ['DEL', conf()]] as const) {
        const e = errorOf(await run(command, stdin, { ...ENV, CNI_NETNS: netns }));
        assert.equal(e.code, CniCode.InvalidEnvironment, `${command} ${netns}`);
        assert.match(e.message, /CNI_NETNS .* the plugin's own network namespace/);
      }
    }
    assert.deepEqual(calls, [], 'the plugin was never called');
    // A path with nothing behind it is the plugin's to judge: DEL of a namespace already gone runs.
    assert.equal((await run('DEL', conf(), { ...ENV, CNI_NETNS: '/run/netns/wsk-gone' })).kind, 'done');
    assert.deepEqual(calls, ['DEL /run/netns/wsk-gone']);
  });

  it('rejects an unsupported conf version with code 1 and the versions in details', async () => {
    const e = errorOf(await run('ADD', conf({}, '0.2.0')));
    assert.equal(e.code, 1);
    assert.match(e.details, /0\.3\.0/);
  });

  it('malformed JSON is code 6, wrong types are code 7 naming the key, extra keys pass', async () => {
    assert.equal(errorOf(await run('ADD', '{"cniVersion":')).code, CniCode.DecodeFailure);
    assert.equal(errorOf(await run('ADD', '[1]')).code, CniCode.DecodeFailure);
    const wrongPlugin = errorOf(await run('ADD', conf({ octet: 'five' })));
    assert.equal(wrongPlugin.code, CniCode.InvalidNetworkConfig);
    assert.match(wrongPlugin.message, /octet/);
    const wrongBase = errorOf(await run('ADD', conf({ runtimeConfig: 'x' })));
    assert.equal(wrongBase.code, 7);
    assert.match(wrongBase.message, /runtimeConfig/);
    const wrongPrev = errorOf(await run('ADD', conf({ prevResult: { ips: [{ address: 'nope' }] } })));
    assert.equal(wrongPrev.code, 7);
    assert.match(wrongPrev.message, /prevResult.*ips\.0\.address/);
    const badName = errorOf(await run('ADD', JSON.stringify({ cniVersion: '1.0.0', name: 'n 1', type: 'echo', octet: 1 })));
    assert.equal(badName.code, 7);
    assert.equal((await run('ADD', conf({ someRuntimeKey: { a: 1 } }))).kind, 'result');
  });

  it('prints errors as {cniVersion, code, msg, details} with exit 1', async () => {
    const o = renderOutcome(await run('ADD', conf({ octet: 999 }, '0.4.0')));
    assert.equal(o.exitCode, 1);
    const json = JSON.parse(o.stdout);
    assert.deepEqual(Object.keys(json), ['cniVersion', 'code', 'msg', 'details']);
    assert.equal(json.cniVersion, '0.4.0');
    assert.equal(json.code, 7);
    assert.equal(typeof json.msg, 'string');
  });

  it('an env error still answers in the conf version', async () => {
    const o = renderOutcome(await run('ADD', conf({}, '1.0.0'), { CNI_PATH: '/x' }));
    const json = JSON.parse(o.stdout);
    assert.equal(json.cniVersion, '1.0.0');
    assert.equal(json.code, 4);
    assert.equal(json.msg, 'required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing');
  });

  it('turns a non-WeftError thrown by a plugin into code 100', async () => {
    const boom: CniPlugin<unknown> = { ...echo, name: 'boom', confSchema: z.unknown(), add: async () => { throw new Error('kaput'); } } as CniPlugin<unknown>;
    const o = await invokePlugin(boom, { CNI_COMMAND: 'ADD', ...ENV }, conf(), { log: quiet, host: standalonePluginHost });
    const e = errorOf(o);
    assert.equal(e.code, CniCode.Internal);
    assert.equal(e.message, 'kaput');
  });
});

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CniCode, WeftError } from '../../src/errors.js';
import { parseCniArgs, parseCniEnv, REQUIRED_ENV, validateIfname, cniArg } from '../../src/cni/env.js';
import { CNI_COMMANDS } from '../../src/cni/version.js';

const FULL = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };

function codeOf(fn: () => unknown): { code: number; msg: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof WeftError, `expected WeftError, got ${String(err)}`);
    return { code: err.code, msg: err.message };
  }
  assert.fail('expected an error');
}

describe('CNI env table', () => {
  for (const command of CNI_COMMANDS) {
    for (const v of REQUIRED_ENV[command]) {
      it(`${command} without ${v} fails with code 4 naming it`, () => {
        const env: Record<string, string> = { CNI_COMMAND: command, ...FULL };
        delete env[v];
        const e = codeOf(() => parseCniEnv(env));
        assert.equal(e.code, CniCode.InvalidEnvironment);
        assert.equal(e.msg, `required env variables [${v}] missing`);
      });
    }
  }

  it('lists every missing variable at once, in table order', () => {
    const e = codeOf(() => parseCniEnv({ CNI_COMMAND: 'ADD', CNI_NETNS: '/x' }));
    assert.equal(e.msg, 'required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing');
  });

  it('DEL tolerates a missing CNI_NETNS; GC and STATUS need only CNI_PATH; VERSION nothing', () => {
    assert.equal(parseCniEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c', CNI_IFNAME: 'eth0', CNI_PATH: '/p' }).netns, '');
    assert.deepEqual(parseCniEnv({ CNI_COMMAND: 'GC', CNI_PATH: '/a:/b:' }).path, ['/a', '/b']);
    assert.equal(parseCniEnv({ CNI_COMMAND: 'STATUS', CNI_PATH: '/p' }).command, 'STATUS');
    assert.equal(parseCniEnv({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
  });

  it('missing or unknown CNI_COMMAND is code 4', () => {
    assert.equal(codeOf(() => parseCniEnv({})).msg, 'required env variables [CNI_COMMAND] missing');
    const e = codeOf(() => parseCniEnv({ CNI_COMMAND: 'FROB', ...FULL }));
    assert.equal(e.code, 4);
    assert.match(e.msg, /FROB/);
  });

  it('validates the container ID like the reference', () => {
    const e = codeOf(() => parseCniEnv({ CNI_COMMAND: 'ADD', ...FULL, CNI_CONTAINERID: 'c 1' }));
    assert.equal(e.code, CniCode.InvalidEnvironment);
    assert.equal(e.msg, 'invalid characters in containerID');
  });

  it('validates CNI_IFNAME like the reference (all code 4)', () => {
    const cases: Array<[string, string]> = [
      ['abcdefghijklmnop', 'interface name is too long'],
      ['a/b', 'interface name contains / or : or whitespace characters'],
      ['a:b', 'interface name contains / or : or whitespace characters'],
      ['a b', 'interface name contains / or : or whitespace characters'],
      ['a\tb', 'interface name contains / or : or whitespace characters'],
      ['.', 'interface name is . or ..'],
      ['..', 'interface name is . or ..'],
    ];
    for (const [name, msg] of cases) {
      const e = codeOf(() => validateIfname(name));
      assert.equal(e.code, CniCode.InvalidEnvironment, name);
      assert.equal(e.msg, msg, name);
    }
    validateIfname('abcdefghijklmno'); // exactly 15 is fine
    validateIfname('eth0.100');
  });

  it('counts CNI_IFNAME in UTF-8 bytes, as the kernel does (IFNAMSIZ-1 = 15)', () => {
    const long = `eth${'é'.repeat(12)}`; // 15 characters, 27 bytes
    assert.equal(long.length, 15);
    try {
      validateIfname(long);
      assert.fail('a 27-byte name passed');
    } catch (err) {
      assert.ok(err instanceof WeftError);
      assert.equal(err.code, CniCode.InvalidEnvironment);
      assert.equal(err.message, 'interface name is too long');
      assert.match(err.details, /27 bytes.*at most 15/);
    }
    assert.equal(codeOf(() => parseCniEnv({ CNI_COMMAND: 'ADD', ...FULL, CNI_IFNAME: `${'€'.repeat(5)}x` })).code, CniCode.InvalidEnvironment, '16 bytes');
    validateIfname(`eth${'é'.repeat(6)}`); // 15 bytes
    validateIfname('€'.repeat(5)); // 15 bytes
  });

  it('parses CNI_ARGS pairs and rejects entries without =', () => {
    assert.deepEqual(parseCniArgs('IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=a=b'), [
      ['IgnoreUnknown', '1'],
      ['IP', '10.0.0.5'],
      ['K8S_POD_NAME', 'a=b'],
    ]);
    assert.equal(cniArg({ args: parseCniArgs('A=1;IP=x') }, 'IP'), 'x');
    const e = codeOf(() => parseCniEnv({ CNI_COMMAND: 'ADD', ...FULL, CNI_ARGS: 'IP' }));
    assert.equal(e.code, 4);
    assert.match(e.msg, /CNI_ARGS/);
  });
});

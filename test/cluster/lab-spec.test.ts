// The lab's pure pieces: flag parsing, names and prefixes, the macvlan address plan, the state
// record, process identity, and tables that stay aligned with colour on.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cidrContains, ipCompare, parseCidr, parseIP } from '../../src/net/ip.js';
import { labBackendNames, macvlanRange } from '../../src/lab/backends.js';
import { labNsPrefix, labRoot, labStateDir, parseLabName } from '../../src/lab/naming.js';
import { isSameProcess, processStartTime, processesInNamespaces } from '../../src/lab/procs.js';
import { LabInputError, parseLabSpec } from '../../src/lab/spec.js';
import { LabDirs, type LabRecord, readRecord, writeRecord } from '../../src/lab/state.js';
import { table } from '../../src/lab/render.js';

describe('lab spec parsing', () => {
  it('defaults to 3 hosts × 2 pods, vxlan, file store, lab "weft"', () => {
    const s = parseLabSpec({});
    assert.deepEqual({ name: s.name, hosts: s.hosts, pods: s.pods, backend: s.backend.name, store: s.store }, { name: 'weft', hosts: 3, pods: 2, backend: 'vxlan', store: 'file' });
  });
  it('knows every built-in backend', () => {
    for (const b of ['vxlan', 'host-gw', 'udp', 'macvlan']) assert.ok(labBackendNames().includes(b), b);
  });
  for (const [raw, msg] of [
    [{ hosts: '0' }, /--hosts: expected 1\.\.16, got 0/],
    [{ hosts: '17' }, /--hosts: expected 1\.\.16, got 17/],
    [{ hosts: '-1' }, /--hosts: expected a whole number/],
    [{ pods: '2.5' }, /--pods: expected a whole number/],
    [{ backend: 'VXLAN' }, /unknown backend "VXLAN"/],
    [{ store: 'zk' }, /--store: expected file or etcd/],
    [{ name: 'a-b' }, /invalid lab name "a-b"/],
    [{ name: '' }, /invalid lab name ""/],
    [{ name: 'x'.repeat(17) }, /invalid lab name/],
    [{ backend: 'macvlan', hosts: '16', pods: '10' }, /macvlan: 16 hosts leave 9 underlay addresses per host, fewer than --pods 10/],
  ] as const) {
    it(`refuses ${JSON.stringify(raw)}`, () => {
      assert.throws(() => parseLabSpec(raw), (e: unknown) => e instanceof LabInputError && msg.test(e.message));
    });
  }
});

describe('lab names', () => {
  it('no lab\'s namespace prefix is the start of another lab\'s', () => {
    const a = labNsPrefix(parseLabName('a'));
    const ab = labNsPrefix(parseLabName('ab'));
    assert.equal(a, 'weftlab-a-');
    assert.equal(ab.startsWith(a), false);
    assert.throws(() => parseLabName('a-b'));
  });
  it('keeps state under WEFT_LAB_ROOT when set', () => {
    assert.equal(labRoot({ WEFT_LAB_ROOT: '/tmp/x' }), '/tmp/x');
    assert.equal(labRoot({}), '/run/weft-lab');
    assert.equal(labStateDir(parseLabName('demo'), '/r'), '/r/demo');
  });
});

describe('macvlan address plan', () => {
  for (const hosts of [1, 3, 16]) {
    it(`${hosts} host(s): disjoint slices inside 198.18.0.100–249, clear of hosts and outside`, () => {
      const ranges = Array.from({ length: hosts }, (_, i) => macvlanRange(i, hosts));
      const net = parseCidr('198.18.0.0/24');
      for (const [i, r] of ranges.entries()) {
        assert.ok(cidrContains(net, parseIP(r.start)) && cidrContains(net, parseIP(r.end)));
        assert.ok(ipCompare(parseIP(r.start), parseIP('198.18.0.100')) >= 0);
        assert.ok(ipCompare(parseIP(r.end), parseIP('198.18.0.249')) <= 0);
        assert.ok(ipCompare(parseIP(r.start), parseIP(r.end)) <= 0);
        const next = ranges[i + 1];
        if (next) assert.ok(ipCompare(parseIP(r.end), parseIP(next.start)) < 0, 'slices do not overlap');
      }
    });
  }
});

describe('lab state record', () => {
  it('round-trips and names the bad field of a torn record', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wlb-state-'));
    try {
      const dirs = new LabDirs(dir);
      assert.equal(readRecord(dirs), undefined);
      const rec: LabRecord = {
        version: 1, name: 'wlbx', backend: 'vxlan', store: 'file', hosts: 1, pods: 1, phase: 'creating', createdAt: new Date().toISOString(),
        controller: { pid: process.pid, startTime: processStartTime(process.pid) ?? '' },
        hostList: [{ index: 0, ns: 'weftlab-wlbx-1-h0', ip: '198.18.0.1' }], containers: [], processes: [], extraNamespaces: [],
      };
      writeRecord(dirs, rec);
      assert.deepEqual(readRecord(dirs), rec);
      writeRecord(dirs, { ...rec, hosts: 0 });
      assert.throws(() => readRecord(dirs), /lab\.json: hosts:/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('process identity', () => {
  it('PID + start time identify this process; a different start time does not', () => {
    const st = processStartTime(process.pid);
    assert.ok(st && /^\d+$/.test(st));
    assert.equal(isSameProcess(process.pid, st), true);
    assert.equal(isSameProcess(process.pid, String(Number(st) + 1)), false);
    assert.equal(processStartTime(2 ** 22 + 7), undefined);
  });
  it('finds the processes inside a namespace by its inode', () => {
    assert.ok(processesInNamespaces(['/proc/self/ns/net']).includes(process.pid));
    assert.deepEqual(processesInNamespaces(['/run/netns/weftlab-does-not-exist']), []);
  });
});

describe('lab tables', () => {
  it('pads on visible text, so colour codes do not shift columns', () => {
    const plain = table(['a', 'b'], [[{ text: 'ok', tone: 'ok' }, 'x'], ['longer', { text: 'FAIL', tone: 'bad' }]], false);
    const coloured = table(['a', 'b'], [[{ text: 'ok', tone: 'ok' }, 'x'], ['longer', { text: 'FAIL', tone: 'bad' }]], true);
    // eslint-disable-next-line no-control-regex
    assert.equal(coloured.replace(/\x1b\[[0-9;]*m/g, ''), plain);
    assert.match(coloured, /\x1b\[32mok {4}\x1b\[0m/);
    assert.deepEqual(plain.split('\n').slice(0, 3), ['a       b', '──────  ────', 'ok      x']);
  });
});

// The lab's pure pieces: flag parsing, names and prefixes, the macvlan address plan, the state
// record, process identity, and tables that stay aligned with colour on.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cidrContains, formatCidr, ipCompare, parseCidr, parseIP, rangeToCidrs } from '../../src/net/ip.js';
import { labBackend, labBackendNames, macvlanRange, macvlanShimPlan } from '../../src/lab/backends.js';
import { parseBirdProtocols, splitHosts } from '../../src/lab/racks.js';
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
    [{ store: 'zk' }, /--store: expected file, etcd or kube/],
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

describe('lab racks and macvlan shim flags', () => {
  it('--racks defaults to 1; bgp spans racks with at least one host per rack', () => {
    assert.equal(parseLabSpec({}).racks, 1);
    const s = parseLabSpec({ backend: 'bgp', racks: '2', hosts: '3' });
    assert.equal(s.racks, 2);
    assert.equal(s.macvlanShim, false);
    assert.deepEqual(splitHosts(3, 2), [2, 1]);
    assert.deepEqual(splitHosts(16, 3), [6, 5, 5]);
    assert.deepEqual(splitHosts(2, 2), [1, 1]);
  });
  for (const [raw, msg] of [
    [{ backend: 'bgp', racks: '0' }, /--racks: expected 1\.\.16, got 0/],
    [{ backend: 'bgp', racks: 'two' }, /--racks: expected a whole number/],
    [{ backend: 'bgp', racks: '3', hosts: '2' }, /--racks 3: needs at least one host per rack, got --hosts 2/],
    [{ backend: 'host-gw', racks: '2' }, /--racks 2: the host-gw backend cannot span racks: .*share one L2 segment.*\(backends that can: bgp\)/],
    [{ backend: 'macvlan', racks: '2' }, /--racks 2: the macvlan backend cannot span racks: its containers sit on the underlay segment/],
    [{ backend: 'vxlan', racks: '2' }, /--racks 2: the vxlan backend cannot span racks; in the lab only bgp/],
    [{ backend: 'vxlan', macvlanShim: true }, /--macvlan-shim: only for --backend macvlan/],
    [{ backend: 'macvlan', macvlanShim: true, hosts: '15', pods: '10' }, /macvlan: 15 hosts leave 9 underlay addresses per host \(one kept for the shim\), fewer than --pods 10/],
  ] as const) {
    it(`refuses ${JSON.stringify(raw)}`, () => {
      assert.throws(() => parseLabSpec(raw), (e: unknown) => e instanceof LabInputError && msg.test(e.message));
    });
  }
  it('a full macvlan slice still fits without the shim (the shim costs exactly one address)', () => {
    assert.equal(parseLabSpec({ backend: 'macvlan', hosts: '15', pods: '10' }).pods, 10);
  });
});

describe('macvlan shim plan', () => {
  it('rangeToCidrs covers exactly the range with aligned blocks', () => {
    const got = rangeToCidrs(parseIP('198.18.0.100'), parseIP('198.18.0.149')).map(formatCidr);
    assert.deepEqual(got, ['198.18.0.100/30', '198.18.0.104/29', '198.18.0.112/28', '198.18.0.128/28', '198.18.0.144/30', '198.18.0.148/31']);
    assert.deepEqual(rangeToCidrs(parseIP('10.0.0.0'), parseIP('10.0.0.255')).map(formatCidr), ['10.0.0.0/24']);
    assert.deepEqual(rangeToCidrs(parseIP('10.0.0.7'), parseIP('10.0.0.7')).map(formatCidr), ['10.0.0.7/32']);
    assert.throws(() => rangeToCidrs(parseIP('10.0.0.8'), parseIP('10.0.0.7')), /empty/);
  });
  for (const hosts of [1, 2, 3, 16]) {
    it(`${hosts} host(s): the shim takes the slice's last address, IPAM and the routes the rest`, () => {
      for (let i = 0; i < hosts; i++) {
        const r = macvlanRange(i, hosts);
        const plan = macvlanShimPlan(i, hosts);
        assert.equal(formatCidr(plan.address), `${r.end}/32`);
        assert.equal(ipCompare(parseIP(plan.rangeEnd), parseIP(r.end)), -1);
        // Every container address is routed via the shim; the shim's own address and the
        // neighbours' slices are not.
        const routed = (ip: string) => plan.routes.some((c) => cidrContains(c, parseIP(ip)));
        assert.ok(routed(r.start) && routed(plan.rangeEnd));
        assert.equal(routed(r.end), false);
        const total = plan.routes.reduce((n, c) => n + 2 ** (32 - c.prefix), 0);
        const size = Number(parseIP(r.end).value - parseIP(r.start).value);
        assert.equal(total, size, 'routes cover the containers\' range and nothing else');
        const conf = labBackend('macvlan')?.conflist({ dirs: LabDirs.of(parseLabName('x')), index: i, hosts, pods: 1, outsideIP: '198.18.0.254', macvlanShim: true, ipMasq: true }) as { plugins: Array<{ ipam: { ranges: Array<Array<{ rangeEnd: string }>> } }> };
        assert.equal(conf.plugins[0]?.ipam.ranges[0]?.[0]?.rangeEnd, plan.rangeEnd, 'IPAM never hands out the shim address');
      }
    });
  }
});

describe('lab conflist and NAT', () => {
  it('with weftd --ip-masq the weft plugin picks the bridge\'s masquerade itself; without, the lab turns it off', () => {
    const ctx = { dirs: LabDirs.of(parseLabName('x')), index: 0, hosts: 2, pods: 1, outsideIP: '198.18.0.254', macvlanShim: false };
    const plugin = (ipMasq: boolean) => (labBackend('vxlan')?.conflist({ ...ctx, ipMasq }) as { plugins: Array<Record<string, unknown>> }).plugins[0];
    assert.equal(plugin(true)?.delegate, undefined);
    assert.deepEqual(plugin(false)?.delegate, { ipMasq: false });
    assert.equal(parseLabSpec({ backend: 'vxlan' }).ipMasq, true, 'the CLI\'s labs always masquerade');
  });
});

describe('BIRD protocol table', () => {
  it('reads the BGP rows of birdc show protocols, with one- or two-field Since', () => {
    const text = [
      'BIRD 2.0.12 ready.',
      'Name       Proto      Table      State  Since         Info',
      'device1    Device     ---        up     00:50:43.021  ',
      'h0         BGP        ---        up     00:50:44.301  Established   ',
      'h1         BGP        ---        start  2026-11-21 23:50:43  Active        Socket: Connection refused',
      'kernel1    Kernel     master4    up     00:50:43.021  ',
    ].join('\n');
    assert.deepEqual(parseBirdProtocols(text), [
      { name: 'h0', state: 'up', info: 'Established' },
      { name: 'h1', state: 'start', info: 'Active Socket: Connection refused' },
    ]);
  });
});

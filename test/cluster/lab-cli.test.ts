// weftctl lab: bad input gets a clear message and the right exit code (2 usage, 1 failure), and
// two labs live side by side — one in use refuses a second up, and removing one leaves the other
// working.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertGone, downQuietly, lab, labName, namespacesOf, upOk } from './lab-harness.js';

describe('weftctl lab: bad input', () => {
  const cases: Array<{ args: string[]; code: number; msg: RegExp }> = [
    { args: ['up', '--name', 'wlbbad', '--hosts', '0'], code: 2, msg: /--hosts: expected 1\.\.16, got 0/ },
    { args: ['up', '--name', 'wlbbad', '--hosts', 'three'], code: 2, msg: /--hosts: expected a whole number/ },
    { args: ['up', '--name', 'wlbbad', '--pods', '0'], code: 2, msg: /--pods: expected 1\.\.32, got 0/ },
    { args: ['up', '--name', 'wlbbad', '--backend', 'ipsec'], code: 2, msg: /--backend: unknown backend "ipsec"; expected one of vxlan, host-gw, udp, macvlan/ },
    { args: ['up', '--name', 'wlbbad', '--store', 'consul'], code: 2, msg: /--store: expected file, etcd or kube, got "consul"/ },
    { args: ['up', '--name', 'wlb-bad'], code: 2, msg: /--name: invalid lab name "wlb-bad"/ },
    { args: ['up', '--name', 'WLB'], code: 2, msg: /invalid lab name "WLB"/ },
    { args: ['up', '--name', 'wlbbad', '--frobnicate'], code: 2, msg: /Unknown option '--frobnicate'/ },
    { args: ['down', '--name', 'wlbbad', '--hosts', '2'], code: 2, msg: /--hosts does not apply to lab down/ },
    { args: ['launch'], code: 2, msg: /expected one of up, status, check, bench, down, demo, got "launch"/ },
    { args: ['up', '--name', 'wlbbad', '--backend', 'vxlan', '--backend', 'udp'], code: 2, msg: /--backend: lab up takes one backend/ },
    { args: ['demo', '--name', 'wlbbad', '--backend', 'vxlan,ipsec'], code: 2, msg: /--backend: unknown backend "ipsec"/ },
    { args: ['demo', '--name', 'wlbbad', '--backends', 'ipsec'], code: 2, msg: /--backend: unknown backend "ipsec"/ },
    { args: ['demo', '--name', 'wlbbad', '--backend', ','], code: 2, msg: /--backend: empty list/ },
    { args: ['demo', '--name', 'wlbbad', '--store', 'consul'], code: 2, msg: /--store: expected file, etcd or kube, got "consul"/ },
    { args: ['demo', '--name', 'wlbbad', '--racks', '2'], code: 2, msg: /--racks does not apply to lab demo/ },
    { args: ['down', '--name', 'wlbnothere'], code: 1, msg: /no lab named "wlbnothere"/ },
    { args: ['status', '--name', 'wlbnothere'], code: 1, msg: /no lab named "wlbnothere"/ },
    { args: ['check', '--name', 'wlbnothere'], code: 1, msg: /no lab named "wlbnothere"/ },
  ];
  for (const c of cases) {
    it(`${c.args.join(' ')} → exit ${c.code}`, () => {
      const r = lab(c.args);
      assert.equal(r.code, c.code, r.stderr);
      assert.match(r.stderr, c.msg);
      assert.equal(r.stdout, '');
      assert.deepEqual(namespacesOf('wlbbad'), []);
    });
  }
});

describe('two labs side by side', { timeout: 90_000 }, () => {
  const a = labName();
  const b = labName();
  after(() => { downQuietly(a); downQuietly(b); });

  it('coexist, refuse a name in use, and survive each other\'s removal', () => {
    const recA = upOk(['--name', a, '--backend', 'vxlan', '--hosts', '2', '--pods', '1']);
    const recB = upOk(['--name', b, '--backend', 'host-gw', '--hosts', '2', '--pods', '1']);
    // Same addresses inside (each lab is its own world), different namespaces outside.
    assert.deepEqual(recA.hostList.map((h) => h.ip), recB.hostList.map((h) => h.ip));
    assert.equal(namespacesOf(a).some((n) => namespacesOf(b).includes(n)), false);

    const again = lab(['up', '--name', a, '--backend', 'udp']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, new RegExp(`lab "${a}" already exists .*weftctl lab down --name ${a}`));
    assert.equal(lab(['status', '--name', a]).code, 0, 'the refused up did not disturb the lab');

    for (const n of [a, b]) assert.equal(lab(['check', '--name', n]).code, 0, `check ${n}`);
    assert.equal(lab(['down', '--name', a]).code, 0);
    assertGone(a, recA.processes.map((p) => p.pid));
    const checkB = lab(['check', '--name', b]);
    assert.equal(checkB.code, 0, `lab ${b} still works after ${a} went:\n${checkB.stdout}`);
    assert.match(checkB.stdout, /all 8 probes passed/);
    assert.equal(lab(['down', '--name', b]).code, 0);
    assertGone(b, recB.processes.map((p) => p.pid));
  });
});

describe('weftctl lab demo with --backend and --store', { timeout: 180_000 }, () => {
  const name = labName('wrv');
  after(() => downQuietly(name));

  it('runs only the backends named (repeated --backend and the --backends alias) on the store asked for', () => {
    const r = lab(['demo', '--name', name, '--backend', 'host-gw', '--backends', 'vxlan', '--store', 'etcd', '--hosts', '2', '--pods', '1', '--seconds', '1'], 170_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /backends host-gw, vxlan, etcd store/);
    for (const ran of ['host-gw', 'vxlan']) assert.match(r.stdout, new RegExp(`^\\W*${ran}\\s`, 'm'), `a ${ran} row`);
    assert.doesNotMatch(r.stdout, /^\W*(udp|macvlan|bgp)\s/m, 'no other backend ran');
    assert.match(r.stdout, /demo passed .*nothing left behind/);
    assert.deepEqual(namespacesOf(name), []);
  });

  it('the kube row: vxlan on a kube-apiserver, then a NetworkPolicy applied with kubectl, blocking exactly what the evaluator says', () => {
    const r = lab(['demo', '--name', name, '--backend', 'kube', '--hosts', '2', '--pods', '2'], 170_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /kube \(vxlan on a kube-apiserver, with a NetworkPolicy\)/);
    // 2 × 2 pods, h1's pods take connections only from h0's: the two h1 pods cannot reach each other.
    assert.match(r.stdout, /^\W*kube\s.*\s2 blocked \/ 10 allowed, as expected/m);
    assert.match(r.stdout, /demo passed .*nothing left behind/);
    assert.deepEqual(namespacesOf(name), []);
  });
});

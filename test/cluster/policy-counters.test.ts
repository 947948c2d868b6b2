// Policy verdict counters on a real lab (vxlan, 2 hosts × 1 pod, file store): with two policies
// isolating h1c0 for ingress (lab/allow-h0: TCP 7 from h0's pods; lab/deny-in: nothing), blocked
// pings and connections from h0c0 raise the denied counters of both policies and of the endpoint
// lab/h1c0, an echo over TCP 7 the allowed ones of lab/allow-h0 and lab/h1c0; the counters never
// go down across a policy change that rewrites the chains; weftd's /metrics, /policy/counters and
// `weftctl policy list --lab` show the same; the default deny logs with weft's prefix. Run under
// /tmp/weft-netns.lock.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LabRecord } from '../../src/lab/state.js';
import { weftdGet } from '../../src/cli/weftd-http.js';
import type { PolicyCountersDoc } from '../../src/policy/counters.js';
import { WEFTCTL, cleanEnv, downQuietly, labName, stateDir, upOk } from './lab-harness.js';

const name = labName('wvd');
let rec: LabRecord;

const socket = (h: number) => `unix:${join(stateDir(name), 'hosts', `h${h}`, 'api.sock')}`;

function container(c: string): { ns: string; ip: string } {
  const x = rec.containers.find((k) => k.name === c);
  assert.ok(x?.ip, `lab container ${c}`);
  return { ns: x.ns, ip: x.ip };
}

function weftctl(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(WEFTCTL, args, { encoding: 'utf8', env: cleanEnv(), timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function applyPolicies(objs: unknown[]): void {
  const r = spawnSync(WEFTCTL, ['policy', 'apply', '-f', '-', '--store', 'file', '--store-dir', join(stateDir(name), 'store')],
    { encoding: 'utf8', env: cleanEnv(), input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }) });
  assert.equal(r.status, 0, r.stderr);
}

const allowH0 = (ports: number[]) => ({
  apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'allow-h0', namespace: 'lab' },
  spec: { podSelector: { matchLabels: { pod: 'h1c0' } }, ingress: [{ from: [{ podSelector: { matchLabels: { host: 'h0' } } }], ports: ports.map((port) => ({ protocol: 'TCP', port })) }] },
});
const denyIn = {
  apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-in', namespace: 'lab' },
  spec: { podSelector: { matchLabels: { pod: 'h1c0' } }, policyTypes: ['Ingress'] },
};

/** A TCP connection from h0c0 to h1c0:port that sends a line and reads it back; true when echoed. */
function tcpFromH0(port: number, timeoutS = 1): boolean {
  const src = container('h0c0');
  const dst = container('h1c0');
  const r = spawnSync('ip', ['netns', 'exec', src.ns, 'timeout', String(timeoutS), 'bash', '-c',
    `exec 3<>/dev/tcp/${dst.ip}/${port} && echo weft >&3 && read -r line <&3 && [ "$line" = weft ]`], { encoding: 'utf8' });
  return r.status === 0;
}

function pingFromH0(count: number): number {
  const src = container('h0c0');
  const r = spawnSync('ip', ['netns', 'exec', src.ns, 'ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '1', container('h1c0').ip], { encoding: 'utf8' });
  return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? '0');
}

async function counters(h: number): Promise<PolicyCountersDoc> {
  const r = await weftdGet(socket(h), '/policy/counters');
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body) as PolicyCountersDoc;
}

interface Snapshot { allowH0: number; allowH0Bytes: number; allowH0Denied: number; denyIn: number; podAllowed: number; podDenied: number }

async function snapshot(): Promise<Snapshot> {
  const d = await counters(1);
  const p = (policy: string, verdict: string) => d.policies.find((x) => x.policy === policy && x.direction === 'ingress' && x.verdict === verdict);
  const e = (verdict: string) => d.endpoints.find((x) => x.namespace === 'lab' && x.pod === 'h1c0' && x.direction === 'ingress' && x.verdict === verdict);
  return {
    allowH0: p('lab/allow-h0', 'allowed')?.packets ?? -1, allowH0Bytes: p('lab/allow-h0', 'allowed')?.bytes ?? -1,
    allowH0Denied: p('lab/allow-h0', 'denied')?.packets ?? -1, denyIn: p('lab/deny-in', 'denied')?.packets ?? -1,
    podAllowed: e('allowed')?.packets ?? -1, podDenied: e('denied')?.packets ?? -1,
  };
}

/** Polls (weftd reads the kernel at most once a second) until `ok` holds. */
async function until(what: string, ok: (s: Snapshot) => boolean): Promise<Snapshot> {
  let s = await snapshot();
  for (let i = 0; i < 40 && !ok(s); i++) {
    await sleep(250);
    s = await snapshot();
  }
  assert.ok(ok(s), `${what}: ${JSON.stringify(s)}`);
  return s;
}

function assertNotBelow(now: Snapshot, then: Snapshot): void {
  for (const k of Object.keys(then) as (keyof Snapshot)[]) assert.ok(now[k] >= then[k], `${k} went from ${then[k]} to ${now[k]}`);
}

/** Until both hosts' kernels have the chains for the current policies (h1 isolates h1c0). */
async function untilEnforced(check: (table: string) => boolean): Promise<string> {
  let table = '';
  for (let i = 0; i < 100; i++) {
    const r = spawnSync('ip', ['netns', 'exec', rec.hostList[1]!.ns, 'nft', 'list', 'table', 'inet', 'weft-policy'], { encoding: 'utf8' });
    table = r.stdout;
    if (r.status === 0 && check(table)) return table;
    await sleep(100);
  }
  assert.fail(`h1's policy table never got there:\n${table}`);
}

describe('policy verdict counters on a lab', { timeout: 240_000 }, () => {
  before(() => {
    rec = upOk(['--name', name, '--hosts', '2', '--pods', '1', '--backend', 'vxlan']);
  });
  after(() => downQuietly(name));

  let beforeChange: Snapshot;

  it('counts blocked traffic as denied for every isolating policy and the endpoint, and allowed on the rule that allowed it', async () => {
    assert.equal(tcpFromH0(7, 3), true, 'the echo answers before any policy');
    applyPolicies([allowH0([7]), denyIn]);
    const table = await untilEnforced((t) => t.includes('allow-h0') && t.includes('10.') && /ingress-deny-4[^}]*elements/s.test(t));
    // The default deny logs to NFLOG group 7 under weft's prefix, rate-limited.
    assert.match(table, /limit name "deny-log" log prefix "weft-deny:ingress:lab\/allow-h0,lab\/deny-in" group 7/);

    const zero = await until('series at zero once enforced', (s) => s.allowH0 === 0 && s.denyIn === 0 && s.podDenied === 0);
    assert.equal(zero.allowH0Denied, 0);

    assert.equal(pingFromH0(3), 0, 'ping is denied');
    assert.equal(tcpFromH0(8), false, 'TCP 8 is denied');
    const denied = await until('denied counters rise', (s) => s.denyIn >= 4 && s.podDenied >= 4);
    assert.equal(denied.allowH0Denied, denied.denyIn, 'a drop counts for every policy isolating the endpoint');
    assert.equal(denied.allowH0, 0);
    assert.equal(denied.podAllowed, 0);

    assert.equal(tcpFromH0(7, 3), true, 'TCP 7 from h0 is allowed');
    const allowed = await until('allowed counters rise', (s) => s.allowH0 >= 1 && s.podAllowed >= 1);
    assert.ok(allowed.allowH0Bytes >= 60, `a SYN's bytes: ${allowed.allowH0Bytes}`);
    // Only the connection's first packet is judged: the rest pass by conntrack.
    assert.ok(allowed.allowH0 <= 2, `allowed packets ${allowed.allowH0}`);
    assertNotBelow(allowed, denied);
    beforeChange = allowed;
  });

  it('keeps the counters monotonic across a policy change that rewrites the chains', async () => {
    applyPolicies([allowH0([7, 9])]);
    await untilEnforced((t) => /dport \{ 7, 9 \}/.test(t));
    const after = await snapshot();
    assertNotBelow(after, beforeChange);
    assert.equal(pingFromH0(2), 0);
    const more = await until('denied counters rise after the rewrite', (s) => s.denyIn >= beforeChange.denyIn + 2);
    assertNotBelow(more, beforeChange);
    assert.equal(tcpFromH0(7, 3), true);
    await until('allowed counters rise after the rewrite', (s) => s.allowH0 >= beforeChange.allowH0 + 1 && s.podAllowed >= beforeChange.podAllowed + 1);
  });

  it('exports them on /metrics and in weftctl policy list --lab', async () => {
    const s = await snapshot();
    const m = await weftdGet(socket(1), '/metrics');
    assert.equal(m.status, 200);
    const metric = (line: string) => Number(new RegExp(`^${line.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(m.body)?.[1] ?? NaN);
    assert.ok(metric('weft_policy_packets_total{policy="lab/deny-in",direction="ingress",verdict="denied"}') >= s.denyIn);
    assert.ok(metric('weft_policy_packets_total{policy="lab/allow-h0",direction="ingress",verdict="allowed"}') >= s.allowH0);
    assert.ok(metric('weft_policy_bytes_total{policy="lab/allow-h0",direction="ingress",verdict="allowed"}') >= s.allowH0Bytes);
    assert.ok(metric('weft_policy_endpoint_packets_total{namespace="lab",pod="h1c0",direction="ingress",verdict="denied"}') >= s.podDenied);

    const list = weftctl(['policy', 'list', '-n', 'lab', '--lab', name]);
    assert.equal(list.status, 0, list.stderr);
    assert.equal(list.stderr, '', 'both weftds answered');
    const [head, ...rows] = list.stdout.trim().split('\n');
    assert.match(head ?? '', /^NAMESPACE\s+NAME\s+POD-SELECTOR\s+TYPES\s+PODS\s+ALLOWED\s+DENIED$/);
    const row = (policy: string) => rows.find((r) => r.split(/\s+/)[1] === policy)?.split(/\s+/) ?? [];
    // h0 judges none of this traffic (no policy isolates anything there for egress), so the sums
    // are h1's counts, read after the snapshot.
    assert.ok(Number(row('deny-in').at(-1)) >= s.denyIn, list.stdout);
    assert.equal(row('deny-in').at(-2), '0', list.stdout);
    assert.ok(Number(row('allow-h0').at(-2)) >= s.allowH0, list.stdout);
  });
});

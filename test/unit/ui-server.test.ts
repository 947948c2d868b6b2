// The web view's server over a real file store (no namespaces): the model as JSON, its changes as
// server-sent events when a lease or policy is written, the Host check, and the doctor endpoint's
// input errors. The page itself is driven in a real browser in test/cluster/ui-browser.test.ts.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCidr, parseIP } from '../../src/net/ip.js';
import { openStore } from '../../src/store/flags.js';
import { fileKeyValueStore, type KeyValueStore } from '../../src/store/kv.js';
import type { SubnetStore } from '../../src/store/types.js';
import { endpointToJson } from '../../src/policy/model.js';
import { ModelFeed } from '../../src/ui/feed.js';
import { doctorFor } from '../../src/ui/doctor.js';
import { startUiServer, type UiServer } from '../../src/ui/server.js';
import type { UiDoctorReport, UiModel } from '../../src/ui/model.js';

const PREFIX = '/weft/network';

function http(url: string, path: string, o: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const u = new URL(path, url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: o.method ?? 'GET', headers: o.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Follows /api/events and hands out each model as it arrives. */
function follow(url: string): { next(pred: (m: UiModel) => boolean): Promise<UiModel>; close(): void } {
  const seen: UiModel[] = [];
  const waiters: Array<{ pred: (m: UiModel) => boolean; resolve: (m: UiModel) => void }> = [];
  const u = new URL('/api/events', url);
  const req = request({ host: u.hostname, port: u.port, path: u.pathname }, (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => {
      buf += c;
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = frame.split('\n').find((l) => l.startsWith('data: '));
        if (!frame.includes('event: model') || !data) continue;
        const m = JSON.parse(data.slice(6)) as UiModel;
        seen.push(m);
        for (const w of waiters.splice(0)) if (w.pred(m)) w.resolve(m); else waiters.push(w);
      }
    });
  });
  req.on('error', () => {});
  req.end();
  return {
    next: (pred) => new Promise((resolve) => {
      const hit = seen.find(pred);
      if (hit) resolve(hit); else waiters.push({ pred, resolve });
    }),
    close: () => req.destroy(),
  };
}

describe('ui server on a file store', () => {
  let dir: string;
  let store: SubnetStore;
  let kv: KeyValueStore;
  let feed: ModelFeed;
  let server: UiServer;

  const lease = (subnet: string, ip: string) => store.writeSubnet(parseCidr(subnet), JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VtepMAC: '02:00:00:00:00:01' } }), null, { type: 'absent' });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-ui-'));
    store = await openStore({ type: 'file', dir, prefix: PREFIX }, { create: true });
    await store.putConfig(JSON.stringify({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    for (let i = 0; i < 3; i++) await lease(`10.244.${i}.0/24`, `198.18.0.${i + 1}`);
    kv = fileKeyValueStore(dir, PREFIX);
    await kv.put('endpoints/n1/web/db/eth0', JSON.stringify(endpointToJson({ namespace: 'web', pod: 'db', labels: { app: 'db' }, ips: [parseIP('10.244.1.5')], host: 'n1', ifname: 'eth0' })));
    feed = new ModelFeed({ store, kv, source: { label: 'test', store: 'file' }, agents: () => [], intervalMs: 200, debounceMs: 20 });
    await feed.start();
    const topology = async () => ({ nodes: [], pods: [], local: undefined });
    server = await startUiServer({ listen: '127.0.0.1:0', feed, doctor: doctorFor(feed, topology, '--store file') });
  });

  after(async () => {
    await server?.close();
    await feed?.close();
    await kv?.close();
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the page with a strict content security policy, and the model as JSON', async () => {
    const page = await http(server.url, '/');
    assert.equal(page.status, 200);
    assert.match(page.body, /<html/i);
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    const m = JSON.parse((await http(server.url, '/api/model')).body) as UiModel;
    assert.deepEqual(m.hosts.map((h) => [h.id, h.publicIP, h.agent.state]), [
      ['10.244.0.0/24', '198.18.0.1', 'unknown'], ['10.244.1.0/24', '198.18.0.2', 'unknown'], ['10.244.2.0/24', '198.18.0.3', 'unknown'],
    ]);
    assert.equal(m.hosts[1]?.name, 'n1', 'named by its pod\'s endpoint');
    assert.deepEqual(m.network, { cidr: '10.244.0.0/16', backend: 'vxlan' });
    assert.deepEqual(m.pods.map((p) => [p.id, p.hostId]), [['web/db', '10.244.1.0/24']]);
  });

  it('sends a new model when a lease goes and when a policy comes', async () => {
    const events = follow(server.url);
    try {
      const first = await events.next(() => true);
      assert.equal(first.hosts.length, 3);
      await store.deleteSubnet(parseCidr('10.244.2.0/24'));
      const gone = await events.next((m) => m.hosts.length === 2);
      assert.ok(gone.seq > first.seq);
      await kv.put('policies/web/deny-db', JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny-db', namespace: 'web' }, spec: { podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Ingress'] } }));
      const withPolicy = await events.next((m) => m.policies.length === 1);
      assert.deepEqual(withPolicy.policies[0]?.selects, ['web/db']);
      assert.deepEqual(withPolicy.pods[0]?.isolated, { ingress: true, egress: false });
    } finally {
      events.close();
    }
  });

  it('refuses a Host that is not this machine\'s loopback (DNS rebinding)', async () => {
    const r = await http(server.url, '/api/model', { headers: { host: 'evil.example:9418' } });
    assert.equal(r.status, 403);
  });

  it('doctor: refuses other content types, bad bodies and unknown pods with a message; answers with both hosts', async () => {
    const post = (body: string, type = 'application/json') => http(server.url, '/api/doctor', { method: 'POST', body, headers: { 'content-type': type } });
    assert.equal((await post('src=a&dst=b', 'application/x-www-form-urlencoded')).status, 415);
    const bad = await post(JSON.stringify({ src: 1, dst: 'b' }));
    assert.equal(bad.status, 400);
    assert.match(bad.body, /src/);
    assert.equal((await post('{not json')).status, 400);
    const unknown = await post(JSON.stringify({ src: 'web/nope', dst: '10.244.1.5' }));
    assert.equal(unknown.status, 400);
    assert.match(unknown.body, /no pod/);
    const ok = await post(JSON.stringify({ src: '10.244.0.9', dst: 'web/db' }));
    assert.equal(ok.status, 200);
    const report = JSON.parse(ok.body) as UiDoctorReport;
    assert.equal(report.src.hostId, '10.244.0.0/24');
    assert.equal(report.dst.hostId, '10.244.1.0/24');
    assert.ok(report.hops.length > 3);
    assert.equal((await http(server.url, '/api/doctor')).status, 405);
  });
});

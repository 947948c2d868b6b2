// weftd's policy service under a burst of new pods, as at 1000 endpoints: every record is published
// to the store exactly once and never withdrawn on the way (a rescan of the records directory that
// raced a fast-path announcement used to drop the pod for a moment, and passes that ran before the
// store echoed the service's own puts used to put the same keys again), and the kernel's table
// ends up with every local address. The store's change log is the witness of what was written.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PolicyService } from '../../src/agent/policy-service.js';
import { createLogger } from '../../src/log.js';
import { parseCidr } from '../../src/net/ip.js';
import { type EndpointRecord, EndpointChanges, endpointRecordFile } from '../../src/policy/endpoint-record.js';
import { netnsNft } from '../../src/policy/enforcer.js';
import { POLICY_FAMILY, POLICY_TABLE } from '../../src/policy/compile.js';
import { NetnsPool } from '../../src/netns/testing.js';
import { fileKeyValueStore, type KeyValueStore } from '../../src/store/kv.js';

const pool = new NetnsPool('wpb');
const PODS = 200;
const SUBNET = '10.91.0.0/22';

const record = (i: number): EndpointRecord => ({
  containerID: `c${i}`, ifname: 'eth0', namespace: 'prod', pod: `p${i}`, labels: { app: `a${i % 3}` },
  ips: [`10.91.${Math.floor((i + 2) / 256)}.${(i + 2) % 256}`],
});

describe('policy service: a burst of endpoint records', () => {
  let dir: string;
  let ns: string;
  let kv: KeyValueStore;
  let svc: PolicyService | undefined;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'wpb-svc-'));
    ns = pool.make().name;
    kv = fileKeyValueStore(join(dir, 'store'), '/weft/network');
  });

  after(async () => {
    await svc?.close();
    pool.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('publishes each record once, never deletes one, and enforces them all', async () => {
    const recordDir = join(dir, 'records');
    mkdirSync(recordDir, { recursive: true });
    await kv.put('namespaces/prod', JSON.stringify({ name: 'prod', labels: {} }));
    await kv.put('policies/prod/web', JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace: 'prod', name: 'web' },
      spec: { podSelector: { matchLabels: { app: 'a0' } }, ingress: [{ from: [{ podSelector: {} }] }] },
    }));
    const changes = new EndpointChanges();
    svc = new PolicyService({
      kv, host: 'n1', recordDir, subnets: [parseCidr(SUBNET)], nft: netnsNft(ns), batchDelayMs: 5, repairIntervalMs: 60_000, endpointChanges: changes,
      log: createLogger({ test: 'policy-service' }, { level: 'error' }),
    });
    await svc.start();

    // Files land while passes run; every tenth pod also comes the fast-path way (file, then the
    // in-process announcement), racing the directory rescans the other files set off.
    const announced: Promise<void>[] = [];
    for (let i = 0; i < PODS; i++) {
      const rec = record(i);
      writeFileSync(endpointRecordFile(recordDir, rec.containerID, rec.ifname), JSON.stringify(rec));
      if (i % 10 === 0) announced.push(changes.announce({ type: 'added', dir: recordDir, record: rec }));
      if (i % 25 === 0) await sleep(1);
    }
    await Promise.all(announced);
    for (let t = 0; (await kv.list('endpoints/')).length < PODS; t++) {
      assert.ok(t < 500, `only ${(await kv.list('endpoints/')).length} of ${PODS} endpoints published`);
      await sleep(20);
    }
    await svc.settle();

    // The store's one change log: "<rev> put|del <key>" lines.
    const log = readFileSync(join(kv.where, 'changes.log'), 'utf8').split('\n').filter((l) => l.includes(' endpoints/'));
    const puts = new Map<string, number>();
    for (const l of log) {
      const [, op, key = ''] = l.split(' ');
      assert.equal(op, 'put', `the service withdrew an endpoint on the way: ${l}`);
      puts.set(key, (puts.get(key) ?? 0) + 1);
    }
    assert.equal(puts.size, PODS);
    const repeated = [...puts].filter(([, n]) => n > 1);
    assert.deepEqual(repeated, [], 'endpoints put more than once');

    // The kernel's view: every local address is a known workload, the selected third has a chain.
    const items = await netnsNft(ns).listTable();
    assert.ok(items, `no ${POLICY_FAMILY} ${POLICY_TABLE} table`);
    const elems = (name: string): number => {
      for (const it of items) {
        const s = (it as { set?: { name: string; elem?: unknown[] }; map?: { name: string; elem?: unknown[] } });
        const body = s.set ?? s.map;
        if (body?.name === name) return body.elem?.length ?? 0;
      }
      return -1;
    };
    assert.equal(elems('local-4'), PODS);
    assert.equal(elems('ingress-4'), Array.from({ length: PODS }, (_, i) => i).filter((i) => i % 3 === 0).length);
  });
});

// How the web view asks weftds: over weftd's own request handler on an API socket, an answer with
// its peers, an unchanged one as a 304 that reuses the last answer, a weftd that cannot be
// reached 'down', something answering otherwise 'unknown'; and the poller's schedule.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { type HealthServer, healthHandler, startApiSocket } from '../../src/agent/http.js';
import type { PeersDocument } from '../../src/agent/peers.js';
import { AgentPoller, askAgent } from '../../src/ui/agents.js';

describe('ui agents', () => {
  let dir: string;
  let server: HealthServer;
  let doc: PeersDocument | undefined;
  let asked = 0;
  const sock = () => `unix:${join(dir, 'api.sock')}`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-ui-agents-'));
    doc = { node: 'h0', subnet: '10.244.1.0/24', backend: 'vxlan', ready: true, problems: [], programmed: ['10.244.2.0/24'], skipped: [], lastReconcile: null };
    server = await startApiSocket(join(dir, 'api.sock'), healthHandler(() => ({ ready: true, details: {} }), new Registry(), (path) => {
      if (path !== '/peers') return undefined;
      asked += 1;
      return doc;
    }));
  });

  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('an answering weftd: its node, subnet and peers; unchanged, a 304 gives back the very same answer', async () => {
    const first = await askAgent({ addr: sock() });
    assert.equal(first.subnet, '10.244.1.0/24');
    assert.deepEqual(first.answer, { type: 'answered', node: 'h0', ready: true, detail: 'ready, 1 peers programmed', programmed: ['10.244.2.0/24'], problems: [] });
    assert.ok(first.etag);
    const again = await askAgent({ addr: sock() }, 1000, first);
    assert.equal(again, first);
    doc = { ...doc!, ready: false, why: 'lease waiting: no podCIDR', programmed: [] };
    const changed = await askAgent({ addr: sock() }, 1000, first);
    assert.notEqual(changed, first);
    assert.equal(changed.answer.type === 'answered' && changed.answer.detail, 'not ready: lease waiting: no podCIDR');
  });

  it('no weftd at the address is down; an answer that is not /peers is unknown', async () => {
    const down = await askAgent({ addr: `unix:${join(dir, 'none.sock')}`, subnet: '10.244.9.0/24' });
    assert.equal(down.answer.type, 'down');
    assert.equal(down.subnet, '10.244.9.0/24');
    const saved = doc;
    doc = undefined;
    try {
      const old = await askAgent({ addr: sock() });
      assert.equal(old.answer.type, 'unknown');
      assert.match(old.answer.detail, /404.*older than \/peers/);
    } finally {
      doc = saved;
    }
  });

  it('the poller keeps the latest answer of each target and says when one changed', async () => {
    let changes = 0;
    const poller = new AgentPoller({ intervalMs: 100, onChange: () => { changes += 1; } });
    try {
      poller.update([{ addr: sock(), name: 'h0' }, { addr: `unix:${join(dir, 'none.sock')}`, subnet: '10.244.9.0/24' }]);
      for (let i = 0; i < 100 && poller.answers().length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(poller.answers().map((a) => a.answer.type).sort(), ['answered', 'down']);
      const before = asked;
      for (let i = 0; i < 250 && asked - before < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(asked - before >= 2, 'a live weftd is asked again and again');
      const c = changes;
      poller.update([{ addr: sock(), name: 'h0' }]);
      assert.equal(poller.answers().length, 1, 'a target no longer named is forgotten');
      assert.equal(changes, c + 1);
    } finally {
      await poller.close();
    }
  });
});

// Plugins act through the host whoever runs them passes (PluginContext.host), never through state
// of their own modules: two runners in one process, each with its own host, see only their own
// plugins' interface deletions and endpoint announcements. Nothing here touches the kernel (the
// deleter is the host's, and DEL of an allocation that was never made is a no-op on disk).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PluginHost } from '../../src/cni/skel.js';
import { EndpointChanges, type EndpointChange } from '../../src/policy/endpoint-record.js';
import { attachmentFile, runWeftLocally } from '../../src/plugins/weft/standalone.js';
import { standalonePluginHost } from '../../src/plugins/pkg/host.js';

const root = mkdtempSync(join(tmpdir(), 'wsh-host-'));
after(() => rmSync(root, { recursive: true, force: true }));

interface Recorded { readonly deleted: string[]; readonly changes: EndpointChange[] }

function recordingHost(): PluginHost & { seen: Recorded } {
  const seen: Recorded = { deleted: [], changes: [] };
  return {
    seen,
    deleteContainerInterface: async ({ netns, ifname }) => { seen.deleted.push(`${netns} ${ifname}`); },
    endpointChanged: async (c) => { seen.changes.push(c); },
  };
}

/** A weft network whose attachment `id` was ADDed with weft-bridge as its delegate. */
function network(name: string, id: string): { conf: string; dataDir: string; recordDir: string } {
  const dir = join(root, name);
  const dataDir = join(dir, 'state');
  mkdirSync(dataDir, { recursive: true });
  const delegate = {
    cniVersion: '1.0.0', name, type: 'weft-bridge', bridge: 'wsh0',
    ipam: { type: 'weft-ipam', dataDir: join(dir, 'ipam'), ranges: [[{ subnet: '10.77.1.0/24' }]] },
  };
  writeFileSync(attachmentFile(dataDir, id, 'eth0'), JSON.stringify({ containerID: id, ifname: 'eth0', netns: `/run/netns/${id}`, delegate }));
  const conf = JSON.stringify({ cniVersion: '1.0.0', name, type: 'weft', subnetFile: join(dir, 'subnet.env'), dataDir });
  return { conf, dataDir, recordDir: join(dir, 'endpoints') };
}

function del(id: string): NodeJS.ProcessEnv {
  return { CNI_COMMAND: 'DEL', CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${id}`, CNI_IFNAME: 'eth0', CNI_PATH: '/nonexistent' };
}

describe('plugin host', () => {
  it('runs the in-process delegate on its caller\'s host; concurrent runners keep apart', async () => {
    const a = recordingHost();
    const b = recordingHost();
    const na = network('wsh-a', 'wsh-pod-a');
    const nb = network('wsh-b', 'wsh-pod-b');
    const [ra, rb] = await Promise.all([runWeftLocally(del('wsh-pod-a'), na.conf, a), runWeftLocally(del('wsh-pod-b'), nb.conf, b)]);
    assert.deepEqual([ra.exitCode, rb.exitCode], [0, 0], `${ra.stdout}${rb.stdout}`);
    // weft-bridge's DEL (in-process, under weft) removed the interface through weft's host.
    assert.deepEqual(a.seen.deleted, ['/run/netns/wsh-pod-a eth0']);
    assert.deepEqual(b.seen.deleted, ['/run/netns/wsh-pod-b eth0']);
    assert.deepEqual(a.seen.changes, [{ type: 'removed', dir: na.recordDir, containerID: 'wsh-pod-a', ifname: 'eth0' }]);
    assert.deepEqual(b.seen.changes, [{ type: 'removed', dir: nb.recordDir, containerID: 'wsh-pod-b', ifname: 'eth0' }]);
  });

  it('a runner after another finds no host left over from it', async () => {
    const first = recordingHost();
    const n1 = network('wsh-c', 'wsh-pod-c');
    assert.equal((await runWeftLocally(del('wsh-pod-c'), n1.conf, first)).exitCode, 0);
    const second = recordingHost();
    const n2 = network('wsh-d', 'wsh-pod-d');
    assert.equal((await runWeftLocally(del('wsh-pod-d'), n2.conf, second)).exitCode, 0);
    assert.deepEqual(first.seen.deleted, ['/run/netns/wsh-pod-c eth0']);
    assert.deepEqual(second.seen.deleted, ['/run/netns/wsh-pod-d eth0']);
  });

  it('standalone: endpoint changes need no listener, and deleting in a namespace that is gone succeeds', async () => {
    await standalonePluginHost.endpointChanged({ type: 'removed', dir: root, containerID: 'x', ifname: 'eth0' });
    await standalonePluginHost.deleteContainerInterface({ netns: join(root, 'no-such-netns'), ifname: 'eth0' });
  });
});

describe('endpoint changes', () => {
  it('reach the one listener of their own channel, and nobody once it stops', async () => {
    const one = new EndpointChanges();
    const two = new EndpointChanges();
    const heard: string[] = [];
    const stop = one.listen(async (c) => { heard.push(`one ${c.type}`); });
    two.listen(async (c) => { heard.push(`two ${c.type}`); });
    assert.throws(() => one.listen(async () => {}), /already have a listener/);
    await one.announce({ type: 'removed', dir: root, containerID: 'p', ifname: 'eth0' });
    stop();
    await one.announce({ type: 'removed', dir: root, containerID: 'p', ifname: 'eth0' });
    await two.announce({ type: 'removed', dir: root, containerID: 'q', ifname: 'eth0' });
    assert.deepEqual(heard, ['one removed', 'two removed']);
    // The slot is free again for a restarted service.
    one.listen(async () => {});
  });

  it('an ADD waits for the listener, and its failure is the ADD\'s', async () => {
    const ch = new EndpointChanges();
    ch.listen(async () => { throw new Error('policy not enforced'); });
    await assert.rejects(ch.announce({ type: 'removed', dir: root, containerID: 'p', ifname: 'eth0' }), /policy not enforced/);
  });
});

// bin/cni/weft against a real weftd (file store, host-gw, one host of a lab topology): weftd
// writes subnet.env with WEFT_CNI_SOCKET and serves the fast path; the plugin's ADD is
// answered by weftd (seen in its debug log), the pod gets an address from the leased subnet and
// reaches its gateway; after weftd stops, the socket is gone and DEL works standalone.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Topology } from '../../src/lab/topology.js';
import { NetnsPool } from '../../src/netns/testing.js';
import { cidrContains, parseCidr } from '../../src/net/ip.js';
import { leasedSubnet, setConfig, startWeftd, stopAll, stopWeftd, subnetEnv, tempDir, waitReady, type Weftd } from './agent-harness.js';
import { WEFT_CNI_DIR, links, ping, runPlugin } from './cni-harness.js';

describe('bin/cni/weft with a running weftd', { timeout: 90_000 }, () => {
  let topo: Topology | undefined;
  let tmp: { path: string; remove(): void } | undefined;
  let savedLevel: string | undefined;
  const pods = new NetnsPool('wmp');

  before(() => {
    // weftd inherits the test's environment; its per-request lines are debug level.
    savedLevel = process.env.WEFT_LOG_LEVEL;
    process.env.WEFT_LOG_LEVEL = 'debug';
  });
  after(async () => {
    if (savedLevel === undefined) delete process.env.WEFT_LOG_LEVEL;
    else process.env.WEFT_LOG_LEVEL = savedLevel;
    await stopAll();
    pods.cleanup();
    topo?.destroy();
    tmp?.remove();
  });

  it('ADD is answered by weftd over its socket; after weftd stopped, DEL works standalone', async () => {
    topo = Topology.create({ prefix: 'wmp', hosts: 1 });
    tmp = tempDir('wmp');
    const host = topo.host(0);
    const store = ['--store', 'file', '--store-dir', join(tmp.path, 'store')];
    setConfig(host.ns, store, { Network: '10.79.0.0/16', SubnetLen: 24, Backend: { Type: 'host-gw' } });
    const subnetFile = join(tmp.path, 'subnet.env');
    const w: Weftd = startWeftd(host.ns, ['--iface', 'eth0', ...store], subnetFile);
    await waitReady(w);
    const socket = join(tmp.path, 'cni.sock');
    assert.equal(subnetEnv(subnetFile).get('WEFT_CNI_SOCKET'), socket, 'weftd announces its socket');
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const { subnet, mtu } = leasedSubnet(subnetFile);

    const pod = pods.make();
    const conf = {
      cniVersion: '1.0.0',
      name: 'wmpnet',
      type: 'weft',
      subnetFile,
      dataDir: join(tmp.path, 'state'),
      ipam: { type: 'weft-ipam', dataDir: join(tmp.path, 'ipam') },
      delegate: { bridge: 'wmpbr0' },
    };
    const weft = (command: 'ADD' | 'DEL', netns?: string) => runPlugin(host.nsPath, join(WEFT_CNI_DIR, 'weft'), { command, containerId: 'wmp-pod1', ...(netns !== undefined && { netns }) }, conf);
    const served = () => w.stderr.join('').split('\n').filter((l) => l.includes('"msg":"cni request"')).map((l) => (JSON.parse(l) as { cmd: string }).cmd);

    const add = await weft('ADD', pod.path);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const ip = parseCidr((add.json as { ips: Array<{ address: string }> }).ips[0]!.address);
    assert.ok(cidrContains(subnet, ip.ip), `pod address ${(add.json as { ips: Array<{ address: string }> }).ips[0]!.address} is in the leased subnet`);
    assert.equal(links(pod.name).find((l) => l.ifname === 'eth0')?.mtu, mtu);
    const gw = (add.json as { ips: Array<{ gateway: string }> }).ips[0]!.gateway;
    assert.ok(await ping(pod.path, gw), 'pod → gateway on the bridge');
    assert.deepEqual(served(), ['ADD']);

    await stopWeftd(w);
    assert.ok(!existsSync(socket), 'weftd removed its socket on shutdown');
    const del = await weft('DEL', pod.path);
    assert.equal(del.code, 0, del.stdout + del.stderr);
    assert.deepEqual(links(pod.name).map((l) => l.ifname), ['lo']);
  });
});

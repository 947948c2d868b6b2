// Issue 21, per-pod and per-peer traffic: in a vxlan lab of two hosts, an iperf3 run from h0's
// pod to h1's. Afterwards each weftd's /metrics (asked over its API socket) must have grown by
// iperf3's own count of the bytes it sent:
//   - the sender pod's tx and the receiver pod's rx within 2 % (the veth counters add the
//     Ethernet, IP and TCP headers once per GSO batch of up to 64 KiB — about 0.1 % here — plus
//     iperf3's control connection and any retransmissions);
//   - h0's counter toward h1's subnet and h1's from h0's between −1 % and +5 %: an nftables
//     counter at the forward hook sees each IP packet (header and payload, never less than the
//     payload iperf3 counts) before VXLAN adds its 50 bytes; with GSO the headers are ~0.1 %,
//     without it 52 B per 1398-byte segment would be 3.7 %, and retransmissions add to it too.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { weftdGet } from '../../src/cli/weftd-http.js';
import { iperf } from '../../src/lab/bench.js';
import type { LabRecord } from '../../src/lab/state.js';
import { downQuietly, lab, labName, stateDir, upOk } from './lab-harness.js';
import { scrape } from '../unit/metrics-text.js';


async function metrics(name: string, host: number): Promise<string> {
  const r = await weftdGet(`unix:${join(stateDir(name), 'hosts', `h${host}`, 'api.sock')}`, '/metrics');
  assert.equal(r.status, 200, r.body);
  return r.body;
}

function value(text: string, metric: string, labels: string): number {
  const v = scrape(text, metric).get(labels);
  assert.ok(v !== undefined, `${metric}${labels} in\n${text.split('\n').filter((l) => l.startsWith(metric)).join('\n')}`);
  return v;
}

const podLabels = (rec: LabRecord, name: string) => {
  const c = rec.containers.find((x) => x.name === name);
  assert.ok(c, name);
  // The lab's pods are Kubernetes-style: namespace "lab", pod = the container's short name.
  return { c, labels: `{namespace="lab",pod="${name}",interface="eth0"}` };
};

describe('traffic metrics in a lab: iperf3 across hosts against /metrics', { timeout: 180_000 }, () => {
  const name = labName('wpm');
  after(() => downQuietly(name));

  it('pod and peer byte counters grow by what iperf3 sent', async (t) => {
    const rec = upOk(['--name', name, '--hosts', '2', '--pods', '1', '--backend', 'vxlan']);
    const sender = podLabels(rec, 'h0c0');
    const receiver = podLabels(rec, 'h1c0');
    const [h0, h1] = rec.hostList;
    assert.ok(h0?.subnet && h1?.subnet && receiver.c.ip);
    const toH1 = `{peer_subnet="${h1.subnet}",peer_ip="${h1.ip}"}`;
    const fromH0 = `{peer_subnet="${h0.subnet}",peer_ip="${h0.ip}"}`;

    // A snapshot answers scrapes for a second, and `lab up` scraped while it waited for the
    // hosts to converge, before the pods existed: ask once that one has expired.
    await sleep(1100);
    const before0 = await metrics(name, 0);
    const before1 = await metrics(name, 1);
    const result = await iperf(receiver.c.ns, sender.c.ns, receiver.c.ip, 3);
    assert.ok(result.sentBytes > 100e6, `iperf3 sent ${result.sentBytes} bytes`);
    await sleep(1100);
    const after0 = await metrics(name, 0);
    const after1 = await metrics(name, 1);
    const grew = (b: string, a: string, metric: string, labels: string) => value(a, metric, labels) - value(b, metric, labels);

    const podTx = grew(before0, after0, 'weft_pod_tx_bytes_total', sender.labels);
    const podRx = grew(before1, after1, 'weft_pod_rx_bytes_total', receiver.labels);
    const peerTx = grew(before0, after0, 'weft_peer_tx_bytes_total', toH1);
    const peerRx = grew(before1, after1, 'weft_peer_rx_bytes_total', fromH0);
    const ratio = (n: number) => n / result.sentBytes;
    t.diagnostic(`iperf3 sent ${result.sentBytes} B (${result.retransmits} retransmits); sender pod tx ×${ratio(podTx).toFixed(4)}, receiver pod rx ×${ratio(podRx).toFixed(4)}, h0 → h1 peer tx ×${ratio(peerTx).toFixed(4)}, h1 ← h0 peer rx ×${ratio(peerRx).toFixed(4)}`);
    assert.ok(Math.abs(ratio(podTx) - 1) <= 0.02, `sender pod tx grew ${podTx}, iperf3 sent ${result.sentBytes}`);
    assert.ok(Math.abs(ratio(podRx) - 1) <= 0.02, `receiver pod rx grew ${podRx}, iperf3 sent ${result.sentBytes}`);
    assert.ok(ratio(peerTx) >= 0.99 && ratio(peerTx) <= 1.05, `h0's counter toward ${h1.subnet} grew ${peerTx}, iperf3 sent ${result.sentBytes}`);
    assert.ok(ratio(peerRx) >= 0.99 && ratio(peerRx) <= 1.05, `h1's counter from ${h0.subnet} grew ${peerRx}, iperf3 sent ${result.sentBytes}`);
    // Packets count too: bulk TCP, so at least a thousand bytes a packet on average.
    const pkts = grew(before0, after0, 'weft_peer_tx_packets_total', toH1);
    assert.ok(pkts > 0 && pkts < result.sentBytes / 1000, `${pkts} packets`);

    const down = lab(['down', '--name', name]);
    assert.equal(down.code, 0, down.stderr);
  });
});

// A whole lab on the udp backend with IPv6 pods, through the lab API (what `weftctl lab up
// --backend udp --ipv6 dual|only` runs): weftd on every host leases both subnets (or the IPv6
// one alone), routes the IPv6 Network into its TUN device, and `lab check` passes every IPv6 probe
// — every container pair across and within hosts, and egress — beside the IPv4 ones on a
// dual-stack lab. Each lab is removed with labDown, also after a failure.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { labDown, labUp } from '../../src/lab/lab.js';
import { labCheck, type CheckPair } from '../../src/lab/check.js';
import { parseLabSpec } from '../../src/lab/spec.js';
import { LabDirs } from '../../src/lab/state.js';
import { parseLabName } from '../../src/lab/naming.js';
import { ipJson } from '../../src/netns/testing.js';
import { UDP_DEVICE } from '../../src/backends/udp/udp.js';

const HOSTS = 3;
const PODS = 2;

/** weftd's /metrics over its API socket. */
function metrics(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`no /metrics answer on ${socketPath}`)));
    req.on('error', reject);
    req.end();
  });
}

function counter(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

function describeFailures(ps: readonly CheckPair[]): string {
  return ps.filter((p) => !p.icmp.ok || !p.tcp.ok).map((p) => `${p.from} → ${p.to} ${p.toIP}: icmp ${p.icmp.ok} tcp ${p.tcp.ok}`).join('\n');
}

describe('lab --backend udp --ipv6: every IPv6 probe of lab check passes', { timeout: 300_000 }, () => {
  for (const mode of ['dual', 'only'] as const) {
    it(`--ipv6 ${mode} (${HOSTS} hosts × ${PODS} pods)`, async () => {
      const name = parseLabName(`u6x${randomBytes(3).toString('hex')}`);
      try {
        const spec = parseLabSpec({ name, backend: 'udp', hosts: String(HOSTS), pods: String(PODS), ipv6: mode });
        const rec = await labUp(spec);
        assert.equal(rec.ipv6, mode);

        // The kernel's view: each host's TUN carries its IPv6 subnet's address and the IPv6 Network.
        for (const h of rec.hostList) {
          const subnet6 = mode === 'dual' ? h.subnet6 : h.subnet;
          assert.ok(subnet6 !== undefined && subnet6.includes(':'), `h${h.index} leased an IPv6 subnet: ${JSON.stringify(h)}`);
          const [dev] = ipJson<Array<{ mtu: number; addr_info: Array<{ family: string; local: string; prefixlen: number; scope: string }> }>>(h.ns, ['addr', 'show', UDP_DEVICE]);
          assert.ok(dev, `h${h.index} has ${UDP_DEVICE}`);
          const v6 = dev.addr_info.filter((a) => a.family === 'inet6' && a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`);
          assert.deepEqual(v6, [`${subnet6.split('/')[0]}/128`]);
          assert.equal(dev.addr_info.some((a) => a.family === 'inet'), mode === 'dual', 'an IPv4 address only on a dual-stack lab');
          const routes = ipJson<Array<{ dst: string }>>(h.ns, ['-6', 'route', 'show', 'dev', UDP_DEVICE]);
          assert.ok(routes.some((r) => r.dst === 'fd10:244::/56'), JSON.stringify(routes));
        }

        const report = await labCheck(rec);
        const n = HOSTS * PODS;
        const v6Pairs = report.pairs.filter((p) => p.family === 6);
        const v6Egress = report.egress.filter((p) => p.family === 6);
        assert.equal(v6Pairs.length, n * (n - 1), 'every ordered container pair probed over IPv6');
        assert.equal(v6Egress.length, n, 'every container probed the outside over IPv6');
        assert.ok(v6Pairs.filter((p) => p.crossHost).length >= n * (n - PODS), 'across hosts, through the tunnel');
        for (const p of [...v6Pairs, ...v6Egress]) {
          assert.ok(p.icmp.ok, `${p.from} → ${p.to} (${p.toIP}) ICMPv6`);
          assert.ok(p.tcp.ok, `${p.from} → ${p.to} (${p.toIP}) TCP over IPv6`);
        }
        const v4 = [...report.pairs, ...report.egress].filter((p) => p.family === 4);
        assert.equal(v4.length, mode === 'dual' ? n * (n - 1) + n : 0);
        assert.equal(report.ok, true, `lab check failures:\n${describeFailures([...report.pairs, ...report.egress])}`);

        // No pump dropped or refused anything on the way.
        const dirs = LabDirs.of(name);
        for (const h of rec.hostList) {
          const text = await metrics(dirs.apiSocket(h.index));
          for (const c of ['weft_udp_drop_malformed_total', 'weft_udp_send_errors_total', 'weft_udp_tun_errors_total']) {
            assert.equal(counter(text, c), 0, `h${h.index} ${c}`);
          }
          assert.ok(counter(text, 'weft_udp_rx_packets_total') > 0, `h${h.index} received through the tunnel`);
        }
      } finally {
        await labDown(name).catch(() => undefined);
      }
    });
  }
});

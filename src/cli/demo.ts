// weftctl demo: weft on one machine in one command. A "host" namespace, two containers plugged
// into a weft bridge by bin/cni/weft-bridge exactly as a runtime would, traffic between them, to
// their gateway and out through masquerade to an "outside" namespace, then a clean DEL. Nothing
// outside the namespaces it made is touched, and they are removed even on failure.
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CliCommand } from './command.js';
import { ExitCode } from './command.js';
import { Progress } from './ui/progress.js';
import { renderTable } from '../text-table.js';
import { createNamedNetns, deleteNamedNetns, netnsPath } from '../netns/index.js';
import { Netlink } from '../netlink/index.js';
import { parseCidr, parseIP } from '../net/ip.js';
import { writeSysctl } from '../netns/index.js';

const CNI_DIR = fileURLToPath(new URL('../../../bin/cni', import.meta.url));

interface Row {
  check: string;
  result: string;
  detail: string;
}

function sh(ns: string, argv: string[], env: Record<string, string> = {}, input?: string) {
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const childEnv = { ...process.env };
  delete childEnv.NODE_EXTRA_CA_CERTS;
  const r = spawnSync('ip', ['netns', 'exec', ns, 'env', ...envArgs, ...argv], {
    encoding: 'utf8', env: childEnv, timeout: 30_000, ...(input !== undefined && { input }),
  });
  return { ok: r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function pingRtt(ns: string, target: string): { ok: boolean; rtt: string } {
  const r = sh(ns, ['ping', '-c', '3', '-i', '0.2', '-W', '1', '-q', target]);
  const m = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
  return { ok: r.ok, rtt: m?.[1] ? `${m[1]} ms` : r.stdout.trim().split('\n').pop() ?? '' };
}

export const demoCommand: CliCommand = {
  name: 'demo',
  summary: 'single-host demo: two containers on a weft bridge, traffic, egress, clean-up',
  help: `Usage: weftctl demo

Builds a throwaway "host" namespace with two containers plugged in by bin/cni/weft-bridge
(weft-ipam, isGateway, ipMasq) and an "outside" namespace reached through masquerade; pings
container to container, to the gateway and outside; runs CHECK and DEL; verifies nothing is
left; removes every namespace it made (also on failure). Never touches the root namespace.
Exit code 0 when every check passed.`,
  async run() {
    const id = randomBytes(3).toString('hex');
    const names = { host: `weftdemo-${id}-host`, out: `weftdemo-${id}-out`, c1: `weftdemo-${id}-c1`, c2: `weftdemo-${id}-c2` };
    const dataDir = mkdtempSync(join(tmpdir(), 'weft-demo-'));
    const conf = JSON.stringify({
      cniVersion: '1.1.0', name: 'weft-demo', type: 'weft-bridge', bridge: 'weft0', isDefaultGateway: true, ipMasq: true, hairpinMode: true,
      ipam: { type: 'weft-ipam', ranges: [[{ subnet: '10.88.0.0/24' }]], dataDir },
    });
    const rows: Row[] = [];
    const made: string[] = [];
    const progress = new Progress(7);
    let failed = false;
    const record = (check: string, ok: boolean, detail: string) => {
      rows.push({ check, result: ok ? 'ok' : 'FAILED', detail });
      if (!ok) failed = true;
    };
    const plugin = (command: string, container: 'c1' | 'c2') =>
      sh(names.host, [join(CNI_DIR, 'weft-bridge')], {
        CNI_COMMAND: command, CNI_CONTAINERID: `demo-${container}`, CNI_NETNS: netnsPath(names[container]),
        CNI_IFNAME: 'eth0', CNI_PATH: CNI_DIR,
      }, command === 'CHECK' ? checkConf(container) : conf);
    const results: Record<string, unknown> = {};
    const checkConf = (container: 'c1' | 'c2') => JSON.stringify({ ...JSON.parse(conf), prevResult: results[container] });
    try {
      progress.next('creating namespaces: host, outside, two containers');
      for (const n of Object.values(names)) { createNamedNetns(n); made.push(n); }
      // host ↔ outside over a veth on the benchmark range; outside has no route to 10.88/24.
      Netlink.with(netnsPath(names.host), (nl) => {
        nl.createVeth({ name: 'uplink', peerName: 'eth0', peerNsPath: netnsPath(names.out), up: true, peerUp: true });
        nl.addAddress('uplink', parseCidr('198.18.0.1/24'));
      });
      Netlink.with(netnsPath(names.out), (nl) => { nl.addAddress('eth0', parseCidr('198.18.0.2/24')); });
      Netlink.with(netnsPath(names.host), (nl) => nl.replaceRoute({ dst: 'default', gateway: parseIP('198.18.0.2') }));
      writeSysctl('net.ipv4.ip_forward', '1', netnsPath(names.host));

      progress.next('CNI ADD ×2 through bin/cni/weft-bridge');
      const ips: Record<string, string> = {};
      for (const c of ['c1', 'c2'] as const) {
        const t0 = process.hrtime.bigint();
        const r = plugin('ADD', c);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (!r.ok) { record(`ADD ${c}`, false, r.stdout.trim() || r.stderr.trim()); throw new Error(`ADD ${c} failed`); }
        const parsed = JSON.parse(r.stdout) as { ips: Array<{ address: string }> };
        results[c] = parsed;
        ips[c] = parsed.ips[0]?.address.split('/')[0] ?? '?';
        record(`ADD ${c}`, true, `${ips[c]} in ${ms.toFixed(0)} ms`);
      }

      progress.next('container ↔ container');
      const p12 = pingRtt(names.c1, ips.c2 ?? '');
      record('c1 → c2 (ICMP)', p12.ok, `avg ${p12.rtt}`);
      const p21 = pingRtt(names.c2, ips.c1 ?? '');
      record('c2 → c1 (ICMP)', p21.ok, `avg ${p21.rtt}`);

      progress.next('container → gateway and outside (masquerade)');
      const pg = pingRtt(names.c1, '10.88.0.1');
      record('c1 → gateway 10.88.0.1', pg.ok, `avg ${pg.rtt}`);
      const po = pingRtt(names.c1, '198.18.0.2');
      record('c1 → outside 198.18.0.2', po.ok, `avg ${po.rtt} (outside has no route back: NAT)`);

      progress.next('CNI CHECK ×2');
      for (const c of ['c1', 'c2'] as const) {
        const r = plugin('CHECK', c);
        record(`CHECK ${c}`, r.ok, r.ok ? 'interface, addresses, routes, rules as promised' : r.stdout.trim());
      }

      progress.next('CNI DEL ×2, then DEL again (idempotent)');
      for (const c of ['c1', 'c2'] as const) {
        const a = plugin('DEL', c);
        const b = plugin('DEL', c);
        record(`DEL ${c} (twice)`, a.ok && b.ok, a.ok && b.ok ? 'both succeeded' : (a.stdout + b.stdout).trim());
      }
      const veths = Netlink.with(netnsPath(names.host), (nl) => nl.listLinks().filter((l) => l.kind === 'veth' && l.name !== 'uplink'));
      const left = readdirSync(join(dataDir, 'weft-demo')).filter((f) => !f.startsWith('last_reserved') && !f.startsWith('lock'));
      record('nothing left after DEL', veths.length === 0 && left.length === 0, `${veths.length} veths, ${left.length} allocations`);
    } catch (err) {
      if (!failed) record('demo', false, err instanceof Error ? err.message : String(err));
      progress.fail();
    } finally {
      progress.next('removing namespaces');
      for (const n of made.reverse()) deleteNamedNetns(n);
      rmSync(dataDir, { recursive: true, force: true });
      progress.done();
    }
    process.stdout.write('\n' + renderTable(['check', 'result', 'detail'], rows.map((r) => [r.check, r.result, r.detail]), { rule: true }));
    process.stdout.write(failed ? '\ndemo FAILED\n' : '\ndemo passed: weft-bridge plugged two containers in, they talked, and left nothing behind\n');
    return failed ? ExitCode.Failure : ExitCode.Ok;
  },
};

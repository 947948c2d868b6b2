// One container's view of the lab (run inside its namespace by `weftctl lab check`):
// `node probe.js JSON` with {targets:[{name,ip}], port, count, timeoutMs?}; prints one JSON line
// with, per target, ICMP (ping's own summary) and TCP (round trips on one connection to the
// target's echo server). Targets are probed in parallel. timeoutMs (default 3000 for TCP, 1000 per
// ping) is how long a probe waits: where failures are expected (a NetworkPolicy blocking), they
// cost that much. No project imports: it must start fast.
import { execFile } from 'node:child_process';
import { connect } from 'node:net';

interface Target { name: string; ip: string }
interface Input { targets: Target[]; port: number; count: number; timeoutMs?: number }
export interface ProbeOutcome { ok: boolean; rttMs?: number; error?: string }
export interface ProbeLine { target: string; ip: string; icmp: ProbeOutcome; tcp: ProbeOutcome }

function icmp(ip: string, count: number, timeoutMs = 1000): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    execFile('ping', ['-n', '-q', '-c', String(count), '-i', '0.2', '-W', (timeoutMs / 1000).toFixed(3), ip], { timeout: 10_000 }, (err, stdout) => {
      const rx = /(\d+) received/.exec(stdout);
      const rtt = /= [\d.]+\/([\d.]+)\//.exec(stdout);
      const received = rx?.[1] !== undefined ? Number(rx[1]) : 0;
      if (received > 0 && rtt?.[1] !== undefined) resolve({ ok: received === count, rttMs: Number(rtt[1]), ...(received < count && { error: `${received}/${count} replies` }) });
      else resolve({ ok: false, error: err ? `no reply (${count} sent)` : 'no reply' });
    });
  });
}

function tcp(ip: string, port: number, count: number, timeoutMs = 3000): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const s = connect({ host: ip, port });
    const times: number[] = [];
    let t0 = 0n;
    let buf = '';
    const payload = 'weft-lab-probe\n';
    const finish = (o: ProbeOutcome) => { clearTimeout(timer); s.destroy(); resolve(o); };
    const timer = setTimeout(() => finish({ ok: false, error: times.length === 0 ? 'timeout' : `timeout after ${times.length} echoes` }), timeoutMs);
    const send = () => { t0 = process.hrtime.bigint(); s.write(payload); };
    s.setNoDelay(true);
    s.on('connect', send);
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.length < payload.length) return;
      if (buf !== payload) { finish({ ok: false, error: 'echo mismatch' }); return; }
      buf = '';
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (times.length < count) { send(); return; }
      times.sort((a, b) => a - b);
      finish({ ok: true, rttMs: times[Math.floor(times.length / 2)] ?? 0 });
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish({ ok: false, error: e.code ?? e.message }));
  });
}

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2] ?? '{}') as Input;
  const lines = await Promise.all(input.targets.map(async (t): Promise<ProbeLine> => {
    const [i, c] = await Promise.all([icmp(t.ip, input.count, input.timeoutMs), tcp(t.ip, input.port, input.count, input.timeoutMs)]);
    return { target: t.name, ip: t.ip, icmp: i, tcp: c };
  }));
  process.stdout.write(JSON.stringify(lines) + '\n');
}

void main();

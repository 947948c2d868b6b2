// The doctor's report for people: one line per hop in path order, with cause and fix under a
// broken one, and a last line naming where the path breaks. --json prints the report itself.
import type { DoctorReport, HopStatus } from './types.js';

const MARK: Record<HopStatus, string> = { ok: 'OK', fail: 'FAIL', warn: 'WARN', skip: '--' };

export function renderReport(r: DoctorReport): string {
  const probe = r.probe.protocol === 'ICMP' ? 'ICMP' : `${r.probe.protocol}/${r.probe.port}`;
  const end = (e: DoctorReport['src']) => `${e.name} (${e.ip}${e.node !== undefined ? ` on ${e.node}` : ''})`;
  const whereWidth = Math.max(...r.hops.map((h) => h.where.length));
  const lines = [`${end(r.src)} → ${end(r.dst)}, ${probe}`];
  for (const h of r.hops) {
    lines.push(`  ${MARK[h.status].padEnd(4)}  ${h.where.padEnd(whereWidth)}  ${h.title}: ${h.detail}`);
    if (h.status === 'fail' || h.status === 'warn') {
      const pad = ' '.repeat(8 + whereWidth);
      if (h.cause !== undefined) lines.push(`${pad}cause: ${h.cause}`);
      if (h.fix !== undefined) lines.push(`${pad}fix:   ${h.fix}`);
    }
  }
  const f = r.firstFailure;
  lines.push(f ? `broken at ${f.id} (${f.where}): ${f.cause ?? f.detail}` : 'every hop OK');
  return lines.join('\n') + '\n';
}

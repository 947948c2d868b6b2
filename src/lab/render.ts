// The lab's reports as text tables (src/text-table.ts), with colour for ok/failed cells when
// writing to a terminal.
import type { BenchReport } from './bench.js';
import { type CheckReport, OUTSIDE_TARGET, rttSummary } from './check.js';
import type { LabStatus } from './lab.js';
import type { ProbeOutcome } from './probe.js';
import { type Cell, paint, renderTable } from '../text-table.js';

export type { Cell, Tone } from '../text-table.js';
export { useColour } from '../text-table.js';

/** The lab's tables: a rule under the headers, colour on a terminal. */
export function table(headers: string[], rows: Array<Array<Cell | string>>, colour: boolean): string {
  return renderTable(headers, rows, { rule: true, colour });
}

export function ms(v: number | undefined): string {
  if (v === undefined) return '–';
  return v < 1 ? `${v.toFixed(3)}` : v < 10 ? `${v.toFixed(2)}` : `${v.toFixed(1)}`;
}

function probeCell(icmp: ProbeOutcome, tcp: ProbeOutcome): Cell {
  if (icmp.ok && tcp.ok) return { text: `✓ ${ms(icmp.rttMs)}/${ms(tcp.rttMs)}`, tone: 'ok' };
  const bad = [!icmp.ok && `icmp ${icmp.error ?? ''}`.trim(), !tcp.ok && `tcp ${tcp.error ?? ''}`.trim()].filter(Boolean).join(', ');
  return { text: `✗ ${bad}`, tone: 'bad' };
}

/** The matrix of one address family: one row per source container, one column per target (and outside). */
function checkMatrix(r: CheckReport, family: 4 | 6, colour: boolean): string {
  const names = r.containers.map((c) => c.name);
  const headers = ['from \\ to', ...names, OUTSIDE_TARGET];
  const rows = r.containers.map((c) => [
    { text: `${c.name} ${family === 6 && c.ip6 !== undefined ? c.ip6 : c.ip}` },
    ...names.map((t) => {
      if (t === c.name) return { text: '·', tone: 'dim' as const };
      const p = r.pairs.find((x) => x.from === c.name && x.to === t && x.family === family);
      return p ? probeCell(p.icmp, p.tcp) : { text: '?', tone: 'bad' as const };
    }),
    ((): Cell => {
      const e = r.egress.find((x) => x.from === c.name && x.family === family);
      return e ? probeCell(e.icmp, e.tcp) : { text: '?', tone: 'bad' };
    })(),
  ]);
  return table(headers, rows, colour);
}

/** The matrices (one per address family the lab has), the RTT summary and the verdict. */
export function renderCheck(r: CheckReport, colour: boolean): string {
  const families = ([4, 6] as const).filter((f) => r.pairs.some((p) => p.family === f) || r.egress.some((p) => p.family === f));
  const matrices = families.map((f) => (families.length > 1 ? `IPv${f}:\n` : '') + checkMatrix(r, f, colour)).join('\n');
  const s = rttSummary(r);
  const total = (r.pairs.length + r.egress.length) * 2 + r.hostToOwn.length;
  const own = r.hostToOwn.length > 0 ? ` + ${r.hostToOwn.length} host → own container` : '';
  const verdict = r.ok
    ? `all ${total} probes ${r.hostToOwn.some((p) => p.expected === 'fail') ? 'as expected' : 'passed'} (${r.pairs.length} container pairs + ${r.egress.length} egress, ICMP and TCP each${own})`
    : `${r.failures} of ${total} probes FAILED`;
  return `lab ${r.lab} (${r.backend}) — cells: ICMP/TCP round trip in ms (median of 3)\n\n`
    + matrices
    + renderHostToOwn(r, colour)
    + `\nmedian ICMP RTT: same host ${ms(s.sameHost)} ms, across hosts ${ms(s.crossHost)} ms, egress ${ms(s.egress)} ms; TCP across hosts ${ms(s.tcpCrossHost)} ms\n`
    + `${paint(verdict, r.ok ? 'ok' : 'bad', colour)} in ${(r.durationMs / 1000).toFixed(1)}s\n`;
}

/** macvlan labs: host → own container, failing as expected without a shim. */
function renderHostToOwn(r: CheckReport, colour: boolean): string {
  if (r.hostToOwn.length === 0) return '';
  const shim = r.hostToOwn[0]?.expected === 'pass';
  const rows = r.hostToOwn.map((p) => {
    const seen = probeCell(p.icmp, p.tcp);
    const verdict: Cell = p.asExpected
      ? { text: p.expected === 'pass' ? 'ok' : 'fails, as expected', tone: p.expected === 'pass' ? 'ok' : 'dim' }
      : { text: p.expected === 'pass' ? 'FAILED' : 'UNEXPECTEDLY reachable', tone: 'bad' };
    return [p.from, `${p.to} ${p.toIP}`, p.asExpected && p.expected === 'fail' ? { text: seen.text, tone: 'dim' as const } : seen, verdict];
  });
  const why = shim
    ? 'each host reaches its own containers through its macvlan shim (weft-shim)'
    : 'a macvlan master cannot reach its own macvlans, so these fail by design; lab up --macvlan-shim adds the remedy';
  return `\nhost → own container (${why}):\n` + table(['host', 'container', 'ICMP/TCP', 'verdict'], rows, colour);
}

export function gbps(v: number): string {
  return v.toFixed(2);
}

export function renderBench(b: BenchReport, colour: boolean): string {
  const row = (x: BenchReport['pod'], rel: string) => [x.path, `${x.from} → ${x.to}`, gbps(x.result.gbps), String(x.result.retransmits), rel];
  return `lab ${b.lab}: iperf3, one TCP stream, ${b.pod.result.seconds.toFixed(0)} s each\n\n`
    + table(['path', 'between', 'Gbit/s', 'retransmits', 'vs raw'], [row(b.pod, `${(b.ratio * 100).toFixed(0)} %`), row(b.raw, '100 %')], colour);
}

export function renderStatus(s: LabStatus, colour: boolean): string {
  const rec = s.record;
  const head = rec
    ? `lab ${s.name}: ${rec.phase}${s.healthy ? '' : rec.phase === 'up' ? ' (DEGRADED)' : ''} — backend ${rec.backend}, store ${rec.store}${rec.etcdUrl ? ` (${rec.etcdUrl})` : ''}${rec.kubeServer ? ` (${rec.kubeServer})` : ''}, ${rec.hosts} host(s) × ${rec.pods} container(s), since ${rec.createdAt}\nstate: ${s.stateDir}\n`
    : `lab ${s.name}: no record (a crashed up?) — ${s.namespaces.length} namespace(s) left; remove with weftctl lab down --name ${s.name}\n`;
  if (!rec) return head;
  const racks = rec.racks !== undefined;
  const shims = rec.macvlanShim === true;
  const hosts = table(['host', ...(racks ? ['rack'] : []), 'namespace', 'underlay', ...(shims ? ['shim'] : []), 'pod subnet', 'containers'], rec.hostList.map((h) => [
    `h${h.index}`, ...(racks ? [String(h.rack ?? '?')] : []), h.ns, [h.ip, ...(h.ip6 !== undefined && h.ip6 !== h.ip ? [h.ip6] : [])].join(' '),
    ...(shims ? [h.shimAddress ?? '–'] : []), [h.subnet ?? '–', ...(h.subnet6 !== undefined ? [h.subnet6] : [])].join(' '),
    rec.containers.filter((c) => c.host === h.index).map((c) => `${c.name} ${c.ip ?? '?'}${c.ip6 !== undefined ? ` ${c.ip6}` : ''}`).join(', '),
  ]), colour);
  const procs = table(['process', 'pid', 'state', 'log'], s.processes.map((p) => [
    p.role, String(p.pid), p.alive ? { text: 'running', tone: 'ok' } : { text: 'DEAD', tone: 'bad' }, p.log,
  ]), colour);
  return `${head}${rec.error ? `error: ${rec.error}\n` : ''}${racks ? `racks: ${rec.racks}, switches ${(rec.switches ?? []).join(', ')}; router ${rec.router ?? '?'} (BIRD 2, route reflector); outside ${rec.outsideIP ?? '?'} behind the router\n` : ''}\n${hosts}\n${procs}${renderBird(s, colour)}`;
}

function renderBird(s: LabStatus, colour: boolean): string {
  if (s.bird === undefined) return '';
  if ('error' in s.bird) return `\nBIRD sessions: ${paint(`unavailable (${s.bird.error})`, 'bad', colour)}\n`;
  const hostIP = new Map((s.record?.hostList ?? []).map((h) => [`h${h.index}`, h.ip]));
  return '\nBIRD sessions on the router (birdc show protocols):\n' + table(['peer', 'address', 'state', 'info'], s.bird.sessions.map((b) => [
    b.name, hostIP.get(b.name) ?? '?', b.state, { text: b.info || '–', tone: /Established/.test(b.info) ? 'ok' : 'bad' },
  ]), colour);
}

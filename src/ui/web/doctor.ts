// The doctor panel: pick two pods (click them, or the two lists), POST /api/doctor, show the hops.

import type { UiDoctorHop, UiDoctorReport, UiDoctorRequest } from '../model.js';
import type { Derived } from './derive.js';
import { h, replace } from './dom.js';

type Protocol = NonNullable<UiDoctorRequest['protocol']>;
const PROTOCOLS: readonly Protocol[] = ['ICMP', 'TCP', 'UDP', 'SCTP'];

export interface DoctorState {
  readonly src: string | undefined;
  readonly dst: string | undefined;
  readonly report: UiDoctorReport | undefined;
}

/** Owns #doctor; tells the page (onChange) when the picked pods or the report change. */
export class DoctorPanel {
  src: string | undefined;
  dst: string | undefined;
  report: UiDoctorReport | undefined;
  private error: string | undefined;
  private running = false;
  private request = 0;
  private podSignature: string | undefined;
  private readonly srcSel: HTMLSelectElement;
  private readonly dstSel: HTMLSelectElement;
  private readonly proto: HTMLSelectElement;
  private readonly port: HTMLInputElement;
  private readonly run: HTMLButtonElement;
  private readonly result: HTMLElement;

  constructor(private readonly root: HTMLElement, private readonly onChange: () => void) {
    this.srcSel = h('select', { 'id': 'doctor-src', 'aria-label': 'source pod' });
    this.dstSel = h('select', { 'id': 'doctor-dst', 'aria-label': 'destination pod' });
    this.proto = h('select', { 'id': 'doctor-proto', 'aria-label': 'protocol' },
      h('option', { value: '' }, 'default'), ...PROTOCOLS.map((p) => h('option', { value: p }, p)));
    this.port = h('input', { 'id': 'doctor-port', 'type': 'number', 'min': 1, 'max': 65535, 'placeholder': 'port', 'aria-label': 'port' });
    this.run = h('button', { id: 'doctor-run', type: 'submit' }, 'Trace');
    this.result = h('div', { id: 'doctor-result' });
    const form = h('form', { class: 'doctor-form' },
      h('label', null, h('span', null, 'from'), this.srcSel),
      h('label', null, h('span', null, 'to'), this.dstSel),
      h('div', { class: 'row' }, this.proto, this.port, this.run, h('button', { id: 'doctor-clear', type: 'button' }, 'Clear')));
    replace(root,
      h('h2', null, 'Doctor'),
      h('p', { class: 'hint' }, 'Click a pod, then another, to trace the path between them — or pick them here.'),
      form, this.result);
    form.addEventListener('submit', (e) => { e.preventDefault(); void this.trace(); });
    byIdIn(form, 'doctor-clear').addEventListener('click', () => this.clear());
    this.srcSel.addEventListener('change', () => { this.src = this.srcSel.value || undefined; this.dropReport(); });
    this.dstSel.addEventListener('change', () => { this.dst = this.dstSel.value || undefined; this.dropReport(); });
    this.renderResult();
  }

  get state(): DoctorState {
    return { src: this.src, dst: this.dst, report: this.report };
  }

  /** A pod was clicked: the first click picks the source, the second the destination and runs. */
  pick(id: string): void {
    if (this.src === undefined || this.dst !== undefined) {
      this.src = id;
      this.dst = undefined;
      this.report = undefined;
      this.error = undefined;
      // A trace still running belongs to the old pair: its answer must not land on this one.
      this.request += 1;
    } else if (id !== this.src) {
      this.dst = id;
    }
    this.srcSel.value = this.src ?? '';
    this.dstSel.value = this.dst ?? '';
    this.renderResult();
    this.onChange();
    if (this.src !== undefined && this.dst !== undefined) void this.trace();
  }

  /** New model: refresh the pod lists if the pods changed, keeping what was picked. */
  sync(d: Derived): void {
    if (d.podSignature === this.podSignature) return;
    this.podSignature = d.podSignature;
    const options = (): HTMLOptionElement[] => [h('option', { value: '' }, '— pod —'), ...[...d.podById.keys()].map((id) => h('option', { value: id }, id))];
    this.srcSel.replaceChildren(...options());
    this.dstSel.replaceChildren(...options());
    this.srcSel.value = this.src !== undefined && d.podById.has(this.src) ? this.src : '';
    this.dstSel.value = this.dst !== undefined && d.podById.has(this.dst) ? this.dst : '';
  }

  private clear(): void {
    this.request++;
    this.src = this.dst = this.report = this.error = undefined;
    this.running = false;
    this.srcSel.value = this.dstSel.value = '';
    this.renderResult();
    this.onChange();
  }

  private dropReport(): void {
    this.report = undefined;
    this.error = undefined;
    this.renderResult();
    this.onChange();
  }

  async trace(): Promise<void> {
    if (this.src === undefined || this.dst === undefined) {
      this.error = 'pick two pods first';
      this.renderResult();
      return;
    }
    const protocol = PROTOCOLS.find((p) => p === this.proto.value);
    const port = Number(this.port.value);
    const body: UiDoctorRequest = {
      src: this.src, dst: this.dst,
      ...(protocol !== undefined ? { protocol } : {}),
      ...(protocol !== undefined && protocol !== 'ICMP' && Number.isInteger(port) && port > 0 ? { port } : {}),
    };
    const mine = ++this.request;
    this.running = true;
    this.report = undefined;
    this.error = undefined;
    this.renderResult();
    this.onChange();
    let report: UiDoctorReport | undefined;
    let error: string | undefined;
    try {
      const res = await fetch('api/doctor', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const text = await res.text();
      let json: unknown;
      try { json = JSON.parse(text); } catch { json = undefined; }
      if (!res.ok) error = errorOf(json) ?? `the server answered ${res.status} ${res.statusText}`;
      else if (isReport(json)) report = json;
      else error = 'the server answered something that is not a doctor report';
    } catch (err) {
      error = `could not reach the server: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (mine !== this.request) return;
    this.running = false;
    this.report = report;
    this.error = error;
    this.renderResult();
    this.onChange();
  }

  private renderResult(): void {
    this.root.dataset.state = this.running ? 'running' : this.error !== undefined ? 'error' : this.report ? (this.report.ok ? 'ok' : 'fail') : 'idle';
    this.run.disabled = this.running;
    const r = this.report;
    if (this.running) return replace(this.result, h('p', { class: 'hint' }, `tracing ${this.src ?? ''} → ${this.dst ?? ''}…`));
    if (this.error !== undefined) return replace(this.result, h('p', { class: 'error' }, this.error));
    if (!r) {
      return replace(this.result, this.src !== undefined && this.dst === undefined
        ? h('p', { class: 'hint' }, 'from ', h('b', null, this.src), ': now click the destination pod')
        : null);
    }
    const firstFail = r.hops.findIndex((hop) => hop.status === 'fail');
    const skipped = r.hops.filter((hop) => hop.status === 'skip').length;
    const end = (e: UiDoctorReport['src']): string => `${e.name} (${e.ip}${e.node !== undefined ? ` on ${e.node}` : ''})`;
    replace(this.result,
      h('p', { 'class': 'summary', 'data-ok': r.ok },
        end(r.src), ' → ', end(r.dst), h('br'),
        h('b', null, r.ok ? `no hop fails${skipped > 0 ? ` (${skipped} of ${r.hops.length} not checked from here)` : ''}` : r.firstFailure ? `broken at: ${r.firstFailure.title}` : 'not ok')),
      h('ol', { class: 'hops' }, ...r.hops.map((hop, i) => hopItem(hop, i === firstFail))));
  }
}

function hopItem(hop: UiDoctorHop, first: boolean): HTMLElement {
  return h('li', { 'class': 'hop', 'data-hop-id': hop.id, 'data-status': hop.status, 'data-first-failure': first },
    h('div', { class: 'hop-head' }, h('span', { class: 'status' }, hop.status), h('span', { class: 'title' }, hop.title), h('span', { class: 'where' }, hop.where)),
    hop.detail !== '' ? h('div', { class: 'detail' }, hop.detail) : null,
    hop.cause !== undefined ? h('div', { class: 'cause' }, h('b', null, 'cause '), hop.cause) : null,
    hop.fix !== undefined ? h('div', { class: 'fix' }, h('b', null, 'fix '), h('code', null, hop.fix)) : null);
}

function byIdIn(root: HTMLElement, id: string): HTMLElement {
  const e = root.querySelector(`#${id}`);
  if (!(e instanceof HTMLElement)) throw new Error(`no #${id}`);
  return e;
}

function errorOf(json: unknown): string | undefined {
  if (typeof json === 'object' && json !== null && 'error' in json && typeof json.error === 'string') return json.error;
  return undefined;
}

function isReport(json: unknown): json is UiDoctorReport {
  return typeof json === 'object' && json !== null && 'hops' in json && Array.isArray(json.hops)
    && 'src' in json && typeof json.src === 'object' && 'dst' in json && typeof json.dst === 'object' && 'ok' in json;
}

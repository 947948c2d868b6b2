// weftctl ui's page: follows /api/events (one UiModel per event) and draws it. A model replaces
// the previous one and is drawn on the next animation frame, keeping the selection, the search
// and the doctor's trace.
//
// Test hooks (browser tests key on these; keep them stable):
//   body[data-seq]            seq of the model last drawn; body[data-render-ms] how long it took;
//                             body[data-model-error] while the page cannot draw what it got
//   [data-host-id]            one per host in the drawing (card or tile), with data-agent-state
//   [data-link="<a>|<b>"]     a drawn link (host ids sorted), with data-state (linkState)
//   [data-pod-id]             one per pod: in the drawing up to MESH_MAX hosts, else in the host
//                             panel of the selected host (other lists use data-pod-ref)
//   [data-policy-id]          policies panel entries (data-selected when highlighted)
//   #doctor                   data-state idle|running|ok|fail|error; one [data-hop-id] per hop
//                             with data-status, the first failing one also data-first-failure;
//                             #doctor-src, #doctor-dst (selects of pod ids), #doctor-run
//   #search, #host-count, #live (data-state connecting|connected|reconnecting), #banner

import { UI_MODEL_VERSION, type UiModel } from '../model.js';
import { derive, search, type Derived, type SearchHits } from './derive.js';
import { DoctorPanel } from './doctor.js';
import { byId, h, replace } from './dom.js';
import { Drawing, LINK_CAP, type DrawSummary } from './drawing.js';
import { MESH_MAX } from './layout.js';
import { isolationText, renderDrops, renderHeader, renderHostPanel, renderLive, renderPolicies, renderProblems, type LiveState } from './panels.js';

interface State {
  derived: Derived | undefined;
  selectedHost: string | undefined;
  selectedPolicy: string | undefined;
  hits: SearchHits | undefined;
  live: LiveState;
  lastUpdate: number | undefined;
  summary: DrawSummary | undefined;
  /** Bytes a second over each link (key "a|b"), from the last two models' traffic counters. */
  rates: Map<string, number>;
  /** The previous model's counters and time, to take the next rates against. */
  lastTraffic: { at: number; hosts: UiModel['hosts'] } | undefined;
}

const st: State = {
  derived: undefined, selectedHost: undefined, selectedPolicy: undefined, hits: undefined,
  live: 'connecting', lastUpdate: undefined, summary: undefined, rates: new Map(), lastTraffic: undefined,
};

const els = {
  source: byId('source'),
  network: byId('network'),
  counts: byId('counts'),
  live: byId('live'),
  search: byId<HTMLInputElement>('search'),
  searchCount: byId('search-count'),
  banner: byId('banner'),
  problems: byId('problems'),
  legend: byId('legend'),
  hostPanel: byId('host-panel'),
  policies: byId('policies'),
  drops: byId('drops'),
  side: byId('side'),
  empty: byId('empty'),
};

const drawing = new Drawing(
  document.getElementById('drawing') as unknown as SVGSVGElement,
  byId('tooltip'),
  {
    host: (id) => selectHost(st.selectedHost === id ? undefined : id),
    pod: (id) => doctor.pick(id),
    background: () => selectHost(undefined),
  },
  describe,
  () => ({ left: 52, bottom: els.legend.offsetHeight + 16 }),
);
const doctor = new DoctorPanel(byId('doctor'), () => schedule());

// Rendering --------------------------------------------------------------------------------------

let frame = 0;
function schedule(): void {
  if (frame === 0) frame = requestAnimationFrame(() => { frame = 0; render(); });
}

function render(): void {
  const d = st.derived;
  if (!d) return;
  const t0 = performance.now();
  renderHeader(d, els);
  renderProblems(els.problems, d.model);
  els.empty.hidden = d.model.hosts.length > 0;
  const ds = doctor.state;
  st.summary = drawing.render(d, { selectedHost: st.selectedHost, doctorSrc: ds.src, doctorDst: ds.dst, report: ds.report });
  renderLegend(st.summary);
  renderHostPanel(els.hostPanel, d, panelContext(d));
  renderPolicies(els.policies, d, st.selectedPolicy);
  renderDrops(els.drops, d.model.drops ?? []);
  showRates();
  highlight();
  document.body.dataset.seq = String(d.model.seq);
  document.body.dataset.renderMs = (performance.now() - t0).toFixed(1);
  // The doctor's pod lists (thousands of options at 1000 hosts) after this frame, not in it.
  setTimeout(() => { if (st.derived === d) doctor.sync(d); }, 0);
}

function panelContext(d: Derived): Parameters<typeof renderHostPanel>[2] {
  const ds = doctor.state;
  return { selected: st.selectedHost, hits: st.hits, podsDrawn: d.model.hosts.length <= MESH_MAX, doctorSrc: ds.src, doctorDst: ds.dst };
}

function highlight(): void {
  const d = st.derived;
  if (!d) return;
  const policy = st.selectedPolicy !== undefined ? d.policyById.get(st.selectedPolicy) : undefined;
  drawing.highlight(d, st.hits, policy ? new Set(policy.selects) : undefined);
  els.searchCount.textContent = st.hits ? `${st.hits.hosts.size} of ${d.model.hosts.length} hosts` : '';
}

function renderLegend(sum: DrawSummary): void {
  const key = (cls: string, label: string, attrs: Record<string, string> = {}): HTMLElement =>
    h('span', { class: 'key' }, h('i', { class: cls, ...attrs }), label);
  const note = sum.kind === 'tiles'
    ? h('div', { class: 'note' }, sum.notOkTotal === 0
      ? 'No agent misses a peer. Click a host to draw its links.'
      : `${Math.min(sum.notOkTotal, LINK_CAP)} of ${sum.notOkTotal} not-ok links drawn: those where an agent misses a peer (a down agent's links are left to its tile). Click a host to draw all its links.`)
    : null;
  replace(els.legend,
    h('div', null,
      key('ln', 'ok', { 'data-state': 'ok' }), key('ln', 'one-sided', { 'data-state': 'one-sided' }),
      key('ln', 'broken', { 'data-state': 'broken' }), key('ln', 'unknown', { 'data-state': 'unknown' })),
    h('div', null,
      key('ag', 'ready', { 'data-agent-state': 'ready' }), key('ag', 'not ready', { 'data-agent-state': 'not-ready' }),
      key('ag', 'down', { 'data-agent-state': 'down' }), key('ag', 'unknown', { 'data-agent-state': 'unknown' }),
      key('ag trouble', 'missing peers')),
    sum.kind === 'mesh' ? h('div', null, key('pd', 'pod'), key('pd iso', 'isolated pod')) : null,
    note);
}

function describe(e: Element): string | undefined {
  const d = st.derived;
  if (!d) return undefined;
  const podId = e.getAttribute('data-pod-id');
  if (podId !== null) {
    const p = d.podById.get(podId);
    if (!p) return undefined;
    const labels = Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(' ');
    return [p.id, p.ips.join(', '), labels, isolationText(p) ?? '', p.policies.length > 0 ? `policies: ${p.policies.join(', ')}` : '']
      .filter((x) => x !== '').join('\n');
  }
  const hostId = e.getAttribute('data-host-id');
  if (hostId !== null) {
    const x = d.hostById.get(hostId);
    if (!x) return undefined;
    const pods = d.podsByHost.get(x.id)?.length ?? 0;
    return `${x.name}\n${x.subnet} · ${x.publicIP}\nagent ${x.agent.state}: ${x.agent.detail}\n${pods} pod${pods === 1 ? '' : 's'}`;
  }
  const link = e.getAttribute('data-link');
  if (link !== null) {
    const [a, b] = link.split('|').map((id) => d.hostById.get(id)?.name ?? id);
    const rate = st.rates.get(link);
    return `${a} ↔ ${b}: ${e.getAttribute('data-state') ?? ''}${rate !== undefined ? ` · ${bitRate(rate)} of pod traffic` : ''}`;
  }
  return undefined;
}

/**
 * Each link's pod traffic in bytes a second: what each end forwarded to the other (its tx
 * counter toward the peer) since the previous model, over the time between them.
 */
function linkRates(prev: State['lastTraffic'], m: UiModel): Map<string, number> {
  const out = new Map<string, number>();
  if (!prev) return out;
  const dt = (m.at - prev.at) / 1000;
  if (dt <= 0) return out;
  const before = new Map(prev.hosts.map((x) => [x.id, x.traffic]));
  for (const host of m.hosts) {
    const was = before.get(host.id);
    if (!host.traffic || !was) continue;
    for (const [peer, now] of Object.entries(host.traffic)) {
      const then = was[peer];
      if (!then || now.tx < then.tx) continue;
      const key = [host.id, peer].sort().join('|');
      out.set(key, (out.get(key) ?? 0) + (now.tx - then.tx) / dt);
    }
  }
  return out;
}

function bitRate(bytesPerSecond: number): string {
  const bits = bytesPerSecond * 8;
  if (bits >= 1e9) return `${(bits / 1e9).toFixed(2)} Gbit/s`;
  if (bits >= 1e6) return `${(bits / 1e6).toFixed(1)} Mbit/s`;
  if (bits >= 1e3) return `${(bits / 1e3).toFixed(0)} kbit/s`;
  return `${bits.toFixed(0)} bit/s`;
}

/** Links carrying traffic are drawn thicker (log scale) and carry their rate for tests and tooltips. */
function showRates(): void {
  for (const el of document.querySelectorAll<SVGElement>('[data-link]')) {
    const rate = st.rates.get(el.getAttribute('data-link') ?? '') ?? 0;
    if (rate > 0) {
      el.setAttribute('data-bps', String(Math.round(rate * 8)));
      el.style.strokeWidth = String(Math.min(10, 1.5 + Math.log10(1 + rate / 1000)));
    } else {
      el.removeAttribute('data-bps');
      el.style.strokeWidth = '';
    }
  }
}

// Interaction ------------------------------------------------------------------------------------

function selectHost(id: string | undefined): void {
  st.selectedHost = id;
  schedule();
}

els.search.addEventListener('input', () => {
  const d = st.derived;
  st.hits = d ? search(d, els.search.value) : undefined;
  highlight();
  if (d && st.selectedHost === undefined) renderHostPanel(els.hostPanel, d, panelContext(d));
});
els.search.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && st.hits && st.derived) {
    const first = st.derived.model.hosts.find((x) => st.hits!.hosts.has(x.id));
    if (first) selectHost(first.id);
  }
});
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape') return;
  if (document.activeElement === els.search && els.search.value !== '') {
    els.search.value = '';
    els.search.dispatchEvent(new Event('input'));
  } else {
    st.selectedPolicy = undefined;
    selectHost(undefined);
  }
});

els.side.addEventListener('click', (e) => {
  const t = e.target instanceof Element ? e.target : null;
  if (!t) return;
  const host = t.closest('[data-select-host]');
  if (host) return selectHost(host.getAttribute('data-select-host') ?? undefined);
  if (t.closest('[data-close="host"]')) return selectHost(undefined);
  const pod = t.closest('#host-panel [data-pod-id], #host-panel [data-pod-ref]');
  if (pod) return doctor.pick(pod.getAttribute('data-pod-id') ?? pod.getAttribute('data-pod-ref')!);
  const policy = t.closest('[data-policy-id]');
  if (policy) {
    const id = policy.getAttribute('data-policy-id')!;
    st.selectedPolicy = st.selectedPolicy === id ? undefined : id;
    if (st.derived) renderPolicies(els.policies, st.derived, st.selectedPolicy);
    highlight();
  }
});

byId('zoom-in').addEventListener('click', () => drawing.zoom(1 / 1.4));
byId('zoom-out').addEventListener('click', () => drawing.zoom(1.4));
byId('zoom-fit').addEventListener('click', () => drawing.fit());

// Live -------------------------------------------------------------------------------------------

/** The model, or why the page cannot draw it. Fields are the server's (same source tree). */
function parseModel(text: string): { model: UiModel } | { error: string } {
  let v: unknown;
  try { v = JSON.parse(text); } catch { return { error: 'The server sent a model that is not JSON.' }; }
  if (typeof v !== 'object' || v === null) return { error: 'The server sent a model that is not an object.' };
  const version = 'version' in v ? v.version : undefined;
  if (version !== UI_MODEL_VERSION) {
    return { error: `The server sent a model of version ${JSON.stringify(version) ?? 'none'}; this page draws version ${UI_MODEL_VERSION}. Reload the page; if this stays, the page and the server come from different weft versions.` };
  }
  const m = v as Partial<Record<keyof UiModel, unknown>>;
  if (typeof m.seq !== 'number' || !Array.isArray(m.hosts) || !Array.isArray(m.pods) || !Array.isArray(m.policies) || !Array.isArray(m.problems)) {
    return { error: 'The server sent a model without seq, hosts, pods, policies or problems.' };
  }
  return { model: v as UiModel };
}

function onModel(text: string): void {
  const r = parseModel(text);
  if ('error' in r) {
    document.body.dataset.modelError = '';
    els.banner.hidden = false;
    els.banner.textContent = r.error;
    return;
  }
  delete document.body.dataset.modelError;
  els.banner.hidden = true;
  st.derived = derive(r.model);
  st.rates = linkRates(st.lastTraffic, r.model);
  if (r.model.hosts.some((x) => x.traffic !== undefined)) st.lastTraffic = { at: r.model.at, hosts: r.model.hosts };
  st.hits = search(st.derived, els.search.value);
  st.lastUpdate = r.model.at;
  setLive('connected');
  schedule();
}

function setLive(state: LiveState): void {
  st.live = state;
  renderLive(els.live, state, st.lastUpdate);
}

function connect(): void {
  const es = new EventSource('api/events');
  es.addEventListener('open', () => setLive('connected'));
  es.addEventListener('model', (e) => onModel((e as MessageEvent<string>).data));
  es.addEventListener('error', () => {
    setLive('reconnecting');
    // EventSource retries by itself unless the server refused it (a non-200, a wrong type).
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  });
}

setLive('connecting');
connect();

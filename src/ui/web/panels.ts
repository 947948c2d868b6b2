// The header, the host panel and the policies panel. Everything from the model goes in as text.

import type { UiDrop, UiHost, UiModel, UiPod } from '../model.js';
import type { Derived, SearchHits } from './derive.js';
import { h, replace, type Child } from './dom.js';

export type LiveState = 'connecting' | 'connected' | 'reconnecting';

export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

// Header ---------------------------------------------------------------------------------------

export function renderHeader(d: Derived, els: { source: HTMLElement; network: HTMLElement; counts: HTMLElement }): void {
  const m = d.model;
  els.source.textContent = m.source.label;
  els.source.title = `${m.source.label} (store: ${m.source.store})`;
  replace(els.network, m.network
    ? h('span', null, h('b', null, m.network.cidr), ' · ', m.network.backend)
    : h('span', { class: 'warn' }, 'no network config'));
  const a = d.agents;
  // Unknown links are not known to be broken (nobody could be asked): counted on their own.
  const notOk = d.links.broken + d.links['one-sided'];
  const chip = (kind: string, n: number, label: string, title?: string): HTMLElement =>
    h('span', { 'class': 'chip', 'data-kind': kind, 'data-zero': n === 0, title }, h('b', null, String(n)), ` ${label}`);
  replace(els.counts,
    h('span', { class: 'chip', title: 'hosts (leases)' }, h('b', { id: 'host-count' }, String(m.hosts.length)), ` ${m.hosts.length === 1 ? 'host' : 'hosts'}`),
    h('span', { class: 'group', title: 'agents (weftd)' },
      chip('ready', a.ready, 'ready'),
      a['not-ready'] > 0 ? chip('not-ready', a['not-ready'], 'not ready') : null,
      chip('down', a.down, 'down'),
      chip('unknown', a.unknown, 'unknown')),
    h('span', { 'class': 'chip', 'data-kind': d.links.broken > 0 ? 'broken' : notOk > 0 ? 'one-sided' : 'ok', 'data-zero': notOk === 0, 'id': 'links-not-ok',
      'title': `links not ok: ${d.links.broken} broken, ${d.links['one-sided']} one-sided (of ${d.links.ok + notOk + d.links.unknown})` },
    h('b', null, String(notOk)), ' links not ok'),
    d.links.unknown > 0 ? chip('unknown', d.links.unknown, 'links unknown', 'links no end of which can say whether it is programmed (its weftd cannot be asked from here)') : null,
    chip('pods', m.pods.length, m.pods.length === 1 ? 'pod' : 'pods'),
    chip('policies', m.policies.length, m.policies.length === 1 ? 'policy' : 'policies'),
  );
}

export function renderLive(el: HTMLElement, state: LiveState, last: number | undefined): void {
  el.dataset.state = state;
  const since = last !== undefined ? ` · updated ${clock(last)}` : '';
  el.textContent = state === 'connected' ? `live${since}` : state === 'connecting' ? 'connecting…' : `reconnecting…${since}`;
}

export function renderProblems(el: HTMLElement, m: UiModel): void {
  el.hidden = m.problems.length === 0;
  replace(el, ...m.problems.map((p) => h('div', null, '⚠ ', p)));
}

// Host panel -----------------------------------------------------------------------------------

export interface HostPanelContext {
  readonly selected: string | undefined;
  readonly hits: SearchHits | undefined;
  /** Whether the drawing shows pods; if not, the panel's pod items carry data-pod-id. */
  readonly podsDrawn: boolean;
  readonly doctorSrc: string | undefined;
  readonly doctorDst: string | undefined;
}

function agentBadge(state: UiHost['agent']['state']): HTMLElement {
  return h('span', { 'class': 'badge', 'data-agent-state': state }, state);
}

function lease(host: UiHost, now: number): string {
  if (host.expiresAt === undefined) return '—';
  if (host.expiresAt === null) return 'reservation (never expires)';
  const left = (host.expiresAt - now) / 1000;
  return left >= 0 ? `expires in ${duration(left)} (${clock(host.expiresAt)})` : `expired ${duration(-left)} ago`;
}

/** At most `max` items, then "+N more". */
function capped<T>(items: readonly T[], max: number, item: (t: T) => Child, more: (n: number) => Child = (n) => h('li', { class: 'more' }, `+${n} more`)): Child[] {
  const out: Child[] = items.slice(0, max).map(item);
  if (items.length > max) out.push(more(items.length - max));
  return out;
}

export function isolationText(p: UiPod): string | undefined {
  const { ingress, egress } = p.isolated;
  return ingress && egress ? 'isolated: ingress + egress' : ingress ? 'isolated: ingress' : egress ? 'isolated: egress' : undefined;
}

export function renderHostPanel(el: HTMLElement, d: Derived, ctx: HostPanelContext): void {
  const host = ctx.selected !== undefined ? d.hostById.get(ctx.selected) : undefined;
  if (!host) {
    const out: Child[] = [h('h2', null, 'Host')];
    if (ctx.selected !== undefined) out.push(h('p', { class: 'hint warn' }, `${ctx.selected} is no longer in the model.`));
    out.push(h('p', { class: 'hint' }, 'Click a host in the drawing for its details.'));
    if (ctx.hits) {
      const hits = d.model.hosts.filter((x) => ctx.hits!.hosts.has(x.id));
      out.push(h('h3', null, `${plural(hits.length, 'host')} match`),
        h('ul', { class: 'matches' }, ...capped(hits, 50, (x) => h('li', null,
          h('button', { 'class': 'link-button', 'data-select-host': x.id }, x.name), ' ', h('span', { class: 'dim' }, `${x.subnet} · ${x.publicIP}`), ' ', agentBadge(x.agent.state)))));
    }
    replace(el, ...out);
    return;
  }
  const a = host.agent;
  const rows: [string, Child][] = [
    ['Subnet', host.subnet],
    ...(host.ipv6Subnet !== undefined ? [['IPv6 subnet', host.ipv6Subnet] as [string, Child]] : []),
    ['Public IP', host.publicIP],
    ...(host.publicIPv6 !== undefined ? [['Public IPv6', host.publicIPv6] as [string, Child]] : []),
    ['Backend', host.backend],
    ['Lease', lease(host, d.model.at)],
    ['Agent', h('span', null, agentBadge(a.state), ' ', a.detail)],
  ];
  if (a.state === 'ready' || a.state === 'not-ready') {
    rows.push(['Programmed', plural(a.programmed, 'peer')]);
    rows.push(['Missing peers', a.missing.length === 0 ? h('span', { class: 'ok' }, 'none')
      : h('ul', { class: 'plain missing-peers' }, ...capped(a.missing, 30, (id) => {
        const peer = d.hostById.get(id);
        return h('li', null, peer ? h('button', { 'class': 'link-button', 'data-select-host': id }, peer.name) : id, peer ? h('span', { class: 'dim' }, ` ${id}`) : null);
      }))]);
    if (a.problems.length > 0) rows.push(['Problems', h('ul', { class: 'plain problems' }, ...a.problems.map((p) => h('li', null, p)))]);
  }
  const out: Child[] = [
    h('h2', null, host.name, h('button', { 'class': 'close', 'data-close': 'host', 'title': 'Close (Esc)' }, '×')),
    h('dl', { class: 'facts' }, ...rows.flatMap(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
  ];
  if (host.bgp) {
    out.push(h('h3', null, `BGP · AS ${host.bgp.asn}`));
    out.push(host.bgp.sessions.length === 0 ? h('p', { class: 'hint' }, 'no sessions')
      : h('table', { class: 'bgp' },
        h('thead', null, h('tr', null, ...['peer', 'ASN', 'state', 'uptime', 'rx', 'tx'].map((c) => h('th', null, c)))),
        h('tbody', null, ...host.bgp.sessions.map((x) => h('tr', { 'data-bgp-state': x.state },
          h('td', null, x.peer), h('td', null, String(x.asn)), h('td', { class: 'state' }, x.state),
          h('td', null, x.uptimeSeconds > 0 ? duration(x.uptimeSeconds) : '—'),
          h('td', { class: 'num' }, String(x.prefixesReceived)), h('td', { class: 'num' }, String(x.prefixesSent)))))));
  }
  const pods = d.podsByHost.get(host.id) ?? [];
  out.push(h('h3', null, `Pods (${pods.length})`));
  if (pods.length === 0) out.push(h('p', { class: 'hint' }, 'no pods on this host'));
  else out.push(h('ul', { class: 'pods' }, ...pods.map((p) => podItem(p, ctx))));
  replace(el, ...out);
}

function podItem(p: UiPod, ctx: HostPanelContext): HTMLElement {
  const iso = isolationText(p);
  const role = p.id === ctx.doctorSrc ? 'src' : p.id === ctx.doctorDst ? 'dst' : undefined;
  return h('li', {
    'class': 'pod-item', [ctx.podsDrawn ? 'data-pod-ref' : 'data-pod-id']: p.id, 'data-doctor': role,
    'data-hit': ctx.hits?.pods.has(p.id) ?? false, 'title': 'Click to trace with the doctor',
  },
  h('div', null, h('b', null, p.id), ' ', h('span', { class: 'dim' }, p.ips.join(', '))),
  Object.keys(p.labels).length > 0
    ? h('div', { class: 'labels' }, ...Object.entries(p.labels).map(([k, v]) => h('span', { class: 'label' }, `${k}=${v}`)))
    : null,
  p.policies.length > 0 || iso !== undefined
    ? h('div', { class: 'pod-policies' }, iso !== undefined ? h('span', { class: 'iso' }, iso) : null, p.policies.length > 0 ? ` policies: ${p.policies.join(', ')}` : '')
    : null);
}

// Policies panel -------------------------------------------------------------------------------

export function renderPolicies(el: HTMLElement, d: Derived, selected: string | undefined): void {
  const policies = [...d.model.policies].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const items = policies.map((p) => {
    const isSel = p.id === selected;
    const pods = p.selects.map((id) => d.podById.get(id)).filter((x): x is UiPod => x !== undefined);
    return h('li', { 'class': 'policy', 'data-policy-id': p.id, 'data-selected': isSel },
      h('div', { class: 'policy-head' },
        h('span', { class: 'name' }, p.id),
        ...p.types.map((t) => h('span', { 'class': 'type', 'data-type': t }, t)),
        h('span', { class: 'n' }, plural(p.selects.length, 'pod'))),
      isSel
        ? h('ul', { class: 'policy-pods' }, ...capped(pods, 200, (pod) => {
          const iso = isolationText(pod);
          return h('li', null,
            h('button', { 'class': 'link-button', 'data-select-host': pod.hostId ?? null, 'disabled': pod.hostId === undefined }, pod.id),
            iso !== undefined ? h('span', { class: 'iso', title: iso }, iso.replace('isolated: ', '⊘ ')) : null);
        }))
        : h('div', { class: 'preview dim' }, pods.length === 0 ? 'selects no pods' : pods.slice(0, 3).map((x) => x.pod).join(', ') + (pods.length > 3 ? ', …' : '')));
  });
  replace(el,
    h('h2', null, `Policies (${policies.length})`),
    policies.length === 0 ? h('p', { class: 'hint' }, 'no network policies') : h('p', { class: 'hint' }, 'Click a policy to highlight the pods it selects.'),
    h('ul', { class: 'policies' }, ...items));
}

/** The latest connections a NetworkPolicy dropped (weftd's flow records), newest first. */
export function renderDrops(el: HTMLElement, drops: readonly UiDrop[]): void {
  const end = (e: UiDrop['src']): string => (e.pod !== undefined ? `${e.namespace ?? ''}/${e.pod}` : e.ip);
  const items = drops.map((x) => h('li', { 'data-drop': `${end(x.src)}>${end(x.dst)}`, 'data-policy': x.policy ?? '' },
    h('div', null, h('b', null, end(x.src)), ' → ', h('b', null, end(x.dst)), ` ${x.proto}${x.dstPort !== 0 ? ` ${x.dstPort}` : ''}`),
    h('div', { class: 'pod-policies' }, `dropped by ${x.policy ?? 'policy'} · ${x.packets} packet${x.packets === 1 ? '' : 's'} · ${clock(Date.parse(x.at))} on ${x.node}`)));
  replace(el,
    h('h2', null, `Dropped by policy (${drops.length})`),
    drops.length === 0 ? h('p', { class: 'hint' }, 'no connection dropped lately (weftd --flow-records)') : h('ul', { class: 'policies' }, ...items));
}

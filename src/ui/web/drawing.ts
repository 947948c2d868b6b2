// The SVG drawing: hosts, links, pods, and the doctor's path. Rebuilt whole for every model or
// selection (a few thousand elements at most); search and policy highlights only toggle
// attributes. Pan by dragging, zoom with the wheel or the buttons.

import { linkState, type LinkState, type UiDoctorReport, type UiHost, type UiPod } from '../model.js';
import { linkKey, notOkLinks, type Derived, type DrawnLink, type SearchHits } from './derive.js';
import { flag, s } from './dom.js';
import {
  CARD_H, CARD_W, GROUP_HEAD, layout, PODS_SHOWN, POD_ROW, TILE,
  type Layout, type MeshLayout, type Point, type TileLayout,
} from './layout.js';

/** Not-ok links drawn at most in the tile view. */
export const LINK_CAP = 300;
const MAX_SCALE = 1.6;
const DENSE_MESH = 20;
const LINK_ORDER: Record<LinkState, number> = { 'ok': 0, 'unknown': 1, 'one-sided': 2, 'broken': 3 };

export interface DrawState {
  readonly selectedHost: string | undefined;
  readonly doctorSrc: string | undefined;
  readonly doctorDst: string | undefined;
  readonly report: UiDoctorReport | undefined;
}

export interface DrawHandlers {
  host(id: string): void;
  pod(id: string): void;
  background(): void;
}

/** What the last render drew, for the legend. */
export interface DrawSummary {
  readonly kind: Layout['kind'];
  readonly linksDrawn: number;
  /** Tile view: not-ok links that missing peers explain (notOkLinks), at most LINK_CAP drawn. */
  readonly notOkTotal: number;
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function isolation(p: UiPod): string | undefined {
  const { ingress, egress } = p.isolated;
  return ingress && egress ? 'both' : ingress ? 'ingress' : egress ? 'egress' : undefined;
}

/** A ready agent that still misses peers or reports problems. */
function troubled(h: UiHost): boolean {
  const a = h.agent;
  return (a.state === 'ready' || a.state === 'not-ready') && (a.missing.length > 0 || a.problems.length > 0);
}

type Layers = Record<'groups' | 'links' | 'path' | 'hosts' | 'pods' | 'marks', SVGGElement>;

export class Drawing {
  private readonly hostEls = new Map<string, Element>();
  private readonly podEls = new Map<string, Element>();
  private readonly podPos = new Map<string, Point>();
  private current: Layout | undefined;
  private layoutKey = '';
  private view: { x: number; y: number; w: number; h: number } | undefined;
  private dragged = false;
  private pan: { x: number; y: number; id: number; active: boolean } | undefined;

  /**
   * describe(el): the tooltip of a host, pod or link element; insets(): the room the overlays
   * (zoom buttons, legend) take at the drawing's edges, which fit() keeps clear.
   */
  constructor(
    private readonly svg: SVGSVGElement,
    private readonly tooltip: HTMLElement,
    private readonly handlers: DrawHandlers,
    private readonly describe: (el: Element) => string | undefined,
    private readonly insets: () => { left: number; bottom: number },
  ) {
    svg.addEventListener('click', (e) => this.onClick(e));
    svg.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    svg.addEventListener('pointerdown', (e) => this.onPointerDown(e));
    svg.addEventListener('pointermove', (e) => this.onPointerMove(e));
    svg.addEventListener('pointerup', (e) => this.onPointerUp(e));
    svg.addEventListener('pointercancel', (e) => this.onPointerUp(e));
    svg.addEventListener('mousemove', (e) => this.onHover(e));
    svg.addEventListener('mouseleave', () => { this.tooltip.hidden = true; });
    new ResizeObserver(() => this.fit()).observe(svg);
  }

  render(d: Derived, st: DrawState): DrawSummary {
    this.hostEls.clear();
    this.podEls.clear();
    this.podPos.clear();
    const lay = layout(d.model.hosts, (id) => d.podsByHost.get(id)?.length ?? 0, d.unplacedPods.length);
    this.current = lay;
    const key = `${lay.kind}:${d.model.hosts.length}:${Math.round(lay.bounds.w)}x${Math.round(lay.bounds.h)}`;
    const layers: Layers = {
      groups: s('g', { class: 'layer-groups' }),
      links: s('g', { class: 'layer-links' }),
      path: s('g', { class: 'layer-path' }),
      hosts: s('g', { class: 'layer-hosts' }),
      pods: s('g', { class: 'layer-pods' }),
      marks: s('g', { class: 'layer-marks' }),
    };
    const summary = lay.kind === 'mesh' ? this.drawMesh(d, lay, st, layers) : this.drawTiles(d, lay, st, layers);
    this.drawDoctor(d, lay, st, layers);
    flag(this.svg, 'focus', st.selectedHost !== undefined && d.hostById.has(st.selectedHost));
    this.svg.setAttribute('data-view', lay.kind);
    // A mesh of many hosts is mostly ok links: drawn faint there, so that the others stand out.
    flag(this.svg, 'dense', lay.kind === 'mesh' && d.model.hosts.length > DENSE_MESH);
    this.svg.replaceChildren(layers.groups, layers.links, layers.path, layers.hosts, layers.pods, layers.marks);
    if (key !== this.layoutKey || !this.view) {
      this.layoutKey = key;
      this.fit();
    }
    return summary;
  }

  // Mesh -----------------------------------------------------------------------------------------

  private drawMesh(d: Derived, lay: MeshLayout, st: DrawState, layers: Layers): DrawSummary {
    const hosts = d.model.hosts;
    const links: { a: UiHost; b: UiHost; state: LinkState }[] = [];
    for (let i = 0; i < hosts.length; i++) {
      for (let j = i + 1; j < hosts.length; j++) {
        const a = hosts[i]!, b = hosts[j]!;
        links.push({ a, b, state: linkState(a, b) });
      }
    }
    links.sort((x, y) => LINK_ORDER[x.state] - LINK_ORDER[y.state]);
    for (const l of links) layers.links.appendChild(this.line(l, lay.place.get(l.a.id)!, lay.place.get(l.b.id)!, st.selectedHost));
    for (const h of hosts) {
      const p = lay.place.get(h.id)!;
      layers.hosts.appendChild(this.card(h, p, h.id === st.selectedHost));
      this.podList(d.podsByHost.get(h.id) ?? [], p, lay.place.get(h.id)!.podsAbove, layers.pods, st);
    }
    if (d.unplacedPods.length > 0) {
      const u = lay.unplaced;
      layers.hosts.appendChild(s('g', { class: 'card unplaced', transform: `translate(${u.x},${u.y})` },
        s('rect', { x: -CARD_W / 2, y: -CARD_H / 2, width: CARD_W, height: CARD_H, rx: 8, class: 'body' }),
        s('text', { x: -CARD_W / 2 + 12, y: -4, class: 'name' }, 'pods on no host'),
        s('text', { x: -CARD_W / 2 + 12, y: 14, class: 'sub' }, 'no lease holds their IP'),
      ));
      this.podList(d.unplacedPods, u, false, layers.pods, st);
    }
    return { kind: 'mesh', linksDrawn: links.length, notOkTotal: links.filter((l) => l.state !== 'ok').length };
  }

  private line(l: { a: UiHost; b: UiHost; state: LinkState }, pa: Point, pb: Point, selected: string | undefined): SVGLineElement {
    const e = s('line', {
      'x1': r1(pa.x), 'y1': r1(pa.y), 'x2': r1(pb.x), 'y2': r1(pb.y),
      'class': 'link', 'data-link': linkKey(l.a.id, l.b.id), 'data-state': l.state,
    });
    if (selected !== undefined && (l.a.id === selected || l.b.id === selected)) flag(e, 'focus', true);
    return e;
  }

  private card(h: UiHost, p: Point, selected: boolean): SVGGElement {
    const x = -CARD_W / 2, y = -CARD_H / 2;
    const missing = h.agent.state === 'ready' || h.agent.state === 'not-ready' ? h.agent.missing.length : 0;
    const g = s('g', {
      'class': 'host card', 'transform': `translate(${r1(p.x)},${r1(p.y)})`,
      'data-host-id': h.id, 'data-agent-state': h.agent.state, 'data-selected': selected,
      'data-trouble': troubled(h),
    },
    s('rect', { x, y, width: CARD_W, height: CARD_H, rx: 8, class: 'body' }),
    s('rect', { x, y, width: 6, height: CARD_H, rx: 3, class: 'state-bar' }),
    s('text', { x: x + 14, y: y + 18, class: 'name' }, truncate(h.name, 19)),
    s('text', { x: x + 14, y: y + 34, class: 'sub' }, h.subnet),
    s('text', { x: x + 14, y: y + 49, class: 'sub' }, h.publicIP),
    s('text', { 'x': -x - 8, 'y': y + 18, 'class': 'badge', 'text-anchor': 'end' }, h.agent.state === 'ready' ? '' : h.agent.state),
    missing > 0 ? s('text', { 'x': -x - 8, 'y': y + 49, 'class': 'missing', 'text-anchor': 'end' }, `${missing} missing`) : null,
    );
    this.hostEls.set(h.id, g);
    return g;
  }

  private podList(pods: readonly UiPod[], p: Point, above: boolean, layer: SVGGElement, st: DrawState): void {
    if (pods.length === 0) return;
    const x = p.x - CARD_W / 2 + 14;
    const dir = above ? -1 : 1;
    const first = p.y + dir * (CARD_H / 2 + 8 + POD_ROW / 2);
    const shown = pods.slice(0, PODS_SHOWN);
    const last = first + dir * (shown.length - 1) * POD_ROW;
    layer.appendChild(s('line', { x1: r1(x), y1: r1(p.y + dir * CARD_H / 2), x2: r1(x), y2: r1(last), class: 'pod-stem' }));
    shown.forEach((pod, i) => {
      const y = first + dir * i * POD_ROW;
      const role = pod.id === st.doctorSrc ? 'src' : pod.id === st.doctorDst ? 'dst' : undefined;
      const g = s('g', { 'class': 'pod', 'transform': `translate(${r1(x)},${r1(y)})`, 'data-pod-id': pod.id, 'data-isolated': isolation(pod), 'data-doctor': role },
        s('circle', { r: 5.5 }),
        s('text', { x: 11, y: 4 }, truncate(pod.pod, 22)),
      );
      this.podEls.set(pod.id, g);
      this.podPos.set(pod.id, { x, y });
      layer.appendChild(g);
    });
    if (pods.length > PODS_SHOWN) {
      layer.appendChild(s('text', { x: r1(x + 11), y: r1(first + dir * PODS_SHOWN * POD_ROW + 4), class: 'more' }, `+${pods.length - PODS_SHOWN} more (see the host)`));
    }
  }

  // Tiles ----------------------------------------------------------------------------------------

  private drawTiles(d: Derived, lay: TileLayout, st: DrawState, layers: Layers): DrawSummary {
    for (const g of lay.groups) {
      const counts = { down: 0, unknown: 0, 'not-ready': 0 };
      for (const h of g.hosts) if (h.agent.state !== 'ready') counts[h.agent.state]++;
      const parts = [`${g.hosts.length} hosts`];
      if (counts['not-ready']) parts.push(`${counts['not-ready']} not ready`);
      if (counts.down) parts.push(`${counts.down} down`);
      if (counts.unknown) parts.push(`${counts.unknown} unknown`);
      layers.groups.appendChild(s('g', { class: 'group' },
        s('rect', { x: g.x, y: g.y, width: g.w, height: g.h, rx: 8 }),
        s('text', { x: g.x + 10, y: g.y + 18, class: 'group-label' }, g.label),
        s('text', { x: g.x + 10, y: g.y + 34, class: 'group-counts' }, parts.join(' · ')),
      ));
    }
    const drawn = new Map<string, DrawnLink>();
    const { links: notOk, total } = notOkLinks(d, LINK_CAP);
    for (const l of notOk) drawn.set(linkKey(l.a.id, l.b.id), l);
    const sel = st.selectedHost !== undefined ? d.hostById.get(st.selectedHost) : undefined;
    if (sel) {
      for (const other of d.model.hosts) {
        if (other.id !== sel.id) drawn.set(linkKey(sel.id, other.id), { a: sel, b: other, state: linkState(sel, other) });
      }
    }
    const links = [...drawn.values()].sort((x, y) => LINK_ORDER[x.state] - LINK_ORDER[y.state]);
    for (const l of links) layers.links.appendChild(this.line(l, lay.place.get(l.a.id)!, lay.place.get(l.b.id)!, st.selectedHost));
    const half = TILE / 2;
    const doctorHosts = new Set([st.doctorSrc, st.doctorDst].map((id) => id !== undefined ? d.podById.get(id)?.hostId : undefined));
    for (const h of d.model.hosts) {
      const p = lay.place.get(h.id)!;
      const e = s('rect', {
        'x': p.x - half, 'y': p.y - half, 'width': TILE, 'height': TILE, 'rx': 3,
        'class': 'host tile', 'data-host-id': h.id, 'data-agent-state': h.agent.state,
        'data-selected': h.id === st.selectedHost, 'data-trouble': troubled(h), 'data-doctor': doctorHosts.has(h.id),
      });
      this.hostEls.set(h.id, e);
      layers.hosts.appendChild(e);
    }
    if (sel) {
      const p = lay.place.get(sel.id)!;
      layers.marks.appendChild(this.tag(`${sel.name} · ${sel.subnet}`, { x: p.x, y: p.y + half + 24 }));
    }
    return { kind: 'tiles', linksDrawn: links.length, notOkTotal: total };
  }

  /** A label with a backdrop, centred above `p`. */
  private tag(text: string, p: Point, cls = 'tag'): SVGGElement {
    const t = truncate(text, 48);
    const w = t.length * 7 + 12;
    return s('g', { class: cls, transform: `translate(${r1(p.x)},${r1(p.y)})` },
      s('rect', { x: -w / 2, y: -18, width: w, height: 20, rx: 4 }),
      s('text', { 'x': 0, 'y': -4, 'text-anchor': 'middle' }, t),
    );
  }

  // Doctor path ----------------------------------------------------------------------------------

  private drawDoctor(d: Derived, lay: Layout, st: DrawState, layers: Layers): void {
    const report = st.report;
    if (!report) return;
    const hostPoint = (id: string | undefined): Point | undefined => id !== undefined ? lay.place.get(id) : undefined;
    const srcHost = hostPoint(report.src.hostId);
    const dstHost = hostPoint(report.dst.hostId);
    const srcPod = st.doctorSrc !== undefined ? this.podPos.get(st.doctorSrc) : undefined;
    const dstPod = st.doctorDst !== undefined ? this.podPos.get(st.doctorDst) : undefined;
    const pts = [srcPod, srcHost, dstHost, dstPod].filter((p): p is Point => p !== undefined);
    if (pts.length >= 2) {
      layers.path.appendChild(s('polyline', {
        'points': pts.map((p) => `${r1(p.x)},${r1(p.y)}`).join(' '),
        'class': 'doctor-path', 'data-ok': report.ok,
      }));
    }
    const f = report.firstFailure;
    if (!f) return;
    // On the path, just outside the host (card or tile) the failing hop belongs to, so the mark
    // hides neither the host's name nor the pods.
    const off = lay.kind === 'mesh' ? CARD_H / 2 + 16 : TILE;
    const near = (from: Point | undefined, toward: Point | undefined): Point | undefined => {
      if (!from) return undefined;
      if (!toward) return from;
      const dx = toward.x - from.x, dy = toward.y - from.y, len = Math.hypot(dx, dy);
      return len < 2 * off ? { x: (from.x + toward.x) / 2, y: (from.y + toward.y) / 2 } : { x: from.x + (dx / len) * off, y: from.y + (dy / len) * off };
    };
    const mid = srcHost && dstHost ? { x: (srcHost.x + dstHost.x) / 2, y: (srcHost.y + dstHost.y) / 2 } : srcHost ?? dstHost;
    const at = f.id.startsWith('src-pod') ? srcPod ?? srcHost
      : f.id.startsWith('dst-pod') ? dstPod ?? dstHost
      : f.id.startsWith('src-') ? near(srcHost, dstHost ?? srcPod)
      : f.id.startsWith('dst-') || f.id === 'policy' ? near(dstHost, srcHost ?? dstPod)
      : mid;
    if (!at) return;
    layers.marks.appendChild(s('g', { 'class': 'doctor-break', 'transform': `translate(${r1(at.x)},${r1(at.y)})`, 'data-hop-ref': f.id },
      s('circle', { r: 13 }),
      s('path', { d: 'M-5,-5L5,5M5,-5L-5,5' }),
    ));
    layers.marks.appendChild(this.tag(f.title, { x: at.x, y: at.y - 16 }, 'tag tag-fail'));
  }

  // Highlights -----------------------------------------------------------------------------------

  /** Search hits and the selected policy's pods, by attribute only. */
  highlight(d: Derived, hits: SearchHits | undefined, policyPods: ReadonlySet<string> | undefined): void {
    flag(this.svg, 'searching', hits !== undefined);
    flag(this.svg, 'policy', policyPods !== undefined);
    const policyHosts = new Set<string>();
    if (policyPods) for (const id of policyPods) { const h = d.podById.get(id)?.hostId; if (h !== undefined) policyHosts.add(h); }
    for (const [id, e] of this.hostEls) {
      flag(e, 'hit', hits?.hosts.has(id) ?? false);
      flag(e, 'in-policy', policyHosts.has(id));
    }
    for (const [id, e] of this.podEls) {
      flag(e, 'hit', hits?.pods.has(id) ?? false);
      flag(e, 'in-policy', policyPods?.has(id) ?? false);
    }
  }

  // View -----------------------------------------------------------------------------------------

  /** Shows the whole layout, at most MAX_SCALE times its size. */
  fit(): void {
    const b = this.current?.bounds;
    const cw = this.svg.clientWidth, ch = this.svg.clientHeight;
    if (!b || cw === 0 || ch === 0) return;
    const inset = this.insets();
    // The free area, in screen pixels, that the bounds must fit in.
    const left = Math.min(inset.left, cw / 4), bottom = Math.min(inset.bottom, ch / 3);
    const fw = cw - left, fh = ch - bottom;
    const scale = Math.min(fw / b.w, fh / b.h, MAX_SCALE);
    const w = cw / scale, h = ch / scale;
    // Centre the bounds in the free area: its centre sits (left/2, -bottom/2) px off the svg's.
    const cx = b.x + b.w / 2 - left / 2 / scale, cy = b.y + b.h / 2 + bottom / 2 / scale;
    this.setView({ x: cx - w / 2, y: cy - h / 2, w, h });
  }

  zoom(factor: number, at?: Point): void {
    const v = this.view;
    if (!v) return;
    const c = at ?? { x: v.x + v.w / 2, y: v.y + v.h / 2 };
    const w = Math.min(Math.max(v.w * factor, 60), 40000);
    const f = w / v.w;
    this.setView({ x: c.x - (c.x - v.x) * f, y: c.y - (c.y - v.y) * f, w, h: v.h * f });
  }

  private setView(v: { x: number; y: number; w: number; h: number }): void {
    this.view = v;
    this.svg.setAttribute('viewBox', `${r1(v.x)} ${r1(v.y)} ${r1(v.w)} ${r1(v.h)}`);
  }

  private toSvg(clientX: number, clientY: number): Point | undefined {
    const m = this.svg.getScreenCTM();
    if (!m) return undefined;
    const p = new DOMPoint(clientX, clientY).matrixTransform(m.inverse());
    return { x: p.x, y: p.y };
  }

  private onWheel(e: WheelEvent): void {
    e.preventDefault();
    this.zoom(Math.exp(e.deltaY * 0.0015), this.toSvg(e.clientX, e.clientY));
  }

  private onPointerDown(e: PointerEvent): void {
    if (e.button !== 0) return;
    this.dragged = false;
    this.pan = { x: e.clientX, y: e.clientY, id: e.pointerId, active: false };
  }

  private onPointerMove(e: PointerEvent): void {
    const p = this.pan;
    if (!p || p.id !== e.pointerId || !this.view) return;
    const dx = e.clientX - p.x, dy = e.clientY - p.y;
    if (!p.active && Math.hypot(dx, dy) < 5) return;
    if (!p.active) { p.active = true; this.dragged = true; this.svg.setPointerCapture(e.pointerId); }
    const k = this.view.w / Math.max(this.svg.clientWidth, 1);
    this.setView({ ...this.view, x: this.view.x - dx * k, y: this.view.y - dy * k });
    p.x = e.clientX;
    p.y = e.clientY;
  }

  private onPointerUp(e: PointerEvent): void {
    if (this.pan?.active && this.svg.hasPointerCapture(e.pointerId)) this.svg.releasePointerCapture(e.pointerId);
    this.pan = undefined;
  }

  private onClick(e: MouseEvent): void {
    if (this.dragged) { this.dragged = false; return; }
    const t = e.target instanceof Element ? e.target : null;
    const pod = t?.closest('[data-pod-id]');
    if (pod) return this.handlers.pod(pod.getAttribute('data-pod-id')!);
    const host = t?.closest('[data-host-id]');
    if (host) return this.handlers.host(host.getAttribute('data-host-id')!);
    this.handlers.background();
  }

  private onHover(e: MouseEvent): void {
    if (this.pan?.active) return;
    const t = e.target instanceof Element ? e.target.closest('[data-pod-id],[data-host-id],[data-link]') : null;
    const text = t ? this.describe(t) : undefined;
    if (text === undefined) { this.tooltip.hidden = true; return; }
    if (this.tooltip.textContent !== text) this.tooltip.textContent = text;
    this.tooltip.hidden = false;
    const box = this.svg.getBoundingClientRect();
    this.tooltip.style.left = `${Math.min(e.clientX - box.left + 14, box.width - this.tooltip.offsetWidth - 4)}px`;
    this.tooltip.style.top = `${e.clientY - box.top + 14}px`;
  }
}

function r1(n: number): number {
  return Math.round(n * 10) / 10;
}


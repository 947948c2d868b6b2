// Where things go on the drawing, in SVG user units. Pure and linear in the hosts.
//   mesh  (≤ MESH_MAX hosts): a card per host on a circle, every pair's link drawn, pods listed
//         on the card's outer side;
//   tiles (more): a small tile per host, grouped by the /16 (IPv6: /48) of its subnet in blocks
//         of at most GROUP_MAX, no mesh.

import type { UiHost } from '../model.js';

export const MESH_MAX = 64;

export const CARD_W = 168;
export const CARD_H = 58;
export const POD_ROW = 17;
/** Pods listed under a card; the rest as "+N more". */
export const PODS_SHOWN = 8;

export const TILE = 18;
const TILE_GAP = 4;
const PITCH = TILE + TILE_GAP;
const GROUP_COLS = 16;
const GROUP_MAX = 256;
const GROUP_PAD = 10;
export const GROUP_HEAD = 44;
const GROUP_SPACE = 28;

export interface Rect { readonly x: number; readonly y: number; readonly w: number; readonly h: number }
export interface Point { readonly x: number; readonly y: number }

export interface MeshPlace extends Point {
  /** The pod list goes above the card (hosts on the upper part of the circle), else below. */
  readonly podsAbove: boolean;
}

export interface MeshLayout {
  readonly kind: 'mesh';
  /** Card centres by host id. */
  readonly place: ReadonlyMap<string, MeshPlace>;
  /** Where the card for pods without a host goes (its centre). */
  readonly unplaced: Point;
  readonly bounds: Rect;
}

export interface TileGroup extends Rect {
  readonly label: string;
  readonly hosts: readonly UiHost[];
}

export interface TileLayout {
  readonly kind: 'tiles';
  /** Tile centres by host id. */
  readonly place: ReadonlyMap<string, Point>;
  readonly groups: readonly TileGroup[];
  readonly bounds: Rect;
}

export type Layout = MeshLayout | TileLayout;

/** podCount(hostId): how many pods the host's card lists (drives the space it needs). */
export function layout(hosts: readonly UiHost[], podCount: (id: string) => number, unplacedPods: number): Layout {
  return hosts.length <= MESH_MAX ? meshLayout(hosts, podCount, unplacedPods) : tileLayout(hosts);
}

function podRows(n: number): number {
  return n === 0 ? 0 : Math.min(n, PODS_SHOWN) + (n > PODS_SHOWN ? 1 : 0);
}

function meshLayout(hosts: readonly UiHost[], podCount: (id: string) => number, unplacedPods: number): MeshLayout {
  const n = hosts.length;
  // Neighbouring cards' centres at least a card width and a bit apart along the chord.
  const r = n <= 1 ? 0 : n === 2 ? CARD_W : Math.max(190, (CARD_W + 24) / 2 / Math.sin(Math.PI / n));
  const place = new Map<string, MeshPlace>();
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  hosts.forEach((h, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    const x = n === 2 ? (i === 0 ? -r : r) : r * Math.cos(angle);
    const y = n === 2 ? 0 : r * Math.sin(angle);
    const podsAbove = n > 2 && Math.sin(angle) < -0.25;
    place.set(h.id, { x, y, podsAbove });
    const podsH = podRows(podCount(h.id)) * POD_ROW + (podCount(h.id) > 0 ? 8 : 0);
    x0 = Math.min(x0, x - CARD_W / 2);
    x1 = Math.max(x1, x + CARD_W / 2);
    y0 = Math.min(y0, y - CARD_H / 2 - (podsAbove ? podsH : 0));
    y1 = Math.max(y1, y + CARD_H / 2 + (podsAbove ? 0 : podsH));
  });
  if (n === 0) { x0 = -CARD_W / 2; x1 = CARD_W / 2; y0 = -CARD_H / 2; y1 = CARD_H / 2; }
  let unplaced: Point = { x: x0 - CARD_W / 2 - 40, y: y0 + CARD_H / 2 };
  if (unplacedPods > 0) {
    x0 = unplaced.x - CARD_W / 2;
    y1 = Math.max(y1, unplaced.y + CARD_H / 2 + podRows(unplacedPods) * POD_ROW + 8);
  } else {
    unplaced = { x: x0, y: y0 };
  }
  const m = 20;
  return { kind: 'mesh', place, unplaced, bounds: { x: x0 - m, y: y0 - m, w: x1 - x0 + 2 * m, h: y1 - y0 + 2 * m } };
}

/** The /16 of an IPv4 subnet, the /48 of an IPv6 one, as a label. */
export function groupKey(subnet: string): string {
  const addr = subnet.split('/')[0] ?? subnet;
  if (addr.includes(':')) {
    const parts = addr.split(':');
    const head = parts.slice(0, 3).map((p) => p === '' ? '0' : p);
    while (head.length < 3) head.push('0');
    return `${head.join(':')}::/48`;
  }
  const o = addr.split('.');
  return `${o[0] ?? '0'}.${o[1] ?? '0'}.0.0/16`;
}

function tileLayout(hosts: readonly UiHost[]): TileLayout {
  const byKey = new Map<string, UiHost[]>();
  for (const h of hosts) {
    const k = groupKey(h.subnet);
    let list = byKey.get(k);
    if (!list) byKey.set(k, list = []);
    list.push(h);
  }
  const chunks: { label: string; hosts: UiHost[] }[] = [];
  for (const [key, list] of byKey) {
    const parts = Math.ceil(list.length / GROUP_MAX);
    for (let i = 0; i < parts; i++) {
      chunks.push({ label: parts === 1 ? key : `${key} (${i + 1}/${parts})`, hosts: list.slice(i * GROUP_MAX, (i + 1) * GROUP_MAX) });
    }
  }
  const groupW = 2 * GROUP_PAD + GROUP_COLS * PITCH - TILE_GAP;
  const columns = chunks.length <= 3 ? Math.max(chunks.length, 1) : Math.ceil(Math.sqrt(chunks.length));
  const groups: TileGroup[] = [];
  const place = new Map<string, Point>();
  let y = 0, rowH = 0, width = 0;
  chunks.forEach((c, i) => {
    const col = i % columns;
    if (col === 0 && i > 0) { y += rowH + GROUP_SPACE; rowH = 0; }
    const x = col * (groupW + GROUP_SPACE);
    const rows = Math.ceil(c.hosts.length / GROUP_COLS);
    const h = GROUP_HEAD + rows * PITCH - TILE_GAP + GROUP_PAD;
    groups.push({ label: c.label, hosts: c.hosts, x, y, w: groupW, h });
    c.hosts.forEach((host, j) => {
      place.set(host.id, {
        x: x + GROUP_PAD + (j % GROUP_COLS) * PITCH + TILE / 2,
        y: y + GROUP_HEAD + Math.floor(j / GROUP_COLS) * PITCH + TILE / 2,
      });
    });
    rowH = Math.max(rowH, h);
    width = Math.max(width, x + groupW);
  });
  const m = 16;
  return { kind: 'tiles', place, groups, bounds: { x: -m, y: -m, w: width + 2 * m, h: y + rowH + 2 * m } };
}

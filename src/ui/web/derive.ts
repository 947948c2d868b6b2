// What the page computes once per model: lookups, counts and the search index. Pure (no DOM), and
// linear in hosts + pods + missing peers: at 1000 hosts nothing here walks all host pairs.

import { linkState, type LinkState, type UiHost, type UiModel, type UiPod, type UiPolicy } from '../model.js';

export type AgentState = UiHost['agent']['state'];

export interface LinkCounts {
  readonly ok: number;
  readonly 'one-sided': number;
  readonly broken: number;
  readonly unknown: number;
}

export interface Derived {
  readonly model: UiModel;
  readonly hostById: ReadonlyMap<string, UiHost>;
  readonly podById: ReadonlyMap<string, UiPod>;
  readonly policyById: ReadonlyMap<string, UiPolicy>;
  /** Pods by host id, each list sorted by pod id. */
  readonly podsByHost: ReadonlyMap<string, readonly UiPod[]>;
  /** Pods no host's subnet holds. */
  readonly unplacedPods: readonly UiPod[];
  readonly agents: Readonly<Record<AgentState, number>>;
  readonly links: LinkCounts;
  /** Pod ids sorted, joined: tells whether the doctor's pod lists must be rebuilt. */
  readonly podSignature: string;
  readonly index: SearchIndex;
}

/** Whether the agent answered (ready or not-ready): only then does the view know its dataplane. */
export function answered(h: UiHost): boolean {
  return h.agent.state === 'ready' || h.agent.state === 'not-ready';
}

export function derive(model: UiModel): Derived {
  const hostById = new Map<string, UiHost>();
  for (const host of model.hosts) hostById.set(host.id, host);
  const podById = new Map<string, UiPod>();
  const podsByHost = new Map<string, UiPod[]>();
  const unplacedPods: UiPod[] = [];
  for (const pod of [...model.pods].sort((a, b) => cmp(a.id, b.id))) {
    podById.set(pod.id, pod);
    if (pod.hostId !== undefined && hostById.has(pod.hostId)) {
      let list = podsByHost.get(pod.hostId);
      if (!list) podsByHost.set(pod.hostId, list = []);
      list.push(pod);
    } else {
      unplacedPods.push(pod);
    }
  }
  const policyById = new Map<string, UiPolicy>();
  for (const p of model.policies) policyById.set(p.id, p);
  const agents: Record<AgentState, number> = { 'ready': 0, 'not-ready': 0, 'down': 0, 'unknown': 0 };
  for (const host of model.hosts) agents[host.agent.state]++;
  return {
    model, hostById, podById, policyById, podsByHost, unplacedPods, agents,
    links: countLinks(model.hosts, hostById),
    podSignature: [...podById.keys()].join('\n'),
    index: buildIndex(model.hosts, podsByHost),
  };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The link's key as the page's `data-link` shows it: both ids, sorted, joined by `|`. */
export function linkKey(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

/**
 * Each answered host's missing peers that are in the model, deduplicated, without itself: the only
 * links between known hosts that can be other than ok, besides those touching a down agent.
 */
function missingEdges(hosts: readonly UiHost[], hostById: ReadonlyMap<string, UiHost>): Map<string, { from: Set<string>; a: UiHost; b: UiHost }> {
  const edges = new Map<string, { from: Set<string>; a: UiHost; b: UiHost }>();
  for (const h of hosts) {
    if (h.agent.state !== 'ready' && h.agent.state !== 'not-ready') continue;
    for (const id of h.agent.missing) {
      const peer = hostById.get(id);
      if (!peer || peer.id === h.id) continue;
      const key = linkKey(h.id, peer.id);
      let e = edges.get(key);
      if (!e) edges.set(key, e = { from: new Set(), a: h, b: peer });
      e.from.add(h.id);
    }
  }
  return edges;
}

/**
 * How many host pairs are in each linkState, without visiting every pair. With a answered, d down
 * and u unknown agents, linkState gives: answered–answered ok unless one misses the other
 * (one-sided, or broken when both do); answered–down one-sided, or broken when the answered one
 * misses it; down–down and down–unknown broken; answered–unknown unknown, or broken when the
 * answered one misses it; unknown–unknown unknown.
 */
export function countLinks(hosts: readonly UiHost[], hostById: ReadonlyMap<string, UiHost>): LinkCounts {
  let a = 0, d = 0, u = 0;
  for (const h of hosts) {
    if (answered(h)) a++;
    else if (h.agent.state === 'down') d++;
    else u++;
  }
  let aaOne = 0, aaBoth = 0, ad = 0, au = 0;
  for (const e of missingEdges(hosts, hostById).values()) {
    const other = e.from.has(e.a.id) ? e.b : e.a;
    if (answered(other)) {
      if (e.from.size === 2) aaBoth++;
      else aaOne++;
    } else if (other.agent.state === 'down') {
      ad++;
    } else {
      au++;
    }
  }
  const pairs = (n: number): number => (n * (n - 1)) / 2;
  return {
    'ok': pairs(a) - aaOne - aaBoth,
    'one-sided': aaOne + (a * d - ad),
    'broken': aaBoth + ad + pairs(d) + au + d * u,
    'unknown': pairs(u) + (a * u - au),
  };
}

export interface DrawnLink {
  readonly a: UiHost;
  readonly b: UiHost;
  readonly state: LinkState;
}

/**
 * The links worth drawing when the hosts are too many for a mesh: every not-ok link an answering
 * agent explains by missing a peer whose agent is known (answered or down), broken ones first, at
 * most `cap`; `total` is how many there are. Links that are not ok only because an agent is down
 * (one-sided to every answering peer, broken to every other down one) are left to the down
 * agent's tile: as lines they would only say again that it is down.
 */
export function notOkLinks(d: Derived, cap: number): { links: DrawnLink[]; total: number } {
  const broken: DrawnLink[] = [];
  const oneSided: DrawnLink[] = [];
  for (const e of missingEdges(d.model.hosts, d.hostById).values()) {
    if (e.a.agent.state === 'unknown' || e.b.agent.state === 'unknown') continue;
    const state = linkState(e.a, e.b);
    if (state === 'broken') broken.push({ a: e.a, b: e.b, state });
    else if (state === 'one-sided') oneSided.push({ a: e.a, b: e.b, state });
  }
  return { links: broken.concat(oneSided).slice(0, cap), total: broken.length + oneSided.length };
}

// Search ---------------------------------------------------------------------------------------

export interface SearchIndex {
  /** Per host: its own text (name, subnet, public IP, backend, agent state), lower case. */
  readonly hostText: ReadonlyMap<string, string>;
  /** Per pod: its text (id, IPs, node) and its labels as `k=v` and `k=`, lower case. */
  readonly podText: ReadonlyMap<string, string>;
  readonly podLabels: ReadonlyMap<string, ReadonlySet<string>>;
}

function buildIndex(hosts: readonly UiHost[], podsByHost: ReadonlyMap<string, readonly UiPod[]>): SearchIndex {
  const hostText = new Map<string, string>();
  const podText = new Map<string, string>();
  const podLabels = new Map<string, Set<string>>();
  for (const h of hosts) {
    hostText.set(h.id, [h.name, h.subnet, h.ipv6Subnet ?? '', h.publicIP, h.publicIPv6 ?? '', h.backend, h.agent.state].join('\n').toLowerCase());
    for (const p of podsByHost.get(h.id) ?? []) {
      podText.set(p.id, [p.id, p.node, ...p.ips].join('\n').toLowerCase());
      const labels = new Set<string>();
      for (const [k, v] of Object.entries(p.labels)) {
        labels.add(`${k}=${v}`.toLowerCase());
        labels.add(`${k}=`.toLowerCase());
      }
      podLabels.set(p.id, labels);
    }
  }
  return { hostText, podText, podLabels };
}

export interface SearchHits {
  readonly hosts: ReadonlySet<string>;
  readonly pods: ReadonlySet<string>;
}

/**
 * Hosts and pods a query matches. The query is words, all of which must match: `k=v` (or `k=`)
 * matches a pod label, any other word a substring of a name, subnet, IP, backend or agent state.
 * A host matches when each word matches it or one of its pods; a pod when each word matches it
 * or its host. Undefined for an empty query.
 */
export function search(d: Derived, query: string): SearchHits | undefined {
  const words = query.toLowerCase().split(/\s+/).filter((w) => w !== '');
  if (words.length === 0) return undefined;
  const hosts = new Set<string>();
  const pods = new Set<string>();
  const { hostText, podText, podLabels } = d.index;
  const podMatches = (id: string, w: string): boolean =>
    w.includes('=') ? (podLabels.get(id)?.has(w) ?? false) : (podText.get(id)?.includes(w) ?? false);
  for (const h of d.model.hosts) {
    const text = hostText.get(h.id) ?? '';
    const hostWords = words.map((w) => !w.includes('=') && text.includes(w));
    const hostPods = d.podsByHost.get(h.id) ?? [];
    let all = true;
    for (let i = 0; i < words.length && all; i++) {
      if (hostWords[i]) continue;
      all = hostPods.some((p) => podMatches(p.id, words[i]!));
    }
    if (!all) continue;
    hosts.add(h.id);
    for (const p of hostPods) {
      if (words.every((w, i) => hostWords[i] || podMatches(p.id, w))) pods.add(p.id);
    }
  }
  return { hosts, pods };
}

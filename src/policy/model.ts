// The policy model: Kubernetes networking.k8s.io/v1 NetworkPolicy, endpoints (workloads with
// labels and addresses) and namespaces, parsed once at the edge into typed values. Every
// rejection names the field it is about (spec.ingress[0].ports[1].port: …), because `weftctl
// policy apply` prints it to an operator who has to find the line in their YAML.
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';
import { type Cidr, type IP, cidrContainsCidr, formatCidr, formatIP, networkOf, tryParseCidr, tryParseIP } from '../net/ip.js';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

export interface SelectorRequirement {
  readonly key: string;
  readonly operator: SelectorOperator;
  readonly values: readonly string[];
}

/** A label selector; the empty one (no labels, no expressions) selects everything. */
export interface LabelSelector {
  readonly matchLabels: Readonly<Record<string, string>>;
  readonly matchExpressions: readonly SelectorRequirement[];
}

export type Peer =
  /**
   * Pods. Without namespaceSelector: pods of the policy's own namespace; without podSelector:
   * every pod of the selected namespaces; with both: the selected pods of the selected namespaces.
   */
  | { readonly type: 'pods'; readonly podSelector?: LabelSelector; readonly namespaceSelector?: LabelSelector }
  /** Addresses in cidr but in none of except (except is normalised: disjoint networks). */
  | { readonly type: 'ipBlock'; readonly cidr: Cidr; readonly except: readonly Cidr[] };

export type PortMatch =
  | { readonly type: 'any' }
  | { readonly type: 'number'; readonly port: number; readonly endPort: number }
  /** Resolved against the destination pod's named container ports. */
  | { readonly type: 'named'; readonly name: string };

export interface PolicyPort {
  readonly protocol: Protocol;
  readonly port: PortMatch;
}

/** One ingress or egress rule: traffic from/to any of `peers` on any of `ports`. */
export interface PolicyRule {
  /** 'all' when from/to is absent or empty (every peer, including outside the cluster). */
  readonly peers: 'all' | readonly Peer[];
  /** Empty means every port and protocol. */
  readonly ports: readonly PolicyPort[];
}

export interface NetworkPolicy {
  readonly name: string;
  readonly namespace: string;
  readonly podSelector: LabelSelector;
  /** Which directions the policy isolates its pods in (Kubernetes' effective policyTypes). */
  readonly types: { readonly ingress: boolean; readonly egress: boolean };
  readonly ingress: readonly PolicyRule[];
  readonly egress: readonly PolicyRule[];
}

export interface NamedPort {
  readonly port: number;
  readonly protocol: Protocol;
}

/** A workload attachment as the store records it (one per pod interface). */
export interface Endpoint {
  readonly namespace: string;
  readonly pod: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ips: readonly IP[];
  /** The node the endpoint lives on; only that node enforces its policies. */
  readonly host: string;
  readonly ifname: string;
  readonly namedPorts?: Readonly<Record<string, NamedPort>>;
}

export interface Namespace {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** Everything policy decisions depend on. */
export interface PolicyWorld {
  readonly endpoints: readonly Endpoint[];
  readonly namespaces: readonly Namespace[];
  readonly policies: readonly NetworkPolicy[];
}

// ---- field syntax (the Kubernetes validation rules, enough to reject what the API server would)

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(?=.{0,63}$)(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
/** IANA service name: what a named container port may be called. */
const PORT_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/;

function labelKeyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && !DNS_SUBDOMAIN.test(prefix)) return `label key prefix ${JSON.stringify(prefix)} is not a DNS subdomain`;
  if (!LABEL_NAME.test(name)) return `${JSON.stringify(key)} is not a valid label key (up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)`;
  return undefined;
}

const labelKey = z.string().superRefine((k, ctx) => {
  const p = labelKeyProblem(k);
  if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, message: p });
});
const labelValue = z.string().refine((v) => LABEL_VALUE.test(v), (v) => ({
  message: `${JSON.stringify(v)} is not a valid label value (up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)`,
}));
const labelMap = z.record(z.string(), z.unknown()).superRefine((m, ctx) => {
  for (const [k, v] of Object.entries(m)) {
    const p = labelKeyProblem(k);
    if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [k], message: p });
    else if (typeof v !== 'string') ctx.addIssue({ code: z.ZodIssueCode.custom, path: [k], message: `expected a string label value, got ${JSON.stringify(v)}` });
    else if (!LABEL_VALUE.test(v)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [k], message: `${JSON.stringify(v)} is not a valid label value (up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)` });
  }
}).transform((m) => m as Record<string, string>);

const requirementSchema = z.object({
  key: labelKey,
  operator: z.string(),
  values: z.array(labelValue).optional(),
}).strict().superRefine((r, ctx) => {
  const ops = ['In', 'NotIn', 'Exists', 'DoesNotExist'];
  if (!ops.includes(r.operator)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['operator'], message: `${JSON.stringify(r.operator)} is not one of In, NotIn, Exists, DoesNotExist` });
    return;
  }
  const n = r.values?.length ?? 0;
  if ((r.operator === 'In' || r.operator === 'NotIn') && n === 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['values'], message: `must be non-empty for operator ${r.operator}` });
  }
  if ((r.operator === 'Exists' || r.operator === 'DoesNotExist') && n > 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['values'], message: `must be empty for operator ${r.operator}` });
  }
}).transform((r): SelectorRequirement => ({ key: r.key, operator: r.operator as SelectorOperator, values: r.values ?? [] }));

const selectorSchema = z.object({
  matchLabels: labelMap.optional(),
  matchExpressions: z.array(requirementSchema).optional(),
}).strict().transform((s): LabelSelector => ({ matchLabels: s.matchLabels ?? {}, matchExpressions: s.matchExpressions ?? [] }));

const cidrText = z.string().transform((s, ctx) => {
  const c = tryParseCidr(s);
  if (!c) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(s)} is not a CIDR (e.g. 10.0.0.0/8)` });
    return z.NEVER;
  }
  return networkOf(c);
});

const ipBlockSchema = z.object({
  cidr: cidrText,
  except: z.array(cidrText).optional(),
}).strict().superRefine((b, ctx) => {
  (b.except ?? []).forEach((e, i) => {
    if (e.ip.family !== b.cidr.ip.family || !cidrContainsCidr(b.cidr, e) || e.prefix <= b.cidr.prefix) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['except', i], message: `${formatCidr(e)} is not strictly inside cidr ${formatCidr(b.cidr)}` });
    }
  });
});

/** Drops excepts that are inside other excepts, so the rest are disjoint networks. */
function disjointExcepts(except: readonly Cidr[]): Cidr[] {
  const sorted = [...except].sort((a, b) => a.prefix - b.prefix);
  const kept: Cidr[] = [];
  for (const e of sorted) if (!kept.some((k) => cidrContainsCidr(k, e))) kept.push(e);
  return kept;
}

const peerSchema = z.object({
  podSelector: selectorSchema.optional(),
  namespaceSelector: selectorSchema.optional(),
  ipBlock: ipBlockSchema.optional(),
}).strict().superRefine((p, ctx) => {
  if (p.ipBlock && (p.podSelector || p.namespaceSelector)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'ipBlock cannot be combined with podSelector or namespaceSelector' });
  } else if (!p.ipBlock && !p.podSelector && !p.namespaceSelector) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'a peer needs podSelector, namespaceSelector or ipBlock' });
  }
}).transform((p): Peer => {
  if (p.ipBlock) return { type: 'ipBlock', cidr: p.ipBlock.cidr, except: disjointExcepts(p.ipBlock.except ?? []) };
  return {
    type: 'pods',
    ...(p.podSelector ? { podSelector: p.podSelector } : {}),
    ...(p.namespaceSelector ? { namespaceSelector: p.namespaceSelector } : {}),
  };
});

const portNumber = (what: string) => z.unknown().superRefine((v, ctx) => {
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `expected an integer ${what}, got ${JSON.stringify(v)}` });
  } else if (v < 1 || v > 65535) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${v} is out of range 1-65535` });
  }
}).transform((v) => v as number);

const protocolSchema = z.unknown().superRefine((v, ctx) => {
  if (v !== 'TCP' && v !== 'UDP' && v !== 'SCTP') {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(v)} is not one of TCP, UDP, SCTP` });
  }
}).transform((v) => v as Protocol);

const portSchema = z.object({
  protocol: protocolSchema.optional(),
  port: z.union([z.string(), z.number()]).optional().superRefine((v, ctx) => {
    if (typeof v === 'string' && !/^\d+$/.test(v) && !PORT_NAME.test(v)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(v)} is neither a port number nor a valid port name (IANA service name: up to 15 of [a-z0-9-], with a letter)` });
    }
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined;
    if (n !== undefined && (!Number.isInteger(n) || n < 1 || n > 65535)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${n} is out of range 1-65535` });
    }
  }),
  endPort: portNumber('endPort').optional(),
}).strict().superRefine((p, ctx) => {
  if (p.endPort === undefined) return;
  if (typeof p.port !== 'number') {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['endPort'], message: 'needs a numeric port' });
  } else if (p.endPort < p.port) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['endPort'], message: `${p.endPort} is below port ${p.port}` });
  }
}).transform((p): PolicyPort => {
  const protocol = p.protocol ?? 'TCP';
  if (p.port === undefined) return { protocol, port: { type: 'any' } };
  const numeric = typeof p.port === 'number' ? p.port : /^\d+$/.test(p.port) ? Number(p.port) : undefined;
  if (numeric !== undefined) return { protocol, port: { type: 'number', port: numeric, endPort: p.endPort ?? numeric } };
  return { protocol, port: { type: 'named', name: p.port as string } };
});

const ingressRuleSchema = z.object({
  from: z.array(peerSchema).optional(),
  ports: z.array(portSchema).optional(),
}).strict().transform((r): PolicyRule => ({ peers: r.from && r.from.length > 0 ? r.from : 'all', ports: r.ports ?? [] }));

const egressRuleSchema = z.object({
  to: z.array(peerSchema).optional(),
  ports: z.array(portSchema).optional(),
}).strict().transform((r): PolicyRule => ({ peers: r.to && r.to.length > 0 ? r.to : 'all', ports: r.ports ?? [] }));

const nameSchema = z.string().refine((s) => DNS_SUBDOMAIN.test(s), (s) => ({
  message: `${JSON.stringify(s)} is not a valid name (lower-case DNS subdomain, up to 253 characters)`,
}));
const namespaceNameSchema = z.string().refine((s) => DNS_LABEL.test(s), (s) => ({
  message: `${JSON.stringify(s)} is not a valid namespace name (lower-case DNS label, up to 63 characters)`,
}));

const policySchema = z.object({
  apiVersion: z.literal('networking.k8s.io/v1', { errorMap: () => ({ message: 'expected networking.k8s.io/v1' }) }).optional(),
  kind: z.literal('NetworkPolicy', { errorMap: () => ({ message: 'expected NetworkPolicy' }) }).optional(),
  // Kubernetes objects carry many more metadata fields (uid, labels, annotations…); they are kept
  // by the store as written and do not matter to enforcement.
  metadata: z.object({ name: nameSchema, namespace: namespaceNameSchema.optional() }).passthrough(),
  spec: z.object({
    podSelector: selectorSchema,
    policyTypes: z.array(z.unknown().superRefine((v, ctx) => {
      if (v !== 'Ingress' && v !== 'Egress') ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(v)} is not one of Ingress, Egress` });
    }).transform((v) => v as 'Ingress' | 'Egress')).optional(),
    ingress: z.array(ingressRuleSchema).optional(),
    egress: z.array(egressRuleSchema).optional(),
  }).strict(),
  status: z.unknown().optional(),
}).strict().superRefine((p, ctx) => {
  const t = p.spec.policyTypes;
  if (t && new Set(t).size !== t.length) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['spec', 'policyTypes'], message: 'lists a type twice' });
  if (t && t.length === 0) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['spec', 'policyTypes'], message: 'is empty (omit it for the default)' });
}).transform((p): NetworkPolicy => {
  const t = p.spec.policyTypes;
  // Kubernetes' defaulting: Ingress always, Egress when the spec has egress rules.
  const types = t ? { ingress: t.includes('Ingress'), egress: t.includes('Egress') } : { ingress: true, egress: p.spec.egress !== undefined };
  return {
    name: p.metadata.name,
    namespace: p.metadata.namespace ?? 'default',
    podSelector: p.spec.podSelector,
    types,
    ingress: p.spec.ingress ?? [],
    egress: p.spec.egress ?? [],
  };
});

/** `spec.ingress[0].ports[1].port` from a zod path. */
export function fieldPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(p)) out += out === '' ? p : `.${p}`;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out;
}

function zodMessage(err: z.ZodError, prefix: string): string {
  return err.issues.map((i) => {
    const where = fieldPath(i.path);
    let msg = i.message;
    if (i.code === z.ZodIssueCode.unrecognized_keys) msg = `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    else if (i.code === z.ZodIssueCode.invalid_type && i.received === 'undefined') msg = 'is required';
    const full = prefix + where;
    return full === '' ? msg : `${full}: ${msg}`;
  }).join('; ');
}

/** Parses one NetworkPolicy object (already decoded from JSON/YAML). */
export function parsePolicy(input: unknown, where = ''): NetworkPolicy {
  const r = policySchema.safeParse(input);
  if (!r.success) throw new WeftError(CniCode.InvalidNetworkConfig, zodMessage(r.error, where));
  return r.data;
}

/**
 * Decodes policy documents from JSON or YAML text: one object, several YAML documents, or a
 * List / NetworkPolicyList with items. All are checked before any is returned, so an apply
 * is all or nothing.
 */
export function parsePolicyText(text: string): { policy: NetworkPolicy; raw: Record<string, unknown> }[] {
  const objects: unknown[] = [];
  const trimmed = text.trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    let v: unknown;
    try { v = JSON.parse(trimmed); } catch (err) {
      throw new WeftError(CniCode.DecodeFailure, `policy is not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
    }
    objects.push(...(Array.isArray(v) ? v : [v]));
  } else {
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new WeftError(CniCode.DecodeFailure, `policy is not valid YAML: ${doc.errors[0]?.message ?? 'parse error'}`);
      const v: unknown = doc.toJS();
      if (v !== null && v !== undefined) objects.push(v);
    }
  }
  const flat: { obj: unknown; where: string }[] = [];
  objects.forEach((o, i) => {
    const rec = typeof o === 'object' && o !== null && !Array.isArray(o) ? o as Record<string, unknown> : undefined;
    const many = objects.length > 1;
    if (rec && (rec.kind === 'List' || rec.kind === 'NetworkPolicyList') && Array.isArray(rec.items)) {
      rec.items.forEach((item, j) => flat.push({ obj: item, where: `${many ? `[${i}]` : ''}items[${j}].` }));
    } else {
      flat.push({ obj: o, where: many ? `[${i}].` : '' });
    }
  });
  if (flat.length === 0) throw new WeftError(CniCode.DecodeFailure, 'no policy in the input');
  const problems: string[] = [];
  const out: { policy: NetworkPolicy; raw: Record<string, unknown> }[] = [];
  for (const { obj, where } of flat) {
    try {
      out.push({ policy: parsePolicy(obj, where), raw: obj as Record<string, unknown> });
    } catch (err) {
      problems.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (problems.length > 0) throw new WeftError(CniCode.InvalidNetworkConfig, problems.join('; '));
  const seen = new Set<string>();
  for (const { policy } of out) {
    const id = `${policy.namespace}/${policy.name}`;
    if (seen.has(id)) throw new WeftError(CniCode.InvalidNetworkConfig, `policy ${id} appears twice in the input`);
    seen.add(id);
  }
  return out;
}

// ---- endpoints and namespaces as the store keeps them (JSON)

const ipText = z.string().transform((s, ctx) => {
  // CNI results carry addresses with a prefix (10.244.1.5/24); the endpoint is the address.
  const ip = tryParseIP(s.includes('/') ? s.slice(0, s.indexOf('/')) : s);
  if (!ip) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${JSON.stringify(s)} is not an IP address` });
    return z.NEVER;
  }
  return ip;
});

const endpointSchema = z.object({
  namespace: namespaceNameSchema,
  pod: nameSchema,
  labels: labelMap.default({}),
  ips: z.array(ipText).min(1, 'needs at least one address'),
  host: z.string().min(1),
  ifname: z.string().min(1),
  namedPorts: z.record(z.string().regex(PORT_NAME, 'is not a valid port name'), z.object({
    port: portNumber('port'),
    protocol: protocolSchema.default('TCP'),
  }).strict()).optional(),
}).strict().transform((e): Endpoint => {
  const { namedPorts, ...rest } = e;
  return namedPorts ? { ...rest, namedPorts } : rest;
});

const namespaceSchema = z.object({ name: namespaceNameSchema, labels: labelMap.default({}) }).strict();

export function parseEndpoint(input: unknown, where = ''): Endpoint {
  const r = endpointSchema.safeParse(input);
  if (!r.success) throw new WeftError(CniCode.InvalidNetworkConfig, zodMessage(r.error, where));
  return r.data;
}

export function parseNamespace(input: unknown, where = ''): Namespace {
  const r = namespaceSchema.safeParse(input);
  if (!r.success) throw new WeftError(CniCode.InvalidNetworkConfig, zodMessage(r.error, where));
  return r.data;
}

/** The JSON form parseEndpoint reads back. */
export function endpointToJson(e: Endpoint): Record<string, unknown> {
  return {
    namespace: e.namespace, pod: e.pod, labels: e.labels, ips: e.ips.map(formatIP),
    host: e.host, ifname: e.ifname, ...(e.namedPorts ? { namedPorts: e.namedPorts } : {}),
  };
}

export function validLabelKey(key: string): string | undefined {
  return labelKeyProblem(key);
}

export function validLabelValue(v: string): boolean {
  return LABEL_VALUE.test(v);
}

export function validNamespaceName(s: string): boolean {
  return DNS_LABEL.test(s);
}

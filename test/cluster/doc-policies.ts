// The NetworkPolicy examples of the Kubernetes documentation (concepts/services-networking/
// network-policies), restated here as weft's own objects with the same meaning, so the kube
// policy suite applies what a user following the docs would apply — with `kubectl apply -f FILE` —
// without carrying the docs' files. Where an example names `namespace: default`, these name the
// lab's pod namespace so they select the lab's pods; the others carry no namespace and are
// applied with `-n`.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LAB_POD_NAMESPACE } from '../../src/lab/kube.js';

type Policy = { apiVersion: 'networking.k8s.io/v1'; kind: 'NetworkPolicy'; metadata: { name: string; namespace?: string }; spec: Record<string, unknown> };

const policy = (name: string, spec: Record<string, unknown>, namespace?: string): Policy => ({
  apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, ...(namespace !== undefined && { namespace }) }, spec,
});
const everyPod = {};

/** File name (the docs' example name) → the policy it holds. */
export const DOC_POLICIES: Readonly<Record<string, Policy>> = {
  // "Default deny all ingress traffic"
  'network-policy-default-deny-ingress.json': policy('default-deny-ingress', { podSelector: everyPod, policyTypes: ['Ingress'] }),
  // "Allow all ingress traffic"
  'network-policy-allow-all-ingress.json': policy('allow-all-ingress', { podSelector: everyPod, ingress: [{}], policyTypes: ['Ingress'] }),
  // "Default deny all egress traffic"
  'network-policy-default-deny-egress.json': policy('default-deny-egress', { podSelector: everyPod, policyTypes: ['Egress'] }),
  // "Allow all egress traffic"
  'network-policy-allow-all-egress.json': policy('allow-all-egress', { podSelector: everyPod, egress: [{}], policyTypes: ['Egress'] }),
  // "Default deny all ingress and all egress traffic"
  'network-policy-default-deny-all.json': policy('default-deny-all', { podSelector: everyPod, policyTypes: ['Ingress', 'Egress'] }),
  // The docs' variant that allows all egress while denying all ingress (an explicit empty ingress list).
  'network-policy-allow-all-egress-deny-all-ingress.json': policy('allow-egress-deny-ingress', { podSelector: everyPod, policyTypes: ['Egress', 'Ingress'], egress: [{}], ingress: [] }),
  // The page's main example, test-network-policy: db pods take 6379/TCP from 172.17.0.0/16 but
  // 172.17.1.0/24, from pods of namespaces labelled project=myproject and from frontend pods of
  // their own namespace; they may send to 10.0.0.0/24 on 5978/TCP only.
  'networkpolicy.json': policy('test-network-policy', {
    podSelector: { matchLabels: { role: 'db' } },
    policyTypes: ['Ingress', 'Egress'],
    ingress: [{
      from: [
        { ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } },
        { namespaceSelector: { matchLabels: { project: 'myproject' } } },
        { podSelector: { matchLabels: { role: 'frontend' } } },
      ],
      ports: [{ protocol: 'TCP', port: 6379 }],
    }],
    egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 5978 }] }],
  }, LAB_POD_NAMESPACE),
  // "Targeting a range of ports": db pods may send to 10.0.0.0/24 on TCP 32000-32768 (endPort).
  'networkpolicy-multiport-egress.json': policy('multi-port-egress', {
    podSelector: { matchLabels: { role: 'db' } },
    policyTypes: ['Egress'],
    egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 32000, endPort: 32768 }] }],
  }, LAB_POD_NAMESPACE),
};

/** Writes every example to its own file in a fresh directory, for `kubectl apply -f FILE`. */
export function writeDocPolicies(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'weft-doc-policies-'));
  for (const [file, p] of Object.entries(DOC_POLICIES)) writeFileSync(join(dir, file), JSON.stringify(p, null, 2) + '\n');
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

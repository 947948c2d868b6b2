// Policy cases the single-host enforcement suites share (policy-enforce: IPv4 pods;
// policy-dualstack: IPv4, IPv6 and dual-stack pods): the two labelled namespaces their pods live
// in, and the selector cases whose policies do not depend on the pods' families. Each suite
// checks them against its own truth table (its pods, its probes, the evaluator's answer).
import { it } from 'node:test';
import assert from 'node:assert/strict';
import type { EnforceResult } from '../../src/policy/enforcer.js';
import { type Namespace, type NetworkPolicy, parsePolicy } from '../../src/policy/model.js';

/** prod (env=prod) and dev (env=dev). */
export const NAMESPACES: readonly Namespace[] = [
  { name: 'prod', labels: { env: 'prod' } },
  { name: 'dev', labels: { env: 'dev' } },
];

export const policy = (ns: string, name: string, spec: Record<string, unknown>): NetworkPolicy =>
  parsePolicy({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec });

export interface SelectorSuite {
  /** Enforces `policies`, probes every pair and asserts the observed truth table is the evaluator's. */
  check(title: string, policies: NetworkPolicy[]): Promise<EnforceResult>;
  /** Replaces the namespaces the suite's world is built from. */
  setNamespaces(namespaces: readonly Namespace[]): void;
  /** Appended to each test's name, e.g. ', over both families'. */
  over?: string;
}

/**
 * Registers in the calling describe, in this order: default-deny ingress in prod, allow from the
 * same namespace, and allow from a namespace selector — then dev relabelled env=staging, which must
 * be a set update, not a rebuild. The namespaces are NAMESPACES again afterwards.
 */
export function selectorCases(s: SelectorSuite): void {
  const over = s.over ?? '';
  it(`default-deny ingress in prod${over}`, async () => {
    await s.check('default-deny ingress (prod)', [policy('prod', 'deny', { podSelector: {}, policyTypes: ['Ingress'] })]);
  });

  it(`allow from the same namespace${over}`, async () => {
    await s.check('allow same namespace (prod)', [policy('prod', 'same-ns', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] })]);
  });

  it(`allow from a namespace selector; relabelling the namespace is an element update${over}`, async () => {
    const p = [policy('prod', 'from-dev', { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { env: 'dev' } } }] }] })];
    await s.check('web allows namespaces env=dev', p);
    s.setNamespaces([{ name: 'prod', labels: { env: 'prod' } }, { name: 'dev', labels: { env: 'staging' } }]);
    try {
      const r = await s.check('web allows namespaces env=dev, after dev is relabelled env=staging', p);
      assert.equal(r.type, 'elements', 'a membership change is a set update, not a rebuild');
    } finally {
      s.setNamespaces(NAMESPACES);
    }
  });
}

// weftctl policy apply|list|get|delete: Kubernetes NetworkPolicy objects in the store.
import { renderTable } from '../text-table.js';
import { readFileSync } from 'node:fs';
import { stringify as toYaml } from 'yaml';
import type { CliCommand } from './command.js';
import { parseCommandArgs } from './args.js';
import { ExitCode, UsageError } from './command.js';
import { CniCode, WeftError } from '../errors.js';
import { openKeyValueStore } from '../store/kv.js';
import { storeFlagOptions, storeFlagsHelp, storeSettingsFrom } from '../store/flags.js';
import { type LabelSelector, type NetworkPolicy, parsePolicy, parsePolicyText, validNamespaceName } from '../policy/model.js';
import { loadEndpoints, POLICIES, policyKey } from '../policy/store.js';
import { policySelects } from '../policy/evaluate.js';
import { spawn } from 'node:child_process';
import { type StoreSettings } from '../store/flags.js';
import { DEFAULT_HEALTH_ADDR, healthAddr } from './weftd-http.js';
import { type CounterTarget, type GatheredCounters, gatherCounters } from './policy-counters.js';
import { parseLabName } from '../lab/naming.js';
import { LabDirs } from '../lab/state.js';
import { labStore } from '../lab/lab-store.js';
import { cleanEnv, WEFTCTL_BIN } from '../lab/exec.js';

/** Set when `policy list --lab` runs itself again inside a lab host (etcd and kube labs). */
const INSIDE_ENV = 'WEFT_POLICY_IN_LAB_HOST';

const help = `weftctl policy — Kubernetes NetworkPolicy (networking.k8s.io/v1) in the store

Usage:
  weftctl policy apply -f FILE|-                 create or replace policies (JSON or YAML;
                                                 several documents or a List are fine)
  weftctl policy list [-n NS | -A] [--json]      NAMESPACE NAME POD-SELECTOR TYPES PODS (the
         [--addr HOST:PORT | --lab NAME]         endpoints it selects: "none selected" flags
                                                 a selector that matches no pod) ALLOWED DENIED
                                                 (packets, see below; --json: the stored
                                                 objects only)
  weftctl policy get NAME [-n NS] [-o json|yaml] the stored object
  weftctl policy delete NAME [-n NS]

-n, --namespace NS   the policy's namespace (default "default"; apply uses metadata.namespace)
-A, --all-namespaces list every namespace
--addr HOST:PORT     weftd's --health-addr for the counters (default: env WEFTD_HEALTH_ADDR,
                     else ${DEFAULT_HEALTH_ADDR}): that host's counts only
--lab NAME           a lab made by weftctl lab up: its store, and the counters of every
                     host's weftd (through its API socket), summed

ALLOWED and DENIED count, over both directions, the packets weftd's policy chains judged: the
first packet of each connection a rule of the policy allowed, and every packet dropped while
the policy isolated the endpoint (a drop counts for each policy isolating it). Packets of
established connections pass without being judged. Without a weftd to ask, both show "-".

apply checks every object first; if any is invalid nothing is written and the error names the
field (e.g. spec.ingress[0].ports[1].port: 70000 is out of range 1-65535).

${storeFlagsHelp}
`;

function selectorText(s: LabelSelector): string {
  const parts = [
    ...Object.entries(s.matchLabels).map(([k, v]) => `${k}=${v}`),
    ...s.matchExpressions.map((r) => `${r.key} ${r.operator}${r.values.length > 0 ? ` (${r.values.join(',')})` : ''}`),
  ];
  return parts.length > 0 ? parts.join(',') : '<all>';
}

function typesText(p: NetworkPolicy): string {
  return [p.types.ingress ? 'Ingress' : '', p.types.egress ? 'Egress' : ''].filter((s) => s !== '').join(',');
}

/** Runs this very command again inside ns (where a lab's etcd or API server is reachable). */
function rerunInside(ns: string, argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, WEFTCTL_BIN, 'policy', ...argv], { stdio: 'inherit', env: cleanEnv({ [INSIDE_ENV]: '1' }) });
    child.on('error', () => resolve(ExitCode.Failure));
    child.on('close', (code) => resolve(code ?? ExitCode.Failure));
  });
}

/** The counter columns of one policy; "-" when no weftd answered. */
function counterCells(c: GatheredCounters | undefined, p: NetworkPolicy): [string, string] {
  if (!c || c.answered.length === 0) return ['-', '-'];
  const t = c.byPolicy.get(`${p.namespace}/${p.name}`);
  return [String(t?.allowedPackets ?? 0), String(t?.deniedPackets ?? 0)];
}

/** What the operator is told (stderr) when some or all weftds did not answer. */
function counterNote(c: GatheredCounters): string | undefined {
  if (c.failed.length === 0) return undefined;
  const why = c.failed.map((f) => `${f.label}: ${f.reason}`).join('; ');
  return c.answered.length === 0
    ? `note: ALLOWED and DENIED need weftd (${why}); on a node pass --addr HOST:PORT (weftd's --health-addr), for a lab --lab NAME\n`
    : `note: ALLOWED and DENIED leave out the hosts whose weftd did not answer (${why})\n`;
}

function readInput(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new WeftError(CniCode.IoFailure, `cannot read ${file === '-' ? 'stdin' : file}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export const policyCommand: CliCommand = {
  name: 'policy',
  summary: 'apply, list, get or delete network policies',
  help,
  async run(argv) {
    const parsed = parseCommandArgs(argv, {
      ...storeFlagOptions,
      filename: { type: 'string', short: 'f' },
      namespace: { type: 'string', short: 'n' },
      'all-namespaces': { type: 'boolean', short: 'A' },
      output: { type: 'string', short: 'o' },
      json: { type: 'boolean' },
      addr: { type: 'string' },
      lab: { type: 'string' },
    } as const, 2);
    const [action, name] = parsed.positionals;
    const v = parsed.values;
    if ((v.addr !== undefined || v.lab !== undefined) && action !== 'list') throw new UsageError('--addr and --lab go with list only');
    if (v.addr !== undefined && v.lab !== undefined) throw new UsageError('--addr and --lab exclude each other');
    let settings: StoreSettings;
    let targets: CounterTarget[];
    if (v.lab !== undefined) {
      const storeFlags = Object.keys(storeFlagOptions).filter((k) => (v as Record<string, unknown>)[k] !== undefined);
      if (storeFlags.length > 0) throw new UsageError(`--lab takes the store from the lab; drop --${storeFlags.join(', --')}`);
      const labName = parseLabName(v.lab);
      const { requireUpLab } = await import('../lab/lab.js');
      const rec = requireUpLab(labName);
      const host0 = rec.hostList[0];
      if (rec.store !== 'file' && process.env[INSIDE_ENV] !== '1' && host0) return rerunInside(host0.ns, argv);
      settings = labStore(rec).settings;
      const dirs = LabDirs.of(labName);
      targets = rec.hostList.map((h) => ({ label: `h${h.index}`, addr: `unix:${dirs.apiSocket(h.index)}` }));
    } else {
      settings = storeSettingsFrom(v);
      const addr = healthAddr(v.addr);
      targets = [{ label: addr, addr }];
    }
    if (action !== 'apply' && action !== 'list' && action !== 'get' && action !== 'delete') throw new UsageError('expected apply, list, get or delete');
    const ns = v.namespace ?? 'default';
    if (!validNamespaceName(ns)) throw new UsageError(`--namespace: ${JSON.stringify(ns)} is not a valid namespace name`);
    if ((action === 'get' || action === 'delete') && name === undefined) throw new UsageError(`${action} needs a policy NAME`);
    if ((action === 'apply' || action === 'list') && name !== undefined) throw new UsageError(`${action} takes no NAME`);
    if (action === 'apply' && v.filename === undefined) throw new UsageError('apply needs -f FILE (or -f - for stdin)');
    if (v.output !== undefined && v.output !== 'json' && v.output !== 'yaml') throw new UsageError('-o: expected json or yaml');

    // Everything is parsed before the store is opened: an invalid file never touches it.
    const docs = action === 'apply' ? parsePolicyText(readInput(v.filename ?? '-')) : [];
    // Only apply writes: list, get and delete never create a store.
    const kv = await openKeyValueStore(settings, { create: action === 'apply' });
    try {
      switch (action) {
        case 'apply': {
          for (const { policy, raw } of docs) {
            const key = policyKey(policy.namespace, policy.name);
            const existed = (await kv.get(key)) !== undefined;
            const stored = {
              apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', ...raw,
              metadata: { ...(raw.metadata as Record<string, unknown>), namespace: policy.namespace },
            };
            await kv.put(key, JSON.stringify(stored));
            process.stdout.write(`networkpolicy ${policy.namespace}/${policy.name} ${existed ? 'configured' : 'created'}\n`);
          }
          // Accepted either way (pods may come later, as with kubectl), but a selector matching
          // nothing is most often a mistyped label: say so while the operator is looking.
          const endpoints = await loadEndpoints(kv);
          for (const { policy } of docs) {
            if (endpoints.some((e) => policySelects(policy, e))) continue;
            const inNs = endpoints.filter((e) => e.namespace === policy.namespace).length;
            process.stderr.write(`warning: networkpolicy ${policy.namespace}/${policy.name}: podSelector ${selectorText(policy.podSelector)} selects no pod yet (${inNs} pod(s) known in namespace ${policy.namespace})\n`);
          }
          return ExitCode.Ok;
        }
        case 'list': {
          const entries = await kv.list(v['all-namespaces'] ? POLICIES : `${POLICIES}${ns}/`);
          const rows: { policy: NetworkPolicy; raw: unknown }[] = [];
          for (const e of entries) {
            const raw = JSON.parse(e.value) as unknown;
            try {
              rows.push({ policy: parsePolicy(raw), raw });
            } catch (err) {
              process.stderr.write(`weftctl policy: skipping ${e.key}: ${err instanceof Error ? err.message : String(err)}\n`);
            }
          }
          if (v.json) {
            process.stdout.write(JSON.stringify(rows.map((r) => r.raw), null, 2) + '\n');
          } else {
            // How many endpoints each selects: a policy selecting none is usually a typo in a label.
            const [endpoints, counters] = await Promise.all([loadEndpoints(kv), gatherCounters(targets)]);
            const selected = (p: NetworkPolicy) => endpoints.filter((e) => policySelects(p, e)).length;
            process.stdout.write(renderTable(['NAMESPACE', 'NAME', 'POD-SELECTOR', 'TYPES', 'PODS', 'ALLOWED', 'DENIED'],
              rows.map(({ policy: p }) => [p.namespace, p.name, selectorText(p.podSelector), typesText(p), String(selected(p) || 'none selected'), ...counterCells(counters, p)])));
            const note = counterNote(counters);
            if (note) process.stderr.write(note);
          }
          return ExitCode.Ok;
        }
        case 'get': {
          const text = await kv.get(policyKey(ns, name ?? ''));
          if (text === undefined) throw new WeftError(CniCode.Store, `networkpolicy ${ns}/${name} not found`);
          const obj = JSON.parse(text) as unknown;
          process.stdout.write(v.output === 'yaml' ? toYaml(obj) : JSON.stringify(obj, null, 2) + '\n');
          return ExitCode.Ok;
        }
        case 'delete': {
          if (!(await kv.delete(policyKey(ns, name ?? '')))) throw new WeftError(CniCode.Store, `networkpolicy ${ns}/${name} not found`);
          process.stdout.write(`networkpolicy ${ns}/${name} deleted\n`);
          return ExitCode.Ok;
        }
      }
    } finally {
      await kv.close();
    }
  },
};

// weftctl ns create|label|list: namespaces and their labels, which namespaceSelectors match.
import { renderTable } from '../text-table.js';
import { parseArgs } from 'node:util';
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { CniCode, WeftError } from '../errors.js';
import { openKeyValueStore } from '../store/kv.js';
import { storeFlagOptions, storeFlagsHelp, storeSettingsFrom } from '../store/flags.js';
import { type Namespace, parseNamespace, validLabelKey, validLabelValue, validNamespaceName } from '../policy/model.js';
import { NAMESPACES, namespaceKey } from '../policy/store.js';

const help = `weftctl ns — namespaces and their labels (matched by namespaceSelector)

Usage:
  weftctl ns create NAME [KEY=VALUE…]       create a namespace (fails if it exists)
  weftctl ns label NAME KEY=VALUE… [KEY-…]  set labels (KEY- removes one); --overwrite to change
                                            an existing value
  weftctl ns list [--json]                  NAME LABELS

Every namespace also matches the label kubernetes.io/metadata.name=NAME, as in Kubernetes.

${storeFlagsHelp}
`;

type LabelEdit = { type: 'set'; key: string; value: string } | { type: 'remove'; key: string };

function parseLabelArg(arg: string): LabelEdit {
  if (arg.endsWith('-') && !arg.includes('=')) {
    const key = arg.slice(0, -1);
    const p = validLabelKey(key);
    if (p) throw new UsageError(p);
    return { type: 'remove', key };
  }
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new UsageError(`expected KEY=VALUE or KEY-, got ${JSON.stringify(arg)}`);
  const key = arg.slice(0, eq);
  const value = arg.slice(eq + 1);
  const p = validLabelKey(key);
  if (p) throw new UsageError(p);
  if (!validLabelValue(value)) throw new UsageError(`${JSON.stringify(value)} is not a valid label value (up to 63 of [A-Za-z0-9-_.], alphanumeric at both ends)`);
  return { type: 'set', key, value };
}

function labelsText(labels: Readonly<Record<string, string>>): string {
  const e = Object.entries(labels);
  return e.length > 0 ? e.map(([k, v]) => `${k}=${v}`).join(',') : '<none>';
}

export const nsCommand: CliCommand = {
  name: 'ns',
  summary: 'create, label or list namespaces',
  help,
  async run(argv) {
    let parsed;
    try {
      parsed = parseArgs({ args: argv, options: { ...storeFlagOptions, json: { type: 'boolean' }, overwrite: { type: 'boolean' } }, allowPositionals: true, strict: true });
    } catch (err) {
      throw new UsageError(err instanceof Error ? err.message : String(err));
    }
    const [action, name, ...rest] = parsed.positionals;
    const v = parsed.values;
    if (action !== 'create' && action !== 'label' && action !== 'list') throw new UsageError('expected create, label or list');
    if (action === 'list' && name !== undefined) throw new UsageError('list takes no NAME');
    if (action !== 'list') {
      if (name === undefined) throw new UsageError(`${action} needs a namespace NAME`);
      if (!validNamespaceName(name)) throw new UsageError(`${JSON.stringify(name)} is not a valid namespace name (lower-case DNS label)`);
    }
    const edits = rest.map(parseLabelArg);
    if (action === 'label' && edits.length === 0) throw new UsageError('label needs KEY=VALUE or KEY-');
    if (action === 'create' && edits.some((e) => e.type === 'remove')) throw new UsageError('create takes KEY=VALUE labels only');

    const kv = await openKeyValueStore(storeSettingsFrom(v), { create: action !== 'list' });
    try {
      if (action === 'list') {
        const all: Namespace[] = [];
        for (const e of await kv.list(NAMESPACES)) {
          try {
            all.push(parseNamespace(JSON.parse(e.value) as unknown, `${e.key}: `));
          } catch (err) {
            process.stderr.write(`weftctl ns: skipping ${e.key}: ${err instanceof Error ? err.message : String(err)}\n`);
          }
        }
        if (v.json) process.stdout.write(JSON.stringify(all, null, 2) + '\n');
        else {
          process.stdout.write(renderTable(['NAME', 'LABELS'], all.map((n) => [n.name, labelsText(n.labels)])));
        }
        return ExitCode.Ok;
      }
      const key = namespaceKey(name ?? '');
      const text = await kv.get(key);
      if (action === 'create') {
        if (text !== undefined) throw new WeftError(CniCode.Store, `namespace ${name} already exists`);
        const labels: Record<string, string> = {};
        for (const e of edits) if (e.type === 'set') labels[e.key] = e.value;
        await kv.put(key, JSON.stringify({ name, labels }));
        process.stdout.write(`namespace ${name} created\n`);
        return ExitCode.Ok;
      }
      if (text === undefined) throw new WeftError(CniCode.Store, `namespace ${name} not found (weftctl ns create ${name})`);
      const ns = parseNamespace(JSON.parse(text) as unknown, `${key}: `);
      const labels: Record<string, string> = { ...ns.labels };
      for (const e of edits) {
        if (e.type === 'remove') { delete labels[e.key]; continue; }
        const old = labels[e.key];
        if (old !== undefined && old !== e.value && !v.overwrite) {
          throw new WeftError(CniCode.InvalidNetworkConfig, `namespace ${name} already has ${e.key}=${old} (use --overwrite)`);
        }
        labels[e.key] = e.value;
      }
      await kv.put(key, JSON.stringify({ name, labels }));
      process.stdout.write(`namespace ${name} labeled\n`);
      return ExitCode.Ok;
    } finally {
      await kv.close();
    }
  },
};

// `weftctl install` and `weftctl uninstall`: flags → src/install. The weftd flags given here go
// into weftd's environment file as WEFTD_<FLAG>, exactly the names weftd reads.
import { parseArgs } from 'node:util';
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { install, uninstall, type InstallReport } from '../install/install.js';
import { DEFAULTS } from '../install/layout.js';
import { networkConfigFromObject } from '../store/config.js';

/** Flags copied verbatim into weftd.env (flag → WEFTD_FLAG). */
const WEFTD_STRING_FLAGS = [
  'store', 'etcd-endpoints', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'prefix', 'iface', 'public-ip', 'public-ipv6', 'health-addr', 'node-name',
] as const;

const installOptions = {
  root: { type: 'string' },
  'lib-dir': { type: 'string' },
  'cni-bin-dir': { type: 'string' },
  'cni-conf-dir': { type: 'string' },
  manifest: { type: 'string' },
  network: { type: 'string' },
  backend: { type: 'string' },
  'pod-network': { type: 'string' },
  'subnet-len': { type: 'string' },
  bridge: { type: 'string' },
  'cni-version': { type: 'string' },
  'subnet-file': { type: 'string' },
  'store-dir': { type: 'string' },
  'ip-masq': { type: 'boolean' },
  'no-ip-masq': { type: 'boolean' },
  'no-systemd': { type: 'boolean' },
  node: { type: 'string' },
  'copy-node': { type: 'boolean' },
  source: { type: 'string' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
  ...Object.fromEntries(WEFTD_STRING_FLAGS.map((f) => [f, { type: 'string' }])),
} as const;

const INSTALL_HELP = `weftctl install — install weft on this host (or under --root) for a container runtime

Usage: weftctl install [FLAGS]

Writes (defaults; every path under --root when given):
  ${DEFAULTS.libDir}/                    self-contained weft: plugin bundles, native addon, weftd,
                                 weftctl, runtime packages (replaced as a unit)
  ${DEFAULTS.cniBinDir}/weft, weft-bridge, weft-ipam, weft-macvlan, weft-routed
                                 plugin launchers (absolute node + bundle: no PATH, current
                                 directory or checkout needed); portmap linked from the
                                 distribution's reference plugins when missing
  ${DEFAULTS.cniConfDir}/${DEFAULTS.confName}  weft, then portmap (portMappings capability)
  ${DEFAULTS.etcDir}/weftd.env               weftd flags as WEFTD_* variables
  ${DEFAULTS.etcDir}/net-conf.json           with --backend/--pod-network: the network config
  ${DEFAULTS.systemdDir}/${DEFAULTS.unitName}  runs ${DEFAULTS.libDir}/bin/weftd with that env file
  ${DEFAULTS.manifest}  what was written, for uninstall
Idempotent: a second run rewrites only what changed. Files at these paths that weft did not
write are refused (--force replaces them); a host's own portmap is left alone.

Layout:
  --root DIR           install under DIR, as if DIR were / (paths inside files too; tests)
  --lib-dir DIR        the self-contained tree (default ${DEFAULTS.libDir})
  --cni-bin-dir DIR    the runtime's plugin directory (default ${DEFAULTS.cniBinDir})
  --cni-conf-dir DIR   the runtime's network config directory (default ${DEFAULTS.cniConfDir})
  --manifest FILE      (default ${DEFAULTS.manifest})
  --no-systemd         no unit (weftd runs elsewhere, e.g. the DaemonSet's pod)
  --node PATH          node binary the launchers run (default: this one)
  --copy-node          copy that node into the lib dir (hosts without node)
  --force              replace files at our paths that weft did not write
  --json               print the report as JSON

CNI network:
  --network NAME       conflist name (default weft)
  --bridge NAME        the weft-bridge delegate's bridge (default: weft-bridge's own)
  --cni-version V      the conflist's cniVersion (default: the highest up to 1.0.0 that every
                       chained plugin answers to VERSION — Debian's portmap stops at 1.0.0, and
                       runtimes with libcni before 1.2 refuse 1.1.0; a plugin lacking V is named)

weftd (written to weftd.env as WEFTD_<FLAG>; see weftd --help):
  --store etcd|file  --etcd-endpoints URLS  --etcd-cafile/--etcd-certfile/--etcd-keyfile FILE
  --store-dir DIR (default ${DEFAULTS.storeDir})  --prefix PATH  --iface NAME|IP  --public-ip IP  --public-ipv6 IP
  --subnet-file PATH (default ${DEFAULTS.subnetFile}; also the conflist's subnetFile)
  --ip-masq (default) | --no-ip-masq   --health-addr HOST:PORT  --node-name NAME

Network config (net-conf.json; with the file store the unit applies it before weftd starts,
with etcd set it once per cluster: weftctl config set):
  --backend vxlan|host-gw|udp|bgp   --pod-network CIDR (default 10.244.0.0/16)  --subnet-len N
`;

const UNINSTALL_HELP = `weftctl uninstall — remove exactly what weftctl install wrote

Usage: weftctl uninstall [--root DIR] [--manifest FILE] [--json]

Reads the install manifest (default ${DEFAULTS.manifest}, under --root when given) and removes
each file, link and directory listed there; a file edited since install is left in place and
reported. Without a manifest there is nothing to do (exit 0). Does not stop weftd or touch the
dataplane: stop the service first (systemctl disable --now weftd).
`;

type Values = Record<string, string | boolean | undefined>;

function str(v: Values, k: string): string | undefined {
  const x = v[k];
  return typeof x === 'string' ? x : undefined;
}

function parse(argv: string[], options: NonNullable<Parameters<typeof parseArgs>[0]>['options']): Values {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Values;
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

function netConfFrom(v: Values): Record<string, unknown> | undefined {
  const backend = str(v, 'backend');
  const network = str(v, 'pod-network');
  const len = str(v, 'subnet-len');
  if (backend === undefined && network === undefined && len === undefined) return undefined;
  const conf: Record<string, unknown> = { Network: network ?? '10.244.0.0/16' };
  if (len !== undefined) {
    const n = Number(len);
    if (!Number.isInteger(n)) throw new UsageError(`--subnet-len: expected an integer, got ${JSON.stringify(len)}`);
    conf.SubnetLen = n;
  }
  conf.Backend = { Type: backend ?? 'vxlan' };
  // The same parser weftd uses: a bad backend or CIDR is refused here, naming the key.
  networkConfigFromObject(conf);
  return conf;
}

function weftdEnvFrom(v: Values): Array<[string, string]> {
  const env: Array<[string, string]> = [];
  const name = (f: string) => `WEFTD_${f.toUpperCase().replace(/-/g, '_')}`;
  for (const f of WEFTD_STRING_FLAGS) {
    const x = str(v, f);
    if (x !== undefined) env.push([name(f), x]);
  }
  const storeDir = str(v, 'store-dir');
  if (storeDir !== undefined) env.push(['WEFTD_STORE_DIR', storeDir]);
  if (v['ip-masq'] === true && v['no-ip-masq'] === true) throw new UsageError('--ip-masq and --no-ip-masq contradict each other');
  // On by default, as flannel's DaemonSet runs it: weftd masquerades only traffic leaving the
  // cluster network, and the bridge (ipMasq = !FLANNEL_IPMASQ) then leaves pod-to-pod alone.
  env.push(['WEFTD_IP_MASQ', v['no-ip-masq'] === true ? 'false' : 'true']);
  return env;
}

function printReport(r: InstallReport, json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify({ written: r.written, unchanged: r.unchanged, removed: r.removed, warnings: r.warnings, manifest: r.layout.manifest, cniVersion: r.cniVersion }) + '\n');
    return;
  }
  for (const p of r.written) process.stdout.write(`wrote     ${p}\n`);
  for (const p of r.unchanged) process.stdout.write(`unchanged ${p}\n`);
  for (const p of r.removed) process.stdout.write(`removed   ${p}\n`);
  for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
  process.stdout.write(`conflist  cniVersion ${r.cniVersion}\n`);
  if (r.layout.unitFile) process.stdout.write(`next: systemctl daemon-reload && systemctl enable --now ${DEFAULTS.unitName}\n`);
}

export const installCommand: CliCommand = {
  name: 'install',
  summary: 'install the CNI plugins, conflist and weftd service on this host (or under --root)',
  help: INSTALL_HELP,
  async run(argv) {
    const v = parse(argv, installOptions);
    const bridge = str(v, 'bridge');
    const store = str(v, 'store');
    if (store !== undefined && store !== 'file' && store !== 'etcd') throw new UsageError(`--store: expected etcd or file, got ${JSON.stringify(store)}`);
    const opt = <T>(key: string, val: T | undefined): Record<string, T> => (val === undefined ? {} : { [key]: val });
    const netConf = netConfFrom(v);
    const report = install({
      ...opt('root', str(v, 'root')),
      ...opt('libDir', str(v, 'lib-dir')),
      ...opt('cniBinDir', str(v, 'cni-bin-dir')),
      ...opt('cniConfDir', str(v, 'cni-conf-dir')),
      ...opt('manifest', str(v, 'manifest')),
      ...opt('subnetFile', str(v, 'subnet-file')),
      ...opt('storeDir', str(v, 'store-dir')),
      ...opt('network', str(v, 'network')),
      ...opt('nodePath', str(v, 'node')),
      ...opt('source', str(v, 'source')),
      ...opt('netConf', netConf),
      ...(bridge !== undefined && { delegate: { bridge } }),
      ...opt('cniVersion', str(v, 'cni-version')),
      systemd: v['no-systemd'] !== true,
      copyNode: v['copy-node'] === true,
      force: v.force === true,
      weftdEnv: weftdEnvFrom(v),
    });
    printReport(report, v.json === true);
    return ExitCode.Ok;
  },
};

export const uninstallCommand: CliCommand = {
  name: 'uninstall',
  summary: 'remove exactly what weftctl install wrote (from its manifest)',
  help: UNINSTALL_HELP,
  async run(argv) {
    const v = parse(argv, { root: { type: 'string' }, manifest: { type: 'string' }, json: { type: 'boolean' } });
    const root = str(v, 'root');
    const manifest = str(v, 'manifest');
    const r = uninstall({ ...(root !== undefined && { root }), ...(manifest !== undefined && { manifest }) });
    if (v.json === true) {
      process.stdout.write(JSON.stringify(r) + '\n');
    } else if (!r.found) {
      process.stdout.write(`nothing to do: no install manifest at ${r.manifest}\n`);
    } else {
      for (const p of r.removed) process.stdout.write(`removed   ${p}\n`);
    }
    for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
    return ExitCode.Ok;
  },
};

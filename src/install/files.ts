// The text of every small file an installation writes: launchers, conflist, weftd's environment
// file, the systemd unit. Pure functions of the layout and options, so they are tested as text.
import { dirname, join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';
import type { Layout } from './layout.js';

/** The CNI plugins weft ships (bin/cni in the checkout). */
export const WEFT_PLUGINS = ['weft', 'weft-bridge', 'weft-ipam', 'weft-macvlan', 'weft-routed'] as const;
export type WeftPlugin = (typeof WEFT_PLUGINS)[number];

/** Reference plugins the conflist uses; linked into the CNI bin dir when it lacks them. */
export const REFERENCE_PLUGINS = ['portmap'] as const;
/** Where distributions put the reference plugins (Debian: /usr/lib/cni). */
export const REFERENCE_PLUGIN_DIRS = ['/opt/cni/bin', '/usr/lib/cni', '/usr/libexec/cni'] as const;

/** POSIX shell single-quoting. */
export function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** systemd parses ExecStart= words itself; a path with whitespace or quotes is refused instead of escaped. */
function plainPath(what: string, p: string): string {
  if (/[\s"'\\%$;]/.test(p)) throw new WeftError(CniCode.InvalidEnvironment, `${what}: path ${JSON.stringify(p)} has characters systemd would interpret; choose another`);
  return p;
}

/**
 * A CNI plugin as the runtime execs it: an absolute node and an absolute bundle, so the
 * runtime's PATH, current directory and environment do not matter. NODE_EXTRA_CA_CERTS costs
 * every start ~45 ms and a plugin never needs it.
 */
export function pluginLauncher(plugin: WeftPlugin, layout: Layout, nodePath: string, nativeFront = false): string {
  const bundle = shQuote(join(layout.libDir, 'dist', 'cni', `${plugin}.cjs`));
  const lines = [
    '#!/bin/sh',
    `# weft CNI plugin ${plugin}, written by \`weftctl install\` (listed in ${layout.manifest}).`,
    '# Runs the installed bundle with an absolute node: independent of PATH, the current',
    '# directory and any source checkout.',
    'unset NODE_EXTRA_CA_CERTS',
  ];
  // The native front (native/cni_client.c) answers through weftd's socket without starting
  // node, and execs the node + bundle given to it when it cannot; arguments go to node.
  // The -x test keeps the Node launcher working should the tree lose the binary: sh exits when
  // exec cannot run its file.
  if (nativeFront) {
    const native = shQuote(join(layout.libDir, 'dist', 'cni', `${plugin}.native`));
    lines.push(`[ $# -eq 0 ] && [ -x ${native} ] && exec ${native} ${shQuote(nodePath)} ${bundle}`);
  }
  lines.push(`exec ${shQuote(nodePath)} ${bundle} "$@"`, '');
  return lines.join('\n');
}

/**
 * bin/weftd and bin/weftctl inside the lib dir: the node binary pinned, then the checkout's own
 * launcher (copied to libexec/), so the installed weftd runs the bundle, code cache and V8 flags
 * the checkout runs and the benchmarks measure.
 */
export function commandLauncher(command: 'weftd' | 'weftctl', layout: Layout, nodePath: string): string {
  return [
    '#!/bin/sh',
    `# ${command}, written by \`weftctl install\`: runs ${join(layout.libDir, 'libexec', command)} (the checkout's`,
    '# launcher) with this node.',
    `WEFT_NODE=${shQuote(nodePath)}`,
    'export WEFT_NODE',
    `exec ${shQuote(join(layout.libDir, 'libexec', command))} "$@"`,
    '',
  ].join('\n');
}

export interface ConflistOptions {
  readonly network: string;
  /** Keys for the weft plugin's `delegate` (e.g. {bridge: "cni0"}); flannel semantics. */
  readonly delegate?: Readonly<Record<string, unknown>>;
  /** Negotiated with the chained plugins by the installer. */
  readonly cniVersion: string;
}

/**
 * weft first (address + interface), then the reference portmap for hostPort mappings: the
 * runtime hands portmap `runtimeConfig.portMappings` because it declares the capability.
 */
export function conflist(layout: Layout, o: ConflistOptions): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(o.network)) {
    throw new WeftError(CniCode.InvalidEnvironment, `--network: ${JSON.stringify(o.network)} is not a valid CNI network name (letters, digits, _ . -)`);
  }
  const weft: Record<string, unknown> = {
    type: 'weft',
    subnetFile: layout.subnetFile,
    dataDir: layout.cniStateDir,
    ipam: { type: 'weft-ipam', dataDir: layout.ipamDataDir },
  };
  if (o.delegate && Object.keys(o.delegate).length > 0) weft.delegate = o.delegate;
  const list = {
    cniVersion: o.cniVersion,
    name: o.network,
    plugins: [weft, { type: 'portmap', capabilities: { portMappings: true }, snat: true }],
  };
  return JSON.stringify(list, null, 2) + '\n';
}

/** systemd EnvironmentFile= quoting: plain when safe, else double quotes with escapes. */
function envValue(key: string, v: string): string {
  if (/[\n\r\0]/.test(v)) throw new WeftError(CniCode.InvalidEnvironment, `${key}: value must be one line`);
  if (/^[A-Za-z0-9_.,:/@+=-]*$/.test(v)) return v;
  return `"${v.replace(/["\\$`]/g, (c) => `\\${c}`)}"`;
}

/** weftd's flags as WEFTD_<FLAG> lines (weftd reads each flag from its env var). */
export function weftdEnvFile(vars: ReadonlyMap<string, string>): string {
  const lines = ['# weftd flags as environment (see weftd --help); written by `weftctl install`.'];
  for (const [k, v] of vars) {
    if (!/^WEFTD_[A-Z0-9_]+$/.test(k)) throw new WeftError(CniCode.InvalidEnvironment, `env file: ${JSON.stringify(k)} is not a WEFTD_<FLAG> name`);
    lines.push(`${k}=${envValue(k, v)}`);
  }
  return lines.join('\n') + '\n';
}

/** Reads what weftdEnvFile wrote (and hand edits in the same syntax), like systemd does. */
export function parseEnvFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new WeftError(CniCode.InvalidEnvironment, `env file: ${JSON.stringify(line)} is not KEY=VALUE`);
    const key = line.slice(0, eq).trim();
    let v = line.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    else if (v.length >= 2 && v.startsWith("'") && v.endsWith("'")) v = v.slice(1, -1);
    out.set(key, v);
  }
  return out;
}

export interface UnitOptions {
  /** Seed the file store's network config from net-conf.json before each start. */
  readonly seedConfig: boolean;
}

/**
 * As tight as weftd allows (`systemd-analyze security weftd` reports the exposure; the install
 * test records it). What weftd needs and why:
 * - CAP_NET_ADMIN: links, routes, neighbours, nftables; CAP_SYS_ADMIN: setns into pod network
 *   namespaces (in-process CNI ADDs); CAP_NET_RAW: the udp backend's TUN and raw netlink;
 *   CAP_NET_BIND_SERVICE: BGP's port 179.
 * - /proc/sys writable (no ProtectKernelTunables): per-interface sysctls (proxy_arp for
 *   weft-routed, disable_ipv6 on the udp TUN) and forwarding checks.
 * - /dev/net/tun (no PrivateDevices): the udp backend.
 * - no MemoryDenyWriteExecute: V8's JIT writes code.
 * - writable: the subnet file's and CNI socket's directory, the file store, the CNI state and
 *   IPAM directories (in-process ADDs write there); everything else is read-only.
 */
function hardening(layout: Layout): string[] {
  const writable = [...new Set([dirname(layout.subnetFile), layout.storeDir, layout.cniStateDir, layout.ipamDataDir])];
  return [
    'CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    `ReadWritePaths=${writable.map((p) => `-${plainPath('writable path', p)}`).join(' ')}`,
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'ProtectProc=invisible',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'RestrictNamespaces=net',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK',
    'SystemCallArchitectures=native',
    'SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap',
    'UMask=0022',
  ];
}

export function systemdUnit(layout: Layout, o: UnitOptions): string {
  const lib = plainPath('--lib-dir', layout.libDir);
  const lines = [
    '# Written by `weftctl install`; removed by `weftctl uninstall`.',
    '[Unit]',
    'Description=weft node agent (pod subnet lease, routes and tunnels, CNI fast path)',
    'Wants=network-online.target',
    'After=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `EnvironmentFile=${plainPath('env file', layout.envFile)}`,
  ];
  // One host with the file store has no one else to write the config: the install's
  // net-conf.json is the truth and is (re)applied before weftd reads it. With etcd the cluster's
  // config is set once with `weftctl config set`, not by every node.
  if (o.seedConfig) lines.push(`ExecStartPre=${lib}/bin/weftctl config set ${plainPath('net-conf', layout.netConfFile)}`);
  lines.push(
    `ExecStart=${lib}/bin/weftd`,
    // weftd keeps the dataplane and its lease on SIGTERM, so a restart disturbs no pod.
    'KillSignal=SIGTERM',
    'Restart=on-failure',
    'RestartSec=5',
    'LimitNOFILE=65536',
    ...hardening(layout),
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  );
  return lines.join('\n');
}

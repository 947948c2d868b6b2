// weftctl doctor SRC DST: why can pod SRC not reach pod DST. Builds the topology (a lab's record,
// or this node's endpoint records and CNI cache), reads the store once, walks the path
// (src/doctor) and prints each hop. Read-only.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { CliCommand } from './command.js';
import { parseCommandArgs } from './args.js';
import { ExitCode, UsageError } from './command.js';
import { DEFAULT_SUBNET_FILE } from '../cni/subnet-env.js';
import { storeFlagOptions, storeFlagsHelp, storeFlagText, storeSettingsFrom, type StoreSettings } from '../store/flags.js';
import { DEFAULT_CACHE_DIR } from './cni.js';
import { parseLabName } from '../lab/naming.js';
import { cleanEnv, WEFTCTL_BIN } from '../lab/exec.js';
import { labStore } from '../lab/lab-store.js';
import { labTopology, nodeTopology, type Topology } from '../doctor/locate.js';
import { readStore, runDoctor } from '../doctor/doctor.js';
import { renderReport } from '../doctor/render.js';
import type { Probe } from '../doctor/types.js';

const INSIDE_ENV = 'WEFT_DOCTOR_IN_LAB_HOST';

const help = `weftctl doctor — why can pod SRC not reach pod DST

Usage:
  weftctl doctor SRC DST --lab NAME [--json] [--protocol P --port N]
  weftctl doctor SRC DST [store flags] [--subnet-file F] [--cache-dir D] [--json] [--protocol P --port N]

SRC and DST: a pod IP, a lab container name (h0c1), namespace/pod, or a container id (a unique
prefix of at least 6 characters will do). DST may be any IP.

Follows the path a packet would take and looks at every stretch, read-only:
  the source pod's interface (up, address, MTU = the network's FLANNEL_MTU) and its route;
  its node's side (veth and bridge, weft-routed host route, or macvlan master; forwarding);
  the backend toward DST's subnet on the source node — vxlan: device, onlink route (proto 87),
  VTEP neighbour and FDB entry against the peer's lease; host-gw: route via the peer's PublicIP;
  bgp: the BGP-learnt route (proto 88);
  weftd on the source node (/healthz), the lease owning DST's subnet, and its weftd (/healthz
  where reachable, else the lease's expiry);
  NetworkPolicy (the store's policies evaluated for this connection: which policy denies, and
  whether the enforcing node holds it in inet weft-policy); weftd's inet weft table (forward
  accepts, no masquerade between pods);
  DST's node side and DST's interface.
Each hop prints OK, FAIL (with the cause and a command that fixes it), WARN, or -- (not
applicable or not visible from here). The last line names the first broken hop.

--lab NAME          a lab made by weftctl lab up: hosts, pods and weftd come from its record
                    (etcd and kube labs: doctor runs itself inside host 0, where the store is)
--protocol P        ICMP (default), TCP, UDP or SCTP: what NetworkPolicy is evaluated for
--port N            destination port for TCP/UDP/SCTP (required with them)
--json              the report as JSON: {src, dst, probe, hops:[{id, where, title, status
                    (ok|fail|warn|skip), detail, cause?, fix?}], ok, firstFailure}
Outside a lab (on a node; the source pod must run here for its side to be checked):
--subnet-file F     weftd's subnet.env (default ${DEFAULT_SUBNET_FILE}); the endpoint records
                    beside it name this node's pods
--cache-dir D       the CNI result cache naming each pod's namespace (default ${DEFAULT_CACHE_DIR})
--node-name NAME    this node's name as weftd runs with it (default: the host name)
--health-addr A     weftd's --health-addr, to ask its /healthz

Exit: 0 when every hop is OK, 1 when one is broken (or on an error), 2 on a usage error.

${storeFlagsHelp}
`;

function parseProbe(protocol: string | undefined, port: string | undefined): Probe {
  const p = (protocol ?? 'ICMP').toUpperCase();
  if (p !== 'ICMP' && p !== 'TCP' && p !== 'UDP' && p !== 'SCTP') throw new UsageError(`--protocol: expected ICMP, TCP, UDP or SCTP, got ${JSON.stringify(protocol)}`);
  if (p === 'ICMP') {
    if (port !== undefined) throw new UsageError('--port needs --protocol TCP, UDP or SCTP');
    return { protocol: 'ICMP', port: 0 };
  }
  if (port === undefined) throw new UsageError(`--protocol ${p} needs --port`);
  const n = /^\d+$/.test(port) ? Number(port) : Number.NaN;
  if (!(n >= 1 && n <= 65535)) throw new UsageError(`--port: expected 1-65535, got ${JSON.stringify(port)}`);
  return { protocol: p, port: n };
}

/** Runs this very command again inside ns (where a lab's etcd or API server is reachable). */
function rerunInside(ns: string, argv: string[]): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('ip', ['netns', 'exec', ns, WEFTCTL_BIN, 'doctor', ...argv], { stdio: 'inherit', env: cleanEnv({ [INSIDE_ENV]: '1' }) });
    child.on('error', () => resolve(ExitCode.Failure));
    child.on('close', (code) => resolve(code ?? ExitCode.Failure));
  });
}

export const doctorCommand: CliCommand = {
  name: 'doctor',
  summary: 'why pod A cannot reach pod B: each hop of the path, OK or the broken link and its fix',
  help,
  async run(argv) {
    const parsed = parseCommandArgs(argv, {
      ...storeFlagOptions,
      lab: { type: 'string' },
      json: { type: 'boolean' },
      protocol: { type: 'string' },
      port: { type: 'string' },
      'subnet-file': { type: 'string' },
      'cache-dir': { type: 'string' },
      'node-name': { type: 'string' },
      'health-addr': { type: 'string' },
    } as const, 2);
    const [srcQuery, dstQuery] = parsed.positionals;
    if (srcQuery === undefined || dstQuery === undefined) throw new UsageError('expected SRC and DST (pod IPs, names or container ids)');
    const v = parsed.values;
    const probe = parseProbe(v.protocol, v.port);
    let topology: Topology;
    let store: { settings: StoreSettings; flags: string };
    if (v.lab !== undefined) {
      const localFlags = ['subnet-file', 'cache-dir', 'node-name', 'health-addr', ...Object.keys(storeFlagOptions)].filter((k) => (v as Record<string, unknown>)[k] !== undefined);
      if (localFlags.length > 0) throw new UsageError(`--lab takes hosts, pods and the store from the lab; drop --${localFlags.join(', --')}`);
      const { requireUpLab } = await import('../lab/lab.js');
      const rec = requireUpLab(parseLabName(v.lab));
      const host0 = rec.hostList[0];
      if (rec.store !== 'file' && process.env[INSIDE_ENV] !== '1' && host0) return rerunInside(host0.ns, argv);
      topology = labTopology(rec);
      store = labStore(rec);
    } else {
      topology = await nodeTopology({
        subnetFile: v['subnet-file'] ?? DEFAULT_SUBNET_FILE, cacheDir: v['cache-dir'] ?? DEFAULT_CACHE_DIR,
        nodeName: v['node-name'], healthAddr: v['health-addr'],
      });
      store = { settings: storeSettingsFrom(v), flags: storeFlagText(v) };
    }
    // An agent-less lab (macvlan) never made a store: nothing to read, nothing to warn about.
    const view = store.settings.type === 'file' && v.lab !== undefined && !existsSync(store.settings.dir)
      ? { leases: [], backend: undefined, world: undefined, problems: [] }
      : await readStore(store.settings);
    const report = await runDoctor({ topology, src: srcQuery, dst: dstQuery, probe, store: view, storeFlags: store.flags });
    process.stdout.write(v.json ? JSON.stringify(report, null, 2) + '\n' : renderReport(report));
    return report.ok ? ExitCode.Ok : ExitCode.Failure;
  },
};

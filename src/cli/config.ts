// weftctl config get|set: read or write the network config at <prefix>/config.
import { readFileSync } from 'node:fs';
import type { CliCommand } from './command.js';
import { parseCommandArgs } from './args.js';
import { ExitCode, UsageError } from './command.js';
import { CniCode, WeftError } from '../errors.js';
import { formatCidr } from '../net/ip.js';
import { parseNetworkConfig, subnetCount } from '../store/config.js';
import { openStore, storeFlagOptions, storeFlagsHelp, storeSettingsFrom } from '../store/flags.js';

const help = `weftctl config — the network config (flannel keys) in the store

Usage:
  weftctl config get [store flags]          print the stored config
  weftctl config set FILE|- [store flags]   validate a config and store it ("-" reads stdin)

Keys: Network, SubnetLen (24), SubnetMin, SubnetMax, EnableIPv4, EnableIPv6, IPv6Network,
IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax, Backend {Type: vxlan|host-gw|udp|bgp, …}.
Network and IPv6Network must be unicast ranges: one overlapping multicast, 240.0.0.0/4,
loopback, link-local, 0.0.0.0/8 or :: is refused. get never creates a store: a file store
that does not exist is an error naming its directory.
bgp's keys: ASN, Peers [{Address, ASN}], NodeMesh, RouteReflector, RouteReflectorNodes,
RouteReflectorClusterID, HoldTime, GracefulRestartTime, ImportPrefixes (IPv4 CIDRs besides
Network whose learned prefixes may be installed, e.g. ["10.99.0.0/16"]; a prefix overlapping the
host's own subnets or holding its next hop or a peer's address is refused whatever it says).

${storeFlagsHelp}
`;

function readInput(source: string): string {
  try {
    return readFileSync(source === '-' ? 0 : source, 'utf8');
  } catch (err) {
    throw new WeftError(CniCode.IoFailure, `cannot read ${source === '-' ? 'stdin' : source}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export const configCommand: CliCommand = {
  name: 'config',
  summary: 'get or set the network config (Network, SubnetLen, Backend, …) in the store',
  help,
  async run(argv) {
    const parsed = parseCommandArgs(argv, storeFlagOptions, 2);
    const [action, source] = parsed.positionals;
    if (action !== 'get' && action !== 'set') throw new UsageError('expected "get" or "set"');
    if (action === 'get' && source !== undefined) throw new UsageError('get takes no argument');
    if (action === 'set' && source === undefined) throw new UsageError('set needs a FILE (or - for stdin)');
    const settings = storeSettingsFrom(parsed.values);
    // Validate before touching the store, so a bad file never gets half-way.
    const text = action === 'set' ? readInput(source ?? '-') : undefined;
    const config = text === undefined ? undefined : parseNetworkConfig(text);
    const store = await openStore(settings, { create: action === 'set' });
    try {
      if (text !== undefined && config) {
        await store.putConfig(text.trim() + '\n');
        const v4 = config.ipv4;
        process.stderr.write(`stored config: ${v4 ? `${formatCidr(v4.network)} in ${subnetCount(v4)} /${v4.subnetLen} subnets, ` : ''}backend ${config.backend.type}\n`);
        return ExitCode.Ok;
      }
      const stored = await store.getConfig();
      if (stored === undefined) throw new WeftError(CniCode.Store, `no network config at ${settings.prefix}/config in ${store.where} (set one with weftctl config set FILE)`);
      process.stdout.write(stored.endsWith('\n') ? stored : stored + '\n');
      return ExitCode.Ok;
    } finally {
      await store.close();
    }
  },
};

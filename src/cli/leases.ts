// weftctl leases list|reserve|release: inspect and manage subnet leases in the store.
import { renderTable } from '../text-table.js';
import type { CliCommand } from './command.js';
import { parseCommandArgs } from './args.js';
import { ExitCode, UsageError } from './command.js';
import { CniCode, WeftError } from '../errors.js';
import { type Cidr, formatCidr, formatIP, ipCompare, tryParseCidr, tryParseIP } from '../net/ip.js';
import { parseNetworkConfig, planAllows } from '../store/config.js';
import { backendTypes } from '../backends/registry.js';
import { encodeLeaseAttrs, parseLease } from '../store/lease.js';
import { openStore, storeFlagOptions, storeFlagsHelp, storeSettingsFrom } from '../store/flags.js';

const help = `weftctl leases — subnet leases in the store

Usage:
  weftctl leases list [--json] [store flags]
  weftctl leases reserve SUBNET --public-ip IP [--ipv6-subnet CIDR --public-ipv6 IP]
                        [--backend-type TYPE] [store flags]
  weftctl leases release SUBNET [store flags]

list      a table of SUBNET, PUBLIC-IP, BACKEND, EXPIRES (with IPV6-SUBNET and PUBLIC-IPV6 when
          a lease has them); --json prints an array of {"subnet","publicIP","backendType",
          "expiresAt"} (expiresAt ISO 8601, null = reservation; "ipv6Subnet", "publicIPv6" added
          for dual-stack and IPv6-only leases).
          An empty store says so on stderr; a file store that does not exist is an error (list
          and release never create one)
reserve   records SUBNET for the node with PUBLIC-IP, without TTL: it never expires, and that
          node's agent picks it up as its own lease
release   deletes the lease or reservation of SUBNET (its node loses it and stops)

${storeFlagsHelp}
`;

interface Row {
  subnet: string;
  publicIP: string;
  backendType: string;
  expiresAt: string | null;
  ipv6Subnet?: string;
  publicIPv6?: string;
}

/** `never`: a reservation; in kube mode a lease is its Node's podCIDR and lives as long as the Node. */
function table(rows: Row[], never: string): string {
  const v6 = rows.some((r) => r.ipv6Subnet !== undefined);
  const head = ['SUBNET', ...(v6 ? ['IPV6-SUBNET'] : []), 'PUBLIC-IP', ...(v6 ? ['PUBLIC-IPV6'] : []), 'BACKEND', 'EXPIRES'];
  const cells = rows.map((r) => [
    r.subnet, ...(v6 ? [r.ipv6Subnet ?? '–'] : []), r.publicIP, ...(v6 ? [r.publicIPv6 ?? '–'] : []), r.backendType, r.expiresAt ?? never,
  ]);
  return renderTable(head, cells);
}

function subnetArg(s: string | undefined): Cidr {
  if (s === undefined) throw new UsageError('missing SUBNET (e.g. 10.244.3.0/24)');
  const c = tryParseCidr(s);
  if (!c) throw new UsageError(`SUBNET: expected a CIDR like 10.244.3.0/24, got ${JSON.stringify(s)}`);
  return c;
}

export const leasesCommand: CliCommand = {
  name: 'leases',
  summary: 'list, reserve or release subnet leases',
  help,
  async run(argv) {
    const parsed = parseCommandArgs(argv, {
      ...storeFlagOptions, json: { type: 'boolean' }, 'public-ip': { type: 'string' }, 'backend-type': { type: 'string' },
      'ipv6-subnet': { type: 'string' }, 'public-ipv6': { type: 'string' },
    } as const, 2);
    const [action, subnetText] = parsed.positionals;
    const v = parsed.values;
    if (action !== 'list' && action !== 'reserve' && action !== 'release') throw new UsageError('expected list, reserve or release');
    if (action === 'list' && subnetText !== undefined) throw new UsageError('list takes no SUBNET');
    const subnet = action === 'list' ? undefined : subnetArg(subnetText);
    let publicIP;
    if (action === 'reserve') {
      if (v['public-ip'] === undefined) throw new UsageError('reserve needs --public-ip');
      publicIP = tryParseIP(v['public-ip']);
      if (!publicIP || publicIP.family !== 4) throw new UsageError(`--public-ip: expected an IPv4 address, got ${JSON.stringify(v['public-ip'])}`);
    }
    let ipv6Subnet: Cidr | undefined;
    let publicIPv6;
    if (v['ipv6-subnet'] !== undefined || v['public-ipv6'] !== undefined) {
      if (action !== 'reserve') throw new UsageError('--ipv6-subnet and --public-ipv6 are for reserve');
      ipv6Subnet = tryParseCidr(v['ipv6-subnet'] ?? '');
      if (!ipv6Subnet || ipv6Subnet.ip.family !== 6) throw new UsageError(`--ipv6-subnet: expected an IPv6 CIDR like fd00:10:244:3::/64, got ${JSON.stringify(v['ipv6-subnet'])}`);
      publicIPv6 = tryParseIP(v['public-ipv6'] ?? '');
      if (!publicIPv6 || publicIPv6.family !== 6) throw new UsageError(`--public-ipv6: expected an IPv6 address, got ${JSON.stringify(v['public-ipv6'])}`);
    }
    // Only reserve writes: listing or releasing never creates a store.
    const store = await openStore(storeSettingsFrom(v), { create: action === 'reserve' });
    try {
      if (action === 'list') {
        const { entries } = await store.listSubnets({ withExpiry: true });
        const rows: Row[] = [];
        for (const e of entries) {
          const p = parseLease(e);
          if (!p.ok) { process.stderr.write(`warning: skipping ${p.reason}\n`); continue; }
          const exp = p.lease.expiresAt;
          rows.push({
            subnet: formatCidr(e.subnet),
            publicIP: formatIP(p.lease.attrs.publicIP),
            backendType: p.lease.attrs.backendType,
            expiresAt: typeof exp === 'number' ? new Date(exp).toISOString() : null,
            ...(p.lease.ipv6Subnet && { ipv6Subnet: formatCidr(p.lease.ipv6Subnet) }),
            ...(p.lease.attrs.publicIPv6 && { publicIPv6: formatIP(p.lease.attrs.publicIPv6) }),
          });
        }
        rows.sort((a, b) => ipCompare(tryParseCidr(a.subnet)!.ip, tryParseCidr(b.subnet)!.ip));
        if (entries.length === 0) process.stderr.write(`no leases in ${store.where}\n`);
        process.stdout.write(v.json ? JSON.stringify(rows, null, 2) + '\n' : table(rows, store.kind === 'kube' ? 'with its Node' : 'never (reserved)'));
        return ExitCode.Ok;
      }
      if (!subnet) throw new UsageError('missing SUBNET');
      if (action === 'release') {
        if (!(await store.deleteSubnet(subnet))) throw new WeftError(CniCode.Store, `no lease for ${formatCidr(subnet)} in ${store.where}`);
        process.stderr.write(`released ${formatCidr(subnet)}\n`);
        return ExitCode.Ok;
      }
      // reserve: the subnet must be one the network config could hand out.
      const configText = await store.getConfig();
      if (configText === undefined) throw new WeftError(CniCode.Store, 'no network config in the store; set one first (weftctl config set FILE)');
      const config = parseNetworkConfig(configText);
      if (!config.ipv4 || !planAllows(config.ipv4, subnet)) {
        throw new WeftError(CniCode.InvalidNetworkConfig,
          `SUBNET ${formatCidr(subnet)} is not a /${config.ipv4?.subnetLen ?? '?'} subnet between SubnetMin and SubnetMax of ${config.ipv4 ? formatCidr(config.ipv4.network) : 'the network'}`);
      }
      // On a dual-stack network a reservation holds both subnets, as the node's lease would.
      if (config.ipv6 && !ipv6Subnet) throw new UsageError('the network config enables IPv6: reserve needs --ipv6-subnet and --public-ipv6 too');
      if (ipv6Subnet && (!config.ipv6 || !planAllows(config.ipv6, ipv6Subnet))) {
        throw new WeftError(CniCode.InvalidNetworkConfig, `--ipv6-subnet ${formatCidr(ipv6Subnet)} is not a /${config.ipv6?.subnetLen ?? '?'} subnet between IPv6SubnetMin and IPv6SubnetMax of ${config.ipv6 ? formatCidr(config.ipv6.network) : 'the network (IPv6 is not enabled)'}`);
      }
      const backendType = v['backend-type'] ?? config.backend.type;
      if (!backendTypes().includes(backendType)) throw new UsageError(`--backend-type: expected one of ${backendTypes().join(', ')}`);
      const value = encodeLeaseAttrs({ publicIP: publicIP!, publicIPv6, backendType, backendData: null });
      const r = await store.writeSubnet(subnet, value, null, { type: 'absent' }, ipv6Subnet);
      if (r.type === 'conflict') throw new WeftError(CniCode.Store, `${formatCidr(subnet)} is already leased or reserved (weftctl leases release it first)`);
      process.stderr.write(`reserved ${formatCidr(subnet)} for ${formatIP(publicIP!)}\n`);
      return ExitCode.Ok;
    } finally {
      await store.close();
    }
  },
};

// weftctl: the operator's CLI. Dispatches to one module per subcommand.
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { WeftError } from '../errors.js';
import { StoreFlagError, storeFlagOptions } from '../store/flags.js';
import { didYouMean, explainParseError, flagsInHelp } from '../suggest.js';
import { weftVersion } from '../version.js';

/** Subcommand modules are loaded lazily so `weftctl cni …` does not pay for the etcd client. */
const loaders: Record<string, () => Promise<CliCommand>> = {
  cni: async () => (await import('./cni.js')).cniCommand,
  config: async () => (await import('./config.js')).configCommand,
  leases: async () => (await import('./leases.js')).leasesCommand,
  demo: async () => (await import('./demo.js')).demoCommand,
  lab: async () => (await import('./lab.js')).labCommand,
  policy: async () => (await import('./policy.js')).policyCommand,
  ns: async () => (await import('./ns.js')).nsCommand,
  install: async () => (await import('./install.js')).installCommand,
  uninstall: async () => (await import('./install.js')).uninstallCommand,
  bgp: async () => (await import('./bgp.js')).bgpCommand,
  status: async () => (await import('./status.js')).statusCommand,
  kube: async () => (await import('./kube.js')).kubeCommand,
  doctor: async () => (await import('./doctor.js')).doctorCommand,
  ui: async () => (await import('./ui.js')).uiCommand,
  flows: async () => (await import('./flows.js')).flowsCommand,
};

const summaries: Record<string, string> = {
  cni: 'run CNI plugins by hand (add, check, del, status, gc, version) like a runtime',
  config: 'get or set the network config (Network, SubnetLen, Backend, …) in the store',
  leases: 'list, reserve or release subnet leases',
  demo: 'single-host demo: two containers on a weft bridge, traffic, egress, clean-up',
  lab: 'a multi-host weft cluster on this machine (up, status, check, bench, down, demo)',
  policy: 'apply, list, get or delete network policies (Kubernetes NetworkPolicy)',
  ns: 'create, label or list namespaces (for namespaceSelector)',
  install: 'install the CNI plugins, conflist and weftd service on this host (or under --root)',
  uninstall: 'remove exactly what weftctl install wrote',
  status: 'this node: lease, backend, peers, last repair, policy, CNI fast path, store',
  bgp: 'BGP sessions of the local weftd (bgp backend): state, uptime, prefixes',
  kube: 'a throwaway Kubernetes control plane (etcd + kube-apiserver) for tests and labs',
  doctor: 'why pod A cannot reach pod B: each hop of the path, OK or the broken link and its fix',
  ui: 'a live web view of hosts, links, BGP sessions, pods and policies, with doctor between two pods',
  flows: 'connections between pods with their verdict (forwarded, or dropped by policy NAME), from every node',
};

function topHelp(): string {
  const lines = [
    'weftctl — operate a weft container network',
    '',
    'Usage: weftctl [STORE FLAGS] COMMAND [ARGS…]   (weftctl COMMAND --help or weftctl help COMMAND for details)',
    '       weftctl --version',
    '',
    'Commands:',
    ...Object.entries(summaries).map(([n, s]) => `  ${n.padEnd(10)} ${s}`),
  ];
  return lines.join('\n') + '\n';
}

/**
 * Store flags may come before the command, as etcdctl and kubectl take their global flags
 * (`weftctl --store etcd leases list`): they are moved behind it, where the command parses them.
 */
export function hoistStoreFlags(argv: readonly string[]): { readonly argv: string[] } | { readonly error: string } {
  const lead: string[] = [];
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith('--') && !['--help', '--version'].includes(argv[i]!)) {
    const arg = argv[i]!;
    const flag = arg.slice(2).split('=')[0]!;
    if (!(flag in storeFlagOptions)) {
      return { error: `unknown option ${JSON.stringify(arg)} before the command (only store flags may come first)${didYouMean(flag, Object.keys(storeFlagOptions), (w) => `--${w}`)}` };
    }
    if (arg.includes('=')) { lead.push(arg); i += 1; continue; }
    if (i + 1 >= argv.length) return { error: `${arg} needs a value` };
    lead.push(arg, argv[i + 1]!);
    i += 2;
  }
  if (lead.length === 0) return { argv: [...argv] };
  const [name, ...rest] = argv.slice(i);
  if (name === undefined) return { error: 'store flags given but no command' };
  return { argv: [name, ...rest, ...lead] };
}

export async function main(rawArgv: string[]): Promise<number> {
  const hoisted = hoistStoreFlags(rawArgv);
  if ('error' in hoisted) {
    process.stderr.write(`weftctl: ${hoisted.error}\n(see weftctl --help)\n`);
    return ExitCode.Usage;
  }
  const [name, ...rest] = hoisted.argv;
  if (name === '--version' || name === 'version') {
    process.stdout.write(`weftctl ${weftVersion()} (node ${process.version})\n`);
    return ExitCode.Ok;
  }
  // `weftctl help lab` is `weftctl lab --help`.
  if (name === 'help' && rest[0] !== undefined && rest[0] in loaders) return main([rest[0], '--help']);
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp());
    return name ? ExitCode.Ok : ExitCode.Usage;
  }
  const load = loaders[name];
  const cmd = load ? await load() : undefined;
  if (!cmd) {
    process.stderr.write(`weftctl: unknown command ${JSON.stringify(name)}${didYouMean(name, Object.keys(loaders))}\n\n${topHelp()}`);
    return ExitCode.Usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(cmd.help.endsWith('\n') ? cmd.help : cmd.help + '\n');
    return ExitCode.Ok;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError || err instanceof StoreFlagError) {
      process.stderr.write(`weftctl ${name}: ${explainParseError(err.message, flagsInHelp(cmd.help))}\n(see weftctl ${name} --help)\n`);
      return ExitCode.Usage;
    }
    const msg = err instanceof WeftError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`weftctl ${name}: ${msg}\n`);
    return ExitCode.Failure;
  }
}

// A command is done when it returns: exit then, rather than when the event loop drains. A gRPC
// connection attempt to an etcd member behind a black hole outlives its client's close() until
// the kernel gives up on the SYN (minutes); the request had long failed with its deadline.
// Output still queued for a full pipe goes first: a reader slower than the command (weftctl flows
// --json | …) otherwise lost all but the first pipe-buffer's worth.
function exitAfterOutput(code: number): void {
  process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
}

main(process.argv.slice(2)).then(
  (code) => { exitAfterOutput(code); },
  (err: unknown) => {
    process.stderr.write(`weftctl: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(ExitCode.Failure);
  },
);

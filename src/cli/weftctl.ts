// weftctl: the operator's CLI. Dispatches to one module per subcommand.
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { WeftError } from '../errors.js';

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
  kube: async () => (await import('./kube.js')).kubeCommand,
  doctor: async () => (await import('./doctor.js')).doctorCommand,
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
  bgp: 'BGP sessions of the local weftd (bgp backend): state, uptime, prefixes',
  kube: 'a throwaway Kubernetes control plane (etcd + kube-apiserver) for tests and labs',
  doctor: 'why pod A cannot reach pod B: each hop of the path, OK or the broken link and its fix',
};

function topHelp(): string {
  const lines = [
    'weftctl — operate a weft container network',
    '',
    'Usage: weftctl COMMAND [ARGS…]   (weftctl COMMAND --help for details)',
    '',
    'Commands:',
    ...Object.entries(summaries).map(([n, s]) => `  ${n.padEnd(10)} ${s}`),
  ];
  return lines.join('\n') + '\n';
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp());
    return name ? ExitCode.Ok : ExitCode.Usage;
  }
  const load = loaders[name];
  const cmd = load ? await load() : undefined;
  if (!cmd) {
    process.stderr.write(`weftctl: unknown command ${JSON.stringify(name)}\n\n${topHelp()}`);
    return ExitCode.Usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(cmd.help.endsWith('\n') ? cmd.help : cmd.help + '\n');
    return ExitCode.Ok;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`weftctl ${name}: ${err.message}\n(see weftctl ${name} --help)\n`);
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
// (stdout and stderr are synchronous on Linux for files, pipes and terminals: nothing is lost.)
main(process.argv.slice(2)).then(
  (code) => { process.exit(code); },
  (err: unknown) => {
    process.stderr.write(`weftctl: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exit(ExitCode.Failure);
  },
);

// weftctl kube up|down: the throwaway Kubernetes control plane (src/kube/controlplane.ts) for
// people and scripts. `up` leaves etcd and kube-apiserver running detached and exits; `down`
// needs nothing but the directory, so it also cleans up after an `up` (or a test) that crashed.
import { resolve } from 'node:path';
import type { CliCommand } from './command.js';
import { ExitCode, UsageError } from './command.js';
import { parseCommandArgs } from './args.js';
import { findKubeBinaries, kubeVersion } from '../kube/binaries.js';
import { startControlPlane, stopControlPlane } from '../kube/controlplane.js';
import { renderTable } from '../text-table.js';

const help = () => `weftctl kube — a throwaway Kubernetes control plane (etcd + kube-apiserver)

Usage:
  weftctl kube up   --dir DIR [--address A] [--port P] [--etcd-port P] [--netns NS] [--json]
  weftctl kube down --dir DIR

up    starts etcd and kube-apiserver ${kubeVersion()} (built once by \`bash scripts/build-kube.sh\`
      into /var/cache/weft/k8s/VERSION, or WEFT_K8S_BIN_DIR) in the background, waits until
      /readyz answers and prints the server, the admin kubeconfig (client certificate in
      system:masters) and the CA. RBAC and the Node authorizer are on; there is no scheduler,
      controller-manager or kubelet. Everything lives in DIR (created if missing): certificates,
      etcd's data, logs/, admin.kubeconfig and controlplane.json with every PID.
down  stops the processes recorded in DIR/controlplane.json (SIGTERM, then SIGKILL; only those
      PIDs, and only while their start time still matches) and removes what up created — DIR
      itself if up made it. Works after a crash of whatever ran up; nothing recorded is no error.

--dir DIR        state directory (required)
--address A      where both listen (default 127.0.0.1)
--port P         API server port (default: a free one; 6443 with --netns)
--etcd-port P    etcd client port, the peer port is P+1 (default: free ones; 2379 with --netns)
--netns NS       run both inside named network namespace NS (ip netns exec); kubectl must then
                 run there too: ip netns exec NS kubectl --kubeconfig DIR/admin.kubeconfig …
--json           up: print {"server","kubeconfig","caFile","dir","kubectl","startupMs","processes"}
`;

const options = {
  dir: { type: 'string' },
  address: { type: 'string' },
  port: { type: 'string' },
  'etcd-port': { type: 'string' },
  netns: { type: 'string' },
  json: { type: 'boolean' },
} as const;

function port(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) throw new UsageError(`--${flag}: expected a port 1..65535, got ${JSON.stringify(v)}`);
  return n;
}

export const kubeCommand: CliCommand = {
  name: 'kube',
  summary: 'a throwaway Kubernetes control plane (etcd + kube-apiserver) for tests and labs',
  get help() { return help(); },
  async run(argv) {
    const { values: v, positionals } = parseCommandArgs(argv, options, 1);
    const action = positionals[0];
    if (action !== 'up' && action !== 'down') throw new UsageError(`expected up or down, got ${JSON.stringify(action ?? '')}`);
    if (v.dir === undefined || v.dir === '') throw new UsageError('--dir DIR is required');
    const dir = resolve(v.dir);
    if (action === 'down') {
      for (const f of ['address', 'port', 'etcd-port', 'netns', 'json'] as const) {
        if (v[f] !== undefined) throw new UsageError(`--${f} does not apply to kube down`);
      }
      const found = await stopControlPlane(dir);
      process.stderr.write(found ? `weftctl kube: stopped the control plane in ${dir}\n` : `weftctl kube: no control plane recorded in ${dir}; nothing to stop\n`);
      return ExitCode.Ok;
    }
    const apiPort = port('port', v.port);
    const etcdPort = port('etcd-port', v['etcd-port']);
    const bins = findKubeBinaries();
    const cp = await startControlPlane({
      dir,
      binaries: bins,
      ...(v.address !== undefined && { address: v.address }),
      ...(v.netns !== undefined && { netns: v.netns }),
      ...(apiPort !== undefined && { apiPort }),
      ...(etcdPort !== undefined && { etcdPort }),
    });
    if (v.json === true) {
      process.stdout.write(JSON.stringify({
        server: cp.server, kubeconfig: cp.adminKubeconfig, caFile: cp.caFile, dir: cp.dir, kubectl: bins.kubectl, startupMs: cp.startupMs, processes: cp.processes,
      }, null, 2) + '\n');
    } else {
      const rows: Array<[string, string]> = [
        ['server', cp.server],
        ['kubeconfig', cp.adminKubeconfig],
        ['ca', cp.caFile],
        ['kubectl', bins.kubectl],
        ['processes', cp.processes.map((p) => `${p.role} ${p.pid}`).join(', ')],
        ['ready in', `${(cp.startupMs / 1000).toFixed(1)} s`],
      ];
      process.stdout.write(`${renderTable([], rows)}\nexport KUBECONFIG=${cp.adminKubeconfig}\n`);
    }
    return ExitCode.Ok;
  },
};

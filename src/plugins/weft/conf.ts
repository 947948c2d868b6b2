// The weft meta plugin's own config keys, and the delegate's config built from them and the
// node's subnet.env — flannel's CNI semantics: keys given in `delegate` win, weft only fills in
// what is missing (type, mtu, ipMasq, gateway flags, hairpinMode) and always owns name, cniVersion and ipam.
import { z } from 'zod';
import type { NetConf } from '../../cni/conf.js';
import { DEFAULT_SUBNET_FILE, type SubnetEnv } from '../../cni/subnet-env.js';
import { formatCidr, networkOf } from '../../net/ip.js';

export const DEFAULT_STATE_DIR = '/var/lib/cni/weft';
export const DEFAULT_IPAM_DATA_DIR = '/var/lib/cni/networks';

/** Delegates that are bridges take the gateway flags; routed/macvlan ones do not know them. */
const BRIDGE_TYPES: ReadonlySet<string> = new Set(['weft-bridge', 'bridge']);

export const weftConfSchema = z
  .object({
    subnetFile: z.string().min(1).default(DEFAULT_SUBNET_FILE),
    /** Where the delegate's effective conf is kept per attachment, for DEL/CHECK. */
    dataDir: z.string().min(1).default(DEFAULT_STATE_DIR),
    delegate: z.object({ type: z.string().min(1).optional() }).passthrough().optional(),
    ipam: z.record(z.unknown()).optional(),
    cniSocket: z.string().min(1).optional(),
    /** false: never hand the call to weftd, always do the work in the plugin process. */
    fastPath: z.boolean().default(true),
  })
  .passthrough();

export type WeftConf = z.infer<typeof weftConfSchema>;

function has(o: Record<string, unknown>, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key) && o[key] !== undefined;
}

/** weft-routed when the backend routes pods without a bridge (bgp), weft-bridge otherwise. */
export function defaultDelegateType(env: SubnetEnv): string {
  return env.backend === 'bgp' ? 'weft-routed' : 'weft-bridge';
}

/** The IPAM section: the conf's top-level `ipam` (flannel's place for it) plus this node's ranges and routes. */
export function buildDelegateIpam(config: WeftConf, env: SubnetEnv): Record<string, unknown> {
  const ipam: Record<string, unknown> = { ...config.ipam };
  if (!has(ipam, 'type')) ipam.type = 'weft-ipam';
  if (!has(ipam, 'dataDir') && ipam.type === 'weft-ipam') ipam.dataDir = DEFAULT_IPAM_DATA_DIR;
  const ranges: Array<Array<{ subnet: string }>> = [];
  if (env.subnet) ranges.push([{ subnet: formatCidr(networkOf(env.subnet)) }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: formatCidr(networkOf(env.ipv6Subnet)) }]);
  ipam.ranges = ranges;
  const routes: unknown[] = Array.isArray(ipam.routes) ? [...(ipam.routes as unknown[])] : [];
  if (env.network) routes.push({ dst: formatCidr(networkOf(env.network)) });
  if (env.ipv6Network) routes.push({ dst: formatCidr(networkOf(env.ipv6Network)) });
  ipam.routes = routes;
  return ipam;
}

/** The delegate's network config for one ADD (also what is saved for DEL). */
export function buildDelegateConf(conf: Pick<NetConf, 'cniVersion' | 'name' | 'raw'>, config: WeftConf, env: SubnetEnv): Record<string, unknown> {
  const d: Record<string, unknown> = { ...config.delegate };
  d.cniVersion = conf.cniVersion;
  d.name = conf.name;
  if (!has(d, 'type')) d.type = defaultDelegateType(env);
  // When weftd masquerades pod egress itself, the bridge must not do it a second time.
  if (!has(d, 'ipMasq')) d.ipMasq = !env.ipMasq;
  // Pod-to-pod traffic across hosts keeps its source address (policy and logs see the pod).
  if (d.ipMasq === true && !has(d, 'ipMasqExclude')) {
    d.ipMasqExclude = [env.network, env.ipv6Network].filter((c) => c !== undefined).map((c) => formatCidr(networkOf(c)));
  }
  if (!has(d, 'mtu')) d.mtu = env.mtu;
  if (typeof d.type === 'string' && BRIDGE_TYPES.has(d.type)) {
    if (!has(d, 'isGateway')) d.isGateway = true;
    // Default gateway follows isGateway, so `isGateway: false` alone is not overridden by it.
    if (!has(d, 'isDefaultGateway')) d.isDefaultGateway = d.isGateway === true;
    // A pod reaching a hostPort or Service that leads back to itself needs its frame sent back
    // out of the port it came in on (podman's and kube-flannel's conflists set this too).
    if (!has(d, 'hairpinMode')) d.hairpinMode = true;
  }
  for (const key of ['dns', 'runtimeConfig', 'args'] as const) {
    if (!has(d, key) && has(conf.raw, key)) d[key] = conf.raw[key];
  }
  d.ipam = buildDelegateIpam(config, env);
  return d;
}

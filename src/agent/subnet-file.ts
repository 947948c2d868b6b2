// weftd's half of the subnet.env contract: write it atomically (temp file + rename, so a CNI
// plugin never reads half a file) and read back the subnet a previous run held, so a restarted
// node asks for the same one.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';
import { mkdirp } from '../fs/mkdir.js';
import { type Cidr, formatCidr, formatIP, networkOf, nthAddress, tryParseCidr } from '../net/ip.js';

export interface SubnetFileContent {
  readonly network: Cidr;
  /** The node's subnet (network address form); written as its first host address. */
  readonly subnet: Cidr;
  readonly mtu: number;
  readonly ipMasq: boolean;
  readonly backend: string;
  /** More KEY=VALUE lines from agent services (e.g. the CNI fast-path socket). */
  readonly extra?: ReadonlyMap<string, string>;
}

export function renderSubnetFile(c: SubnetFileContent): string {
  const lines = [
    `FLANNEL_NETWORK=${formatCidr(c.network)}`,
    `FLANNEL_SUBNET=${formatIP(nthAddress(c.subnet, 1))}/${c.subnet.prefix}`,
    `FLANNEL_MTU=${c.mtu}`,
    `FLANNEL_IPMASQ=${c.ipMasq ? 'true' : 'false'}`,
    `WEFT_BACKEND=${c.backend}`,
  ];
  for (const [k, v] of c.extra ?? []) lines.push(`${k}=${v}`);
  return lines.join('\n') + '\n';
}

export function writeSubnetFile(path: string, c: SubnetFileContent): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  try {
    mkdirp(dir);
    writeFileSync(tmp, renderSubnetFile(c), { mode: 0o644 });
    renameSync(tmp, path);
  } catch (err) {
    throw new WeftError(CniCode.IoFailure, `cannot write subnet file ${path}: ${(err as Error).message}`);
  }
}

/** The subnet (network address form) recorded by a previous run, if the file is there and sane. */
export function readPreviousSubnet(path: string): Cidr | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^FLANNEL_SUBNET=(.+)$/m.exec(text);
  const c = m?.[1] ? tryParseCidr(m[1].trim()) : undefined;
  return c ? networkOf(c) : undefined;
}

// Which CNI spec versions weft speaks, and which commands each version allows. The runtime picks
// the version (the conf's cniVersion); everything we print must be in that version.
import { CniCode, WeftError } from '../errors.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const LATEST_VERSION: CniVersion = '1.1.0';

export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/** The first spec version that has each command (ADD/DEL/VERSION predate every version we speak). */
const INTRODUCED_IN: Record<CniCommand, CniVersion> = {
  ADD: '0.3.0',
  DEL: '0.3.0',
  VERSION: '0.3.0',
  CHECK: '0.4.0',
  STATUS: '1.1.0',
  GC: '1.1.0',
};

export function isCniVersion(v: unknown): v is CniVersion {
  return typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

export function isCniCommand(v: unknown): v is CniCommand {
  return typeof v === 'string' && (CNI_COMMANDS as readonly string[]).includes(v);
}

/** Compares dotted versions numerically ("0.10.0" > "0.4.0"); missing parts count as 0. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((p) => Number.parseInt(p, 10) || 0);
  const pb = b.split('.').map((p) => Number.parseInt(p, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** Result layout family: 0.3.0–0.4.0 share one (ips carry "version"), 1.x another. */
export function isLegacyResultVersion(v: CniVersion): boolean {
  return compareVersions(v, '1.0.0') < 0;
}

export function commandAllowed(version: CniVersion, command: CniCommand): boolean {
  return compareVersions(version, INTRODUCED_IN[command]) >= 0;
}

/** Narrows an untrusted cniVersion, failing with the spec's code 1 like the reference skel. */
export function requireSupportedVersion(v: unknown): CniVersion {
  if (isCniVersion(v)) return v;
  throw new WeftError(
    CniCode.IncompatibleVersion,
    'incompatible CNI versions',
    `config is ${JSON.stringify(v ?? '')}, plugin supports ${JSON.stringify(SUPPORTED_VERSIONS)}`,
  );
}

export function requireCommandAllowed(version: CniVersion, command: CniCommand): void {
  if (!commandAllowed(version, command)) {
    throw new WeftError(
      CniCode.IncompatibleVersion,
      `config version does not allow ${command}`,
      `${command} needs cniVersion ${INTRODUCED_IN[command]} or later, config is ${version}`,
    );
  }
}

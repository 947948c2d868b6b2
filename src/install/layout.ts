// Where an installation puts things. One rule for `--root DIR`: the installation is made as if
// DIR were `/` AND is used in place — every path, both where a file goes and every path written
// into a file (launchers, conflist, unit, env file), lives under DIR. So a test's temporary root
// is a complete, runnable installation, and `--root /` (the default) is a host install.
import { isAbsolute, join, resolve } from 'node:path';
import { CniCode, WeftError } from '../errors.js';

export const DEFAULTS = {
  libDir: '/opt/weft',
  cniBinDir: '/opt/cni/bin',
  cniConfDir: '/etc/cni/net.d',
  confName: '10-weft.conflist',
  etcDir: '/etc/weft',
  systemdDir: '/etc/systemd/system',
  unitName: 'weftd.service',
  manifest: '/var/lib/weft/install-manifest.json',
  subnetFile: '/run/weft/subnet.env',
  storeDir: '/var/lib/weft/store',
  cniStateDir: '/var/lib/cni/weft',
  ipamDataDir: '/var/lib/cni/networks',
} as const;

export interface LayoutOptions {
  readonly root?: string;
  readonly libDir?: string;
  readonly cniBinDir?: string;
  readonly cniConfDir?: string;
  readonly manifest?: string;
  readonly subnetFile?: string;
  readonly storeDir?: string;
  /** false: no systemd unit (the DaemonSet runs weftd in a pod). */
  readonly systemd?: boolean;
}

export interface Layout {
  readonly root: string;
  /** The self-contained weft tree (launchers, bundles, addon, runtime modules). */
  readonly libDir: string;
  readonly cniBinDir: string;
  readonly cniConfDir: string;
  readonly conflist: string;
  readonly etcDir: string;
  readonly envFile: string;
  readonly netConfFile: string;
  readonly unitFile: string | undefined;
  readonly manifest: string;
  readonly subnetFile: string;
  readonly storeDir: string;
  readonly cniStateDir: string;
  readonly ipamDataDir: string;
}

/**
 * A default is placed under root; an explicit path is taken as given when absolute (the caller
 * meant that place) and under root when relative to it would be surprising, so relative paths
 * are rejected instead.
 */
function under(root: string, flag: string, given: string | undefined, fallback: string): string {
  if (given === undefined) return join(root, fallback);
  if (!isAbsolute(given)) throw new WeftError(CniCode.InvalidEnvironment, `--${flag}: expected an absolute path, got ${JSON.stringify(given)}`);
  return resolve(given);
}

export function resolveLayout(o: LayoutOptions): Layout {
  const root = resolve(o.root ?? '/');
  const etcDir = join(root, DEFAULTS.etcDir);
  const cniConfDir = under(root, 'cni-conf-dir', o.cniConfDir, DEFAULTS.cniConfDir);
  return {
    root,
    libDir: under(root, 'lib-dir', o.libDir, DEFAULTS.libDir),
    cniBinDir: under(root, 'cni-bin-dir', o.cniBinDir, DEFAULTS.cniBinDir),
    cniConfDir,
    conflist: join(cniConfDir, DEFAULTS.confName),
    etcDir,
    envFile: join(etcDir, 'weftd.env'),
    netConfFile: join(etcDir, 'net-conf.json'),
    unitFile: o.systemd === false ? undefined : join(root, DEFAULTS.systemdDir, DEFAULTS.unitName),
    manifest: under(root, 'manifest', o.manifest, DEFAULTS.manifest),
    subnetFile: under(root, 'subnet-file', o.subnetFile, DEFAULTS.subnetFile),
    storeDir: under(root, 'store-dir', o.storeDir, DEFAULTS.storeDir),
    cniStateDir: join(root, DEFAULTS.cniStateDir),
    ipamDataDir: join(root, DEFAULTS.ipamDataDir),
  };
}

// Where the real Kubernetes binaries (kube-apiserver, kubectl, etcd) of the throwaway control
// plane live. scripts/build-kube.sh builds them from the Go module proxy once per machine into
// /var/cache/weft/k8s/<version>/ — outside the checkout, so a fresh clone or `git clean` does not
// pay for a multi-minute Go build again. kubectl and etcd come from the same build because
// Debian's are far too old for a 1.37 API server (kubectl's skew policy is one minor version).
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';

/** The Kubernetes release the tests, the lab and the benchmarks run against. */
export const KUBE_VERSION = 'v1.37.2';

/** build-kube.sh's default cache root (it honours WEFT_K8S_CACHE the same way). */
export const KUBE_CACHE_ROOT = '/var/cache/weft/k8s';

export interface KubeBinaries {
  readonly version: string;
  readonly dir: string;
  readonly kubeApiserver: string;
  readonly kubectl: string;
  readonly etcd: string;
}

export function kubeVersion(env: NodeJS.ProcessEnv = process.env): string {
  return env.WEFT_K8S_VERSION || KUBE_VERSION;
}

/** WEFT_K8S_BIN_DIR, else the build script's cache directory for the version. */
export function kubeBinDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.WEFT_K8S_BIN_DIR || join(env.WEFT_K8S_CACHE || KUBE_CACHE_ROOT, kubeVersion(env));
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The three binaries, or a WeftError naming the missing ones and the command that builds them. */
export function findKubeBinaries(env: NodeJS.ProcessEnv = process.env): KubeBinaries {
  const dir = kubeBinDir(env);
  const bins: KubeBinaries = {
    version: kubeVersion(env),
    dir,
    kubeApiserver: join(dir, 'kube-apiserver'),
    kubectl: join(dir, 'kubectl'),
    etcd: join(dir, 'etcd'),
  };
  const missing = [bins.kubeApiserver, bins.kubectl, bins.etcd].filter((p) => !executable(p));
  if (missing.length > 0) {
    const how = env.WEFT_K8S_BIN_DIR
      ? `WEFT_K8S_BIN_DIR=${dir} lacks them; unset it or point it at a directory holding all three`
      : `build them with \`bash scripts/build-kube.sh\` (once per machine, several minutes; WEFT_K8S_VERSION=${bins.version})`;
    throw new WeftError(CniCode.InvalidEnvironment, `Kubernetes ${bins.version} binaries not found: ${missing.join(', ')}; ${how}`);
  }
  return bins;
}

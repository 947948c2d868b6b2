// Where a worker thread's script is. A bundled weftd (dist/weftd/, and an install, which has no
// tsc output at all) runs each worker's own bundle, built beside weftd's by
// scripts/bundle-plugins.mjs; tsc's output is used when it is newer (a tsc run after the last
// bundling) or the only one there. `moduleUrl` is the caller's import.meta.url, which under the
// bundle is still its tsc path (dist/src/<dir>/<file>.js), so both are found relative to it.
import { existsSync, statSync } from 'node:fs';

export function workerScript(moduleUrl: string, name: string): URL {
  const bundled = new URL(`../../weftd/${name}.bundle.cjs`, moduleUrl);
  const tsc = new URL(`./${name}.js`, moduleUrl);
  if (!existsSync(bundled)) return tsc;
  if (!existsSync(tsc)) return bundled;
  return statSync(bundled).mtimeMs >= statSync(tsc).mtimeMs ? bundled : tsc;
}

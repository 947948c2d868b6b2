// weft's version, for --version: package.json's, read where the running code finds it (a
// checkout's dist/, an install's lib dir, weftd's bundle all keep package.json above them).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function weftVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'weft' && typeof pkg.version === 'string') return pkg.version;
    } catch { /* not here */ }
    dir = dirname(dir);
  }
  return 'unknown';
}

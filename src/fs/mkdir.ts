// `mkdir -p` that reports what really went wrong. Node's recursive mkdirSync answers ENOENT for a
// directory it cannot create on a read-only filesystem (it sees EROFS, then retries the parent,
// which exists), so a read-only /var/lib/cni read as "no such file or directory". Creating one
// level at a time keeps the errno of the level that failed, with that directory's path.
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** Creates dir and any missing parents; throws the failing level's own error (EROFS, ENOSPC, EACCES, ENOTDIR). */
export function mkdirp(dir: string, mode = 0o755): void {
  const path = resolve(dir);
  try {
    mkdirSync(path, { mode });
    return;
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'EEXIST') {
      if (statSync(path).isDirectory()) return;
      throw err;
    }
    const parent = dirname(path);
    if (code !== 'ENOENT' || parent === path) throw err;
    mkdirp(parent, mode);
  }
  // The parent exists now; a path that still cannot be made (e.g. under /proc) fails here, once.
  try {
    mkdirSync(path, { mode });
  } catch (err) {
    if (errnoOf(err) !== 'EEXIST' || !statSync(path).isDirectory()) throw err;
  }
}

// The record of one installation: every path install wrote, so uninstall removes exactly that
// and a second install knows which files are its own to replace.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';
import { CniCode, WeftError } from '../errors.js';

const entrySchema = z.discriminatedUnion('kind', [
  /** A file weft wrote, with its content hash: a file changed since is left alone. */
  z.object({ kind: z.literal('file'), path: z.string(), sha256: z.string() }),
  z.object({ kind: z.literal('symlink'), path: z.string(), target: z.string() }),
  /** A directory weft owns wholly (the lib dir): removed with everything in it. */
  z.object({ kind: z.literal('tree'), path: z.string() }),
  /** A directory install had to create: removed when it is empty again. */
  z.object({ kind: z.literal('dir'), path: z.string() }),
]);

export type ManifestEntry = z.infer<typeof entrySchema>;

const manifestSchema = z.object({
  format: z.literal(1),
  weftVersion: z.string(),
  root: z.string(),
  installedAt: z.string(),
  entries: z.array(entrySchema),
});

export type Manifest = z.infer<typeof manifestSchema>;

export function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function readManifest(path: string): Manifest | undefined {
  if (!existsSync(path)) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new WeftError(CniCode.DecodeFailure, `install manifest ${path}: not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new WeftError(CniCode.InvalidNetworkConfig, `install manifest ${path}: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`);
  }
  return parsed.data;
}

export function renderManifest(m: Manifest): string {
  return JSON.stringify(m, null, 2) + '\n';
}

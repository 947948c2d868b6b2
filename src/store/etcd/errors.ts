// etcd errors in plain words, kept apart from the etcd client so that code reporting them (the
// key/value view) does not load gRPC until an etcd store is opened.
import { WeftError } from '../../errors.js';

/**
 * A failed etcd call in plain words. gRPC says "14 UNAVAILABLE: No connection established. Last
 * error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: " where the cause is
 * "cannot connect: connect ECONNREFUSED 127.0.0.1:1"; other failures keep etcd's own message
 * without gRPC's status prefix.
 */
export function describeEtcdError(err: unknown): string {
  if (err instanceof WeftError) return err.message;
  const msg = (err instanceof Error ? err.message : String(err)).trim();
  const body = msg.replace(/^\d+ [A-Z_]+: /, '');
  const noConnection = /^No connection established\. Last error: (?:[A-Za-z]*Error: )?(.*?)(?:\s*\(\d{4}-[^)]*\))?\.?(?:\s*Resolution note:\s*(.*))?$/s.exec(body);
  if (noConnection) {
    const note = noConnection[2]?.trim();
    return `cannot connect: ${noConnection[1]}${note ? ` (${note})` : ''}`;
  }
  return body.replace(/\s*Resolution note:\s*$/, '') || msg;
}

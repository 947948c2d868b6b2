// The namespaces one throwaway topology makes (lab topologies, rack topologies): each named
// `${prefix}-${id}-${what}` so several topologies coexist, created with lo up, and remembered so
// removeAll() can take away exactly those — also after a build failed half way.
import { randomBytes } from 'node:crypto';
import { Netlink } from '../netlink/index.js';
import { createNamedNetns, deleteNamedNetns } from '../netns/index.js';

export class NamespaceSet {
  /** A random tag shared by every name of this set. */
  readonly id = randomBytes(3).toString('hex');
  private readonly made: string[] = [];

  constructor(private readonly prefix: string) {}

  /** The full namespace name for a role (`u`, `h0`, `c0x1` …). */
  name(what: string): string {
    return `${this.prefix}-${this.id}-${what}`;
  }

  /** Creates the named namespace with lo up; returns its path. */
  create(name: string): string {
    const path = createNamedNetns(name);
    this.made.push(name);
    Netlink.with(path, (nl) => nl.setLink('lo', { up: true }));
    return path;
  }

  /** Deletes every namespace created, newest first (idempotent); returns what could not be removed. */
  removeAll(): unknown[] {
    const errors: unknown[] = [];
    for (const name of this.made.splice(0).reverse()) {
      try {
        deleteNamedNetns(name);
      } catch (err) {
        errors.push(err);
      }
    }
    return errors;
  }
}

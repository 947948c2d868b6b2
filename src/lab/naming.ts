// How a lab names what it makes. Every namespace of lab NAME is `weftlab-NAME-…` and its state
// lives in /run/weft-lab/NAME/, so `down` can find all of it from the name alone — after a crash
// or kill -9 nothing needs to have been recorded. Lab names have no '-', which keeps one lab's
// prefix from being the start of another's ("weftlab-a-" never matches lab "a-b").
import { join } from 'node:path';
import { CniCode, WeftError } from '../errors.js';

export const LAB_NS_PREFIX = 'weftlab';
export const DEFAULT_LAB_ROOT = '/run/weft-lab';
export const DEFAULT_LAB_NAME = 'weft';

const NAME_RE = /^[a-z0-9][a-z0-9_]{0,15}$/;

/** A checked lab name: lower-case letters, digits and '_', at most 16. */
export type LabName = string & { readonly __labName: unique symbol };

export function parseLabName(raw: string): LabName {
  if (!NAME_RE.test(raw)) {
    throw new WeftError(CniCode.InvalidEnvironment, `invalid lab name ${JSON.stringify(raw)}: use 1–16 lower-case letters, digits or '_' (no '-'), starting with a letter or digit`);
  }
  return raw as LabName;
}

/** Every namespace of this lab starts with this. */
export function labNsPrefix(name: LabName): string {
  return `${LAB_NS_PREFIX}-${name}-`;
}

/** The root for lab state dirs; WEFT_LAB_ROOT moves it (tests, several users). */
export function labRoot(env: NodeJS.ProcessEnv = process.env): string {
  const r = env.WEFT_LAB_ROOT;
  return r !== undefined && r !== '' ? r : DEFAULT_LAB_ROOT;
}

export function labStateDir(name: LabName, root = labRoot()): string {
  return join(root, name);
}

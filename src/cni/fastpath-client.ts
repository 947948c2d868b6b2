// The plugin side of weftd's CNI fast path: hand {env, stdin} to the agent over a unix socket and
// print what it answers. Deliberately tiny (node:net, node:fs and the subnet.env reader only): it
// runs on every plugin start, and when weftd answers nothing else — zod, netlink, the bridge —
// is ever loaded.
//
// Wire format: the client writes one JSON object {env, stdin} and half-closes; weftd replies
// with one JSON object {stdout, exitCode} and closes. Half-close framing keeps both sides free of
// length prefixes and makes "the reply is complete" the same event as "the stream ended".
// A request with "reply":"raw" (the native client, native/cni_client.c, which has no JSON
// parser) is answered "<exitCode> <byteLength>\n<stdout bytes>" instead; the length lets the
// client tell a complete answer from one cut off by a dying weftd.
//
// The native client tries the socket before Node starts; when it falls back to the Node plugin
// it passes what happened in WEFT_CNI_FASTPATH_OUTCOME ("unavailable <reason>" or "lost
// <reason>"), so the socket is not tried twice and the retry rule stays in src/plugins/weft/main.ts.
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { readSubnetEnvText, DEFAULT_SUBNET_FILE } from './subnet-env.js';

export const DEFAULT_CNI_SOCKET = '/run/weft/cni.sock';

/** The socket lives next to subnet.env unless told otherwise (so /run/weft/cni.sock by default). */
export function defaultCniSocket(subnetFile: string): string {
  return join(dirname(subnetFile), 'cni.sock');
}

/** What is forwarded: the CNI variables only, never the plugin's wider environment. */
export const FASTPATH_ENV_KEYS = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH'] as const;

export interface FastPathRequest {
  env: Record<string, string>;
  stdin: string;
  /** How the reply is framed: JSON {stdout, exitCode} (default) or raw (see above). */
  reply?: 'json' | 'raw';
}

/** Set by the native client for the Node plugin it falls back to. */
export const FASTPATH_OUTCOME_ENV = 'WEFT_CNI_FASTPATH_OUTCOME';

export interface FastPathReply {
  stdout: string;
  exitCode: number;
}

export type FastPathOutcome =
  | ({ kind: 'answered' } & FastPathReply)
  /** The request never reached weftd (no socket, refused, connect timeout): do the work locally. */
  | { kind: 'unavailable'; reason: string }
  /** weftd accepted the request but gave no complete answer; what it did is unknown. */
  | { kind: 'lost'; reason: string };

export interface FastPathOptions {
  /** Connecting to a live unix socket takes microseconds; anything slower means weftd is wedged. */
  connectTimeoutMs?: number;
  /** How long weftd may take to answer once it has the request. */
  replyTimeoutMs?: number;
}

export function fastPathEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of FASTPATH_ENV_KEYS) {
    const v = env[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * Which socket to try for this network config, or undefined when the fast path is off
 * (`"fastPath": false`) or the config is not even JSON (the local plugin reports that properly).
 * Order: the conf's `cniSocket`, then WEFT_CNI_SOCKET in subnet.env, then cni.sock next to
 * subnet.env (weftd's default).
 */
export async function fastPathSocketFor(stdin: string): Promise<string | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const conf = raw as Record<string, unknown>;
  if (conf.fastPath === false) return undefined;
  if (typeof conf.cniSocket === 'string' && conf.cniSocket !== '') return conf.cniSocket;
  const subnetFile = typeof conf.subnetFile === 'string' && conf.subnetFile !== '' ? conf.subnetFile : DEFAULT_SUBNET_FILE;
  try {
    const pairs = await readSubnetEnvText(subnetFile);
    const fromFile = pairs?.get('WEFT_CNI_SOCKET');
    if (fromFile) return fromFile;
  } catch {
    // An unreadable subnet file is the local plugin's error to report, with its proper code.
  }
  return defaultCniSocket(subnetFile);
}

function parseReply(text: string): FastPathReply | undefined {
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null) return undefined;
    const { stdout, exitCode } = v as Record<string, unknown>;
    if (typeof stdout !== 'string' || typeof exitCode !== 'number' || !Number.isInteger(exitCode)) return undefined;
    return { stdout, exitCode };
  } catch {
    return undefined;
  }
}

/** Sends one request to weftd. Never rejects: every failure is an outcome the caller decides on. */
export function callFastPath(socketPath: string, req: FastPathRequest, opts: FastPathOptions = {}): Promise<FastPathOutcome> {
  const connectTimeoutMs = opts.connectTimeoutMs ?? 250;
  const replyTimeoutMs = opts.replyTimeoutMs ?? 120_000;
  return new Promise((resolve) => {
    let connected = false;
    let settled = false;
    const chunks: Buffer[] = [];
    const sock = connect({ path: socketPath });
    const finish = (o: FastPathOutcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(o);
    };
    let timer = setTimeout(() => finish({ kind: 'unavailable', reason: `no connection to ${socketPath} within ${connectTimeoutMs} ms` }), connectTimeoutMs);
    sock.on('connect', () => {
      connected = true;
      clearTimeout(timer);
      timer = setTimeout(() => finish({ kind: 'lost', reason: `weftd did not answer within ${replyTimeoutMs} ms` }), replyTimeoutMs);
      sock.end(JSON.stringify(req));
    });
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => {
      const reply = parseReply(Buffer.concat(chunks).toString('utf8'));
      finish(reply ? { kind: 'answered', ...reply } : { kind: 'lost', reason: 'weftd closed the connection without a complete answer' });
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const reason = `${socketPath}: ${err.code ?? err.message}`;
      finish(connected ? { kind: 'lost', reason } : { kind: 'unavailable', reason });
    });
    sock.on('close', () => finish(connected ? { kind: 'lost', reason: 'connection closed before an answer' } : { kind: 'unavailable', reason: 'connection closed' }));
  });
}

/** The raw reply framing: "<exitCode> <byteLength>\n" then the stdout bytes. */
export function encodeRawReply(reply: FastPathReply): Buffer {
  const body = Buffer.from(reply.stdout, 'utf8');
  return Buffer.concat([Buffer.from(`${reply.exitCode} ${body.length}\n`), body]);
}

/** The inverse of encodeRawReply; undefined for anything incomplete or malformed. */
export function parseRawReply(data: Buffer): FastPathReply | undefined {
  const nl = data.indexOf(0x0a);
  if (nl < 0) return undefined;
  const m = /^(\d{1,3}) (\d+)$/.exec(data.subarray(0, nl).toString('latin1'));
  if (!m) return undefined;
  const exitCode = Number(m[1]);
  const length = Number(m[2]);
  if (exitCode > 255 || data.length - nl - 1 !== length) return undefined;
  return { stdout: data.subarray(nl + 1).toString('utf8'), exitCode };
}

/**
 * The outcome the native client already had (WEFT_CNI_FASTPATH_OUTCOME), or undefined when it
 * did not try (no native client, or it left the decision to Node). Anything unrecognised is
 * treated as not tried: the socket is then tried here, which is always safe before a request.
 */
export function relayedOutcome(env: NodeJS.ProcessEnv): Exclude<FastPathOutcome, { kind: 'answered' }> | undefined {
  const v = env[FASTPATH_OUTCOME_ENV];
  if (v === undefined) return undefined;
  const m = /^(unavailable|lost) (.*)$/s.exec(v);
  if (!m) return undefined;
  return { kind: m[1] as 'unavailable' | 'lost', reason: m[2]! };
}

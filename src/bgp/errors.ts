// The one error a BGP decoder or FSM check raises: it names the NOTIFICATION that must be sent to
// the peer, so the session can answer a malformed message without any further interpretation.
import { CniCode, WeftError } from '../errors.js';

export interface NotificationSpec {
  readonly code: number;
  readonly subcode: number;
  readonly data: Buffer;
}

export class BgpError extends WeftError {
  readonly notification: NotificationSpec;

  constructor(code: number, subcode: number, message: string, data: Uint8Array = Buffer.alloc(0)) {
    super(CniCode.DecodeFailure, `${message} (NOTIFICATION ${code}/${subcode})`);
    this.notification = { code, subcode, data: Buffer.from(data) };
  }
}

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: BgpError };

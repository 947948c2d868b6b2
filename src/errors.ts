// One error type for the whole program. It carries a CNI error code (spec codes, or 100+ for
// weft's own) so every layer can throw it and the CNI skeleton can print it unchanged.

export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  PluginNotAvailable: 50,
  PluginNotAvailableLimited: 51,
  // weft-specific (100+)
  Internal: 100,
  Netlink: 101,
  Namespace: 102,
  IpamExhausted: 103,
  Store: 104,
  Timeout: 105,
} as const;

export type CniCode = (typeof CniCode)[keyof typeof CniCode] | number;

export class WeftError extends Error {
  override readonly name = 'WeftError';
  readonly code: CniCode;
  readonly details: string;

  constructor(code: CniCode, msg: string, details = '', options?: { cause?: unknown }) {
    super(msg, options);
    this.code = code;
    this.details = details;
  }

  static wrap(err: unknown, code: CniCode = CniCode.Internal, context?: string): WeftError {
    if (err instanceof WeftError) {
      return context ? new WeftError(err.code, `${context}: ${err.message}`, err.details, { cause: err }) : err;
    }
    const msg = err instanceof Error ? err.message : String(err);
    return new WeftError(code, context ? `${context}: ${msg}` : msg, '', { cause: err });
  }
}

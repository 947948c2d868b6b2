// The shape every weftctl subcommand has. Each lives in its own module and is listed once in
// weftctl.ts; it parses its own flags (node:util parseArgs) and returns an exit code.

export interface CliCommand {
  readonly name: string;
  /** One line for the top-level --help. */
  readonly summary: string;
  /** Full help text for `weftctl NAME --help`. */
  readonly help: string;
  run(argv: string[]): Promise<number>;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Exit codes shared by weftctl and weftd. */
export const ExitCode = { Ok: 0, Failure: 1, Usage: 2 } as const;

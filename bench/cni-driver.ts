// The timing half of the CNI benchmark. bench/cni.ts starts this process inside the benchmark's
// "host" namespace (nsenter --net), so every plugin it execs inherits that namespace the way a
// plugin inherits the runtime's; the cost of entering the namespace is paid once, here, and is
// in neither side's numbers. Reads a plan (JSON) on stdin, writes what happened (JSON) on stdout.
import { spawn } from 'node:child_process';
import { z } from 'zod';

const execSchema = z.object({
  label: z.string(),
  argv: z.array(z.string()).min(1),
  env: z.record(z.string()),
  stdin: z.string(),
});
export type PlannedExec = z.infer<typeof execSchema>;

const stepSchema = z.object({
  /** sequential: one exec after the other, each timed; parallel: all at once, also timed as a whole. */
  mode: z.enum(['sequential', 'parallel']),
  execs: z.array(execSchema),
});
export type PlannedStep = z.infer<typeof stepSchema>;
const planSchema = z.array(stepSchema);

export interface ExecOutcome {
  label: string;
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

export interface StepOutcome {
  execs: ExecOutcome[];
  /** From the first spawn to the last exit. */
  totalMs: number;
}

function runOne(e: PlannedExec): Promise<ExecOutcome> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(e.argv[0]!, e.argv.slice(1), { env: e.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      resolve({ label: e.label, ms, code: code ?? (signal ? 128 : -1), stdout, stderr: stderr.slice(0, 4000) });
    });
    // A plugin that fails on its environment may exit before reading its config.
    child.stdin.on('error', () => {});
    child.stdin.end(e.stdin);
  });
}

async function runStep(step: PlannedStep): Promise<StepOutcome> {
  const t0 = process.hrtime.bigint();
  const execs: ExecOutcome[] = [];
  if (step.mode === 'parallel') {
    execs.push(...(await Promise.all(step.execs.map(runOne))));
  } else {
    for (const e of step.execs) execs.push(await runOne(e));
  }
  return { execs, totalMs: Number(process.hrtime.bigint() - t0) / 1e6 };
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const plan = planSchema.parse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
  const out: StepOutcome[] = [];
  for (const step of plan) out.push(await runStep(step));
  process.stdout.write(JSON.stringify(out));
}

main().catch((err: unknown) => {
  process.stderr.write(`cni-driver: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});

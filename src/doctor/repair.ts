// What to add to a fix for an entry weftd owns: its repair pass puts the entry back by itself
// when weftd is alive, so a missing one with a live weftd points at weftd (its log), a missing
// one with a dead weftd at the agent.
import type { DoctorContext, DoctorNode } from './types.js';

export function repairHint(ctx: DoctorContext, node: DoctorNode): string {
  const a = ctx.srcAgent;
  if (a === undefined) return `; weftd on ${node.name} puts it back on its next repair pass, if it runs`;
  if (a.ok) return `; weftd on ${node.name} answers /healthz but has not put it back: see its log`;
  return `; weftd on ${node.name} would put it back, but it does not answer /healthz (see its hop)`;
}

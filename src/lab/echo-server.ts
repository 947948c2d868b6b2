// The lab's per-container TCP echo server (run inside a container namespace by the lab):
// `node echo-server.js PORT READY_FILE`. It echoes every byte back and touches READY_FILE once
// listening, so `up` knows it can be probed. No imports from the project: it must start fast.
import { createServer } from 'node:net';
import { writeFileSync } from 'node:fs';

const port = Number(process.argv[2]);
const ready = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || ready === undefined) {
  process.stderr.write('usage: echo-server PORT READY_FILE\n');
  process.exit(2);
}
const server = createServer((s) => {
  s.on('error', () => s.destroy());
  s.pipe(s);
});
// '::' takes IPv4 connections too (as v4-mapped addresses): one server for dual-stack labs.
server.listen({ port, host: '::', ipv6Only: false }, () => writeFileSync(ready, `${process.pid}\n`));

// Traffic for the conntrack bypass suites, run inside namespaces (`ip netns exec NS node this …`).
// Unlike policy-probe it reports where a UDP answer came from (an unconnected socket takes a
// reply from any address, and a DNATed reply that conntrack did not un-DNAT comes from the pod,
// not from the address asked), and its server can speak first.
//   serve TCPPORT UDPPORT UDPADDR  TCP echo on every address, UDP echo bound to UDPADDR; prints
//                                  "ready"; each stdin line is written to every open TCP connection
//   probe JSON                     [{ip, proto, port, localPort?}] → [{…, ok, from}]: TCP connect +
//                                  echo, UDP echo (from: the answer's address:port)
//   hold IP PORT [LOCALPORT]       one TCP connection: prints "connected", "got LINE" per line
//                                  received, "closed" or "error CODE"; stdin lines are sent
import { createServer, connect, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const TIMEOUT_MS = Number(process.env.PROBE_TIMEOUT_MS ?? 1000);

interface Target { ip: string; proto: 'tcp' | 'udp'; port: number; localPort?: number }

function serve(tcpPort: number, udpPort: number, udpAddr: string): void {
  const conns = new Set<Socket>();
  let pending = 2;
  const ready = () => { if (--pending === 0) process.stdout.write('ready\n'); };
  createServer((s) => {
    conns.add(s);
    s.on('data', (d) => s.write(d));
    s.on('error', () => s.destroy());
    s.on('close', () => conns.delete(s));
  }).listen({ port: tcpPort, host: '::' }, ready);
  const u = createSocket('udp4');
  u.on('message', (msg, r) => u.send(msg, r.port, r.address));
  u.bind({ port: udpPort, address: udpAddr }, ready);
  createInterface({ input: process.stdin }).on('line', (line) => { for (const s of conns) s.write(line + '\n'); });
}

function probeTcp(t: Target): Promise<{ ok: boolean; from?: string }> {
  return new Promise((resolve) => {
    const s = connect({ host: t.ip, port: t.port, ...(t.localPort !== undefined && { localPort: t.localPort }) });
    const done = (ok: boolean) => { clearTimeout(timer); const from = ok ? `${s.remoteAddress}:${s.remotePort}` : undefined; s.destroy(); resolve(from ? { ok, from } : { ok }); };
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    s.on('connect', () => s.write('ping'));
    s.on('data', () => done(true));
    s.on('error', () => done(false));
  });
}

function probeUdp(t: Target): Promise<{ ok: boolean; from?: string }> {
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    const done = (ok: boolean, from?: string) => { clearTimeout(timer); sock.close(); resolve(from ? { ok, from } : { ok }); };
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    sock.on('message', (_m, r) => done(true, `${r.address}:${r.port}`));
    sock.on('error', () => done(false));
    sock.send('ping', t.port, t.ip);
  });
}

async function probe(targets: Target[]): Promise<void> {
  const results = await Promise.all(targets.map(async (t) => ({ ...t, ...(await (t.proto === 'tcp' ? probeTcp(t) : probeUdp(t))) })));
  process.stdout.write(JSON.stringify(results) + '\n');
}

function hold(ip: string, port: number, localPort: number | undefined): void {
  const s = connect({ host: ip, port, ...(localPort !== undefined && { localPort }) });
  s.setEncoding('utf8');
  createInterface({ input: s }).on('line', (line) => process.stdout.write(`got ${line}\n`));
  s.on('connect', () => process.stdout.write('connected\n'));
  s.on('error', (err: NodeJS.ErrnoException) => process.stdout.write(`error ${err.code ?? err.message}\n`));
  s.on('close', () => process.stdout.write('closed\n'));
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => s.write(line + '\n'));
  lines.on('close', () => s.destroy());
}

const [mode, a, b, c] = process.argv.slice(2);
if (mode === 'serve') serve(Number(a), Number(b), c ?? '0.0.0.0');
else if (mode === 'probe') void probe(JSON.parse(a ?? '[]') as Target[]);
else if (mode === 'hold') hold(a ?? '', Number(b), c === undefined ? undefined : Number(c));
else { process.stderr.write('usage: serve|probe|hold\n'); process.exitCode = 2; }

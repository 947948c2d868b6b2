// A tiny traffic tool the policy suites run inside namespaces (`ip netns exec NS node this …`):
//   serve TCPPORTS UDPPORTS [UDPADDRS]  echo servers (comma lists); prints "ready" once all listen
//   probe JSON                [{ip, proto, port, from?}] → prints [{…, ok}] : TCP connect + echo,
//                             UDP echo, ICMP one echo request (ping); `from` binds the source
//                             address (a namespace holding several, e.g. for ipBlock peers)
//   hold IP PORT              keeps one TCP connection; each stdin line is sent and its echo
//                             printed ("echo LINE"), or "dead" when the connection broke
import { createServer, connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { execFile } from 'node:child_process';
import { createInterface } from 'node:readline';

const TIMEOUT_MS = Number(process.env.PROBE_TIMEOUT_MS ?? 400);

interface Target { ip: string; proto: 'tcp' | 'udp' | 'icmp'; port: number; from?: string }

function serve(tcp: number[], udp: number[], udpAddrs: string[]): void {
  // UDP is bound per address: a wildcard socket would answer from the primary address, which
  // conntrack does not take for the reply.
  const binds = udpAddrs.length > 0 ? udpAddrs : ['::'];
  let pending = tcp.length + udp.length * binds.length;
  const ready = () => { if (--pending === 0) process.stdout.write('ready\n'); };
  for (const port of tcp) {
    createServer((s) => { s.on('data', (d) => s.write(d)); s.on('error', () => s.destroy()); }).listen({ port, host: '::' }, ready);
  }
  for (const port of udp) {
    for (const address of binds) {
      const sock = createSocket({ type: address.includes(':') ? 'udp6' : 'udp4' });
      sock.on('message', (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
      sock.bind({ port, address }, ready);
    }
  }
}

function probeTcp(t: Target): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: t.ip, port: t.port, ...(t.from !== undefined && { localAddress: t.from }) });
    const done = (ok: boolean) => { clearTimeout(timer); s.destroy(); resolve(ok); };
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    s.on('connect', () => s.write('ping'));
    s.on('data', () => done(true));
    s.on('error', () => done(false));
  });
}

function probeUdp(t: Target): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createSocket(t.ip.includes(':') ? 'udp6' : 'udp4');
    const done = (ok: boolean) => { clearTimeout(timer); sock.close(); resolve(ok); };
    const timer = setTimeout(() => done(false), TIMEOUT_MS);
    sock.on('message', () => done(true));
    sock.on('error', () => done(false));
    const send = () => sock.send('ping', t.port, t.ip);
    if (t.from !== undefined) sock.bind({ address: t.from, port: 0 }, send);
    else send();
  });
}

/** One echo request: ping's exit status says whether its reply came within the timeout. */
function probeIcmp(t: Target): Promise<boolean> {
  const wait = (TIMEOUT_MS / 1000).toFixed(3);
  return new Promise((resolve) => {
    execFile('ping', ['-n', '-q', '-c', '1', '-W', wait, ...(t.from !== undefined ? ['-I', t.from] : []), t.ip], { timeout: TIMEOUT_MS + 2000 }, (err) => resolve(err === null));
  });
}

async function probe(targets: Target[]): Promise<void> {
  const run = (t: Target) => (t.proto === 'tcp' ? probeTcp(t) : t.proto === 'udp' ? probeUdp(t) : probeIcmp(t));
  const results = await Promise.all(targets.map(async (t) => ({ ...t, ok: await run(t) })));
  process.stdout.write(JSON.stringify(results) + '\n');
}

function hold(ip: string, port: number): void {
  const s = connect({ host: ip, port });
  let alive = false;
  const lines = createInterface({ input: process.stdin });
  s.on('connect', () => { alive = true; process.stdout.write('connected\n'); });
  s.on('error', () => { alive = false; });
  s.on('close', () => { alive = false; });
  s.on('data', (d) => process.stdout.write(`echo ${d.toString().trim()}\n`));
  lines.on('line', (line) => {
    if (!alive) { process.stdout.write('dead\n'); return; }
    s.write(line + '\n');
  });
  lines.on('close', () => s.destroy());
}

const [mode, a, b, c] = process.argv.slice(2);
const ports = (s: string | undefined) => (s ? s.split(',').filter((x) => x !== '').map(Number) : []);
if (mode === 'serve') serve(ports(a), ports(b), (c ?? '').split(',').filter((x) => x !== ''));
else if (mode === 'probe') void probe(JSON.parse(a ?? '[]') as Target[]);
else if (mode === 'hold') hold(a ?? '', Number(b));
else { process.stderr.write('usage: serve|probe|hold\n'); process.exitCode = 2; }

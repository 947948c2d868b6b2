// MP-BGP interop with a real BIRD 2: IPv6 unicast prefixes both ways, first over an IPv4 TCP
// session (IPv6 next hops inside MP_REACH_NLRI, both families on one session), then over an
// IPv6 TCP session (IPv6 only: BIRD offers no IPv4 there, so none is sent):
//   wb6…r (BIRD, AS 65000, 198.18.66.1, 2001:2:0:66::1)  ⇄  wb6…h (weft Speaker, AS 64512, .2, ::2)
// Node cannot open a socket in another namespace, so weft's side runs in a child process started
// with `ip netns exec`: this same file, in child mode, driven by JSON lines on stdin/stdout. The
// child writes learned routes into its namespace's kernel (proto 186), which only accepts a next
// hop it can reach: so the test sees that what BIRD sent is usable, not just decodable.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawnSync } from 'node:child_process';
import * as net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type UpdateMessage, MessageFramer, decodeMessage, encodeKeepalive, encodeOpen } from '../../src/bgp/codec.js';
import { routerIdFromIPv6 } from '../../src/bgp/router-id.js';
import { Speaker, type SpeakerConfigInput } from '../../src/bgp/speaker.js';
import { createLogger } from '../../src/log.js';
import { formatCidr, formatIP, parseIPv4 } from '../../src/net/ip.js';
import { birdPair, waitFor } from './bird-harness.js';

const ROUTE_PROTO = '186';
const BIRD4 = '198.18.66.1';
const HOST4 = '198.18.66.2';
const BIRD6 = '2001:2:0:66::1';
const HOST6 = '2001:2:0:66::2';

// ---------------------------------------------------------------- child modes (run inside the host namespace)

async function runSpeakerChild(): Promise<void> {
  const { announce, ...cfg } = JSON.parse(process.env.WB6_CONFIG ?? '{}') as SpeakerConfigInput & { announce: string[] };
  const speaker = new Speaker(cfg, { logger: createLogger({ child: 'speaker' }, { level: 'warn' }) });
  const say = (o: unknown): void => { process.stdout.write(JSON.stringify(o) + '\n'); };
  speaker.on((e) => {
    if (e.type === 'route-installed') {
      const r = spawnSync('ip', ['route', 'replace', formatCidr(e.prefix), 'via', formatIP(e.nextHop), 'proto', ROUTE_PROTO], { encoding: 'utf8' });
      say({ event: e.type, prefix: formatCidr(e.prefix), nextHop: formatIP(e.nextHop), kernel: r.status === 0 ? 'ok' : r.stderr.trim() });
    } else if (e.type === 'route-removed') {
      spawnSync('ip', ['route', 'del', formatCidr(e.prefix), 'proto', ROUTE_PROTO]);
      say({ event: e.type, prefix: formatCidr(e.prefix) });
    } else if (e.type === 'session-established') {
      say({ event: e.type, families: e.families });
    } else if (e.type === 'end-of-rib') {
      say({ event: e.type, family: e.family, complete: e.complete });
    }
  });
  for (const p of announce) speaker.announce(p);
  await speaker.start();
  say({ event: 'started' });
  for await (const line of createInterface({ input: process.stdin })) {
    const cmd = JSON.parse(line) as { cmd: string; prefix?: string };
    if (cmd.cmd === 'learned') say({ event: 'learned', routes: speaker.learnedRoutes().map((r) => `${r.prefix} via ${r.nextHop}`).sort() });
    if (cmd.cmd === 'withdraw' && cmd.prefix) { speaker.withdraw(cmd.prefix); say({ event: 'withdrawn', prefix: cmd.prefix }); }
    if (cmd.cmd === 'stop') { await speaker.stop(); say({ event: 'stopped' }); }
    if (cmd.cmd === 'exit') process.exit(0);
  }
}

/** Opens a session by hand, offering both families, and dumps what BIRD sends as hex until both End-of-RIBs. */
async function runCaptureChild(): Promise<void> {
  const sock = net.connect({ host: BIRD4, port: 179, localAddress: HOST4 });
  const framer = new MessageFramer();
  const seen: string[] = [];
  const ends = new Set<string>();
  const done = (): void => { process.stdout.write(JSON.stringify(seen) + '\n'); sock.destroy(); process.exit(0); };
  sock.on('connect', () => {
    sock.write(encodeOpen({ asn: 64512, holdTime: 9, bgpId: parseIPv4(HOST4), capabilities: [
      { kind: 'multiprotocol', afi: 1, safi: 1 }, { kind: 'multiprotocol', afi: 2, safi: 1 }, { kind: 'four-octet-asn', asn: 64512 },
    ] }));
  });
  sock.on('data', (c: Buffer) => {
    for (const m of framer.push(c)) {
      seen.push(m.toString('hex'));
      if (m[18] === 1) sock.write(encodeKeepalive());
      const d = decodeMessage(m, { fourOctetAs: true });
      if (d.ok && d.value.type === 'update' && d.value.endOfRib) ends.add(d.value.endOfRib);
      if (ends.size === 2) done();
    }
  });
  sock.on('error', (e) => { process.stderr.write(`capture: ${e.message}\n`); done(); });
  setTimeout(done, 15000).unref();
}

const childMode = process.env.WB6_CHILD;
if (childMode === 'speaker') await runSpeakerChild();
else if (childMode === 'capture') await runCaptureChild();
else registerTests();

// ---------------------------------------------------------------- the tests (root process)

function registerTests(): void {
  const lab = birdPair('wb6');
  const { nsR, nsH, devR, devH, ip, birdc } = lab;
  const self = fileURLToPath(import.meta.url);

  before(async () => {
    lab.link();
    for (const [ns, dev, v4, v6] of [[nsR, devR, BIRD4, BIRD6], [nsH, devH, HOST4, HOST6]] as const) {
      // No duplicate address detection on this two-ended link: the addresses (link-local ones
      // too, which BIRD sends as its second next hop) are usable the moment the link is up.
      ip('netns', 'exec', ns, 'sysctl', '-qw', `net.ipv6.conf.${dev}.accept_dad=0`);
      ip('-n', ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
      ip('-n', ns, 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'set', dev, 'up');
    }
    const session = `
  hold time 9;
  connect retry time 1;
  connect delay time 1;
  error wait time 1, 2;`;
    await lab.startBird(`
router id ${BIRD4};
protocol device {}
protocol static st4 { ipv4; route 10.99.1.0/24 blackhole; }
protocol static st6 { ipv6; route fd00:99:1::/64 blackhole; }
protocol static st6b { ipv6; route fd00:99:2::/64 blackhole; }
protocol bgp weft4 {
  disabled;
  local ${BIRD4} as 65000;
  neighbor ${HOST4} as 64512;${session}
  ipv4 { import all; export where proto = "st4"; };
  ipv6 { import all; export where proto = "st6" || proto = "st6b"; };
}
protocol bgp weft6 {
  disabled;
  local ${BIRD6} as 65000;
  neighbor ${HOST6} as 64512;${session}
  ipv6 { import all; export where proto = "st6" || proto = "st6b"; };
}
`);
  });

  after(() => lab.close());

  interface Line { event: string; [k: string]: unknown }
  interface Child { proc: ChildProcess; lines: Line[]; send(cmd: string, arg?: Record<string, string>): void }
  function startSpeaker(config: SpeakerConfigInput & { announce: string[] }): Child {
    const proc = lab.spawnInHost([process.execPath, self], { WB6_CHILD: 'speaker', WB6_CONFIG: JSON.stringify(config) }, ['pipe', 'pipe', 'inherit']);
    const lines: Line[] = [];
    if (proc.stdout) createInterface({ input: proc.stdout }).on('line', (l) => { try { lines.push(JSON.parse(l) as Line); } catch { /* not ours */ } });
    return { proc, lines, send: (cmd, arg = {}) => proc.stdin?.write(JSON.stringify({ cmd, ...arg }) + '\n') };
  }
  const last = (c: Child, event: string): Line | undefined => c.lines.filter((l) => l.event === event).pop();
  async function ask(c: Child, cmd: string, reply: string, arg?: Record<string, string>): Promise<Line> {
    const n = c.lines.filter((l) => l.event === reply).length;
    c.send(cmd, arg);
    await waitFor(reply, () => c.lines.filter((l) => l.event === reply).length > n);
    return last(c, reply) as Line;
  }
  const learned = async (c: Child): Promise<string[]> => (await ask(c, 'learned', 'learned')).routes as string[];
  async function exit(c: Child): Promise<void> {
    c.send('exit');
    await new Promise<void>((r) => (c.proc.exitCode !== null ? r() : c.proc.once('exit', () => r())));
  }

  /** What BIRD holds from one protocol: "prefix via next hop", both tables. */
  const birdRoutes = (protocol: string): string[] => {
    const out: string[] = [];
    let prefix: string | undefined;
    for (const line of birdc('show', 'route', 'protocol', protocol).split('\n')) {
      const p = /^(\S+\/\d+)\s/.exec(line);
      if (p) { prefix = p[1]; continue; }
      const via = /^\s+via (\S+)/.exec(line);
      if (via && prefix) { out.push(`${prefix} via ${via[1]}`); prefix = undefined; }
    }
    return out.sort();
  };
  /** The host's kernel routes written for learned BGP routes, both families. */
  const kernelRoutes = (): string[] => ['-4', '-6'].flatMap((f) =>
    (JSON.parse(ip('-n', nsH, f, '-json', 'route', 'show', 'proto', ROUTE_PROTO)) as { dst: string; gateway?: string }[]).map((r) => `${r.dst} via ${r.gateway}`)).sort();

  test('capture: BIRD 2 sends IPv6 routes with a 32-byte next hop over an IPv4 session, and our codec reads them', async () => {
    birdc('enable', 'weft4');
    try {
      const proc = lab.spawnInHost([process.execPath, self], { WB6_CHILD: 'capture' }, ['ignore', 'pipe', 'inherit']);
      let out = '';
      proc.stdout?.on('data', (c: Buffer) => { out += c.toString(); });
      await new Promise<void>((r) => proc.once('exit', () => r()));
      const decoded = (JSON.parse(out) as string[]).map((h) => decodeMessage(Buffer.from(h, 'hex'), { fourOctetAs: true }));
      assert.ok(decoded.every((d) => d.ok), 'every message BIRD sent decodes');
      const updates = decoded.flatMap((d) => (d.ok && d.value.type === 'update' ? [d.value] : []));
      const v6 = updates.filter((u): u is UpdateMessage & { ipv6: NonNullable<UpdateMessage['ipv6']> } => u.ipv6 !== undefined);
      assert.deepEqual(v6.flatMap((u) => u.ipv6.nlri.map(formatCidr)).sort(), ['fd00:99:1::/64', 'fd00:99:2::/64']);
      assert.ok(v6.every((u) => formatIP(u.ipv6.nextHop) === BIRD6), 'the interface\'s global address as next hop');
      assert.ok(v6.every((u) => u.ipv6.linkLocalNextHop && formatIP(u.ipv6.linkLocalNextHop).startsWith('fe80:')), 'and its link-local one (RFC 2545: 32 bytes)');
      assert.deepEqual(updates.flatMap((u) => u.nlri.map(formatCidr)), ['10.99.1.0/24']);
      assert.deepEqual(updates.flatMap((u) => (u.endOfRib ? [u.endOfRib] : [])).sort(), ['ipv4', 'ipv6']);
    } finally {
      birdc('disable', 'weft4');
    }
  });

  test('IPv4 session carrying both families (BIRD connecting in): IPv6 prefixes both ways with IPv6 next hops, kernel routes, withdrawals', async () => {
    birdc('enable', 'weft4');
    // Passive on a dual-stack listener: BIRD's connection arrives as ::ffff:198.18.66.1 and must
    // still find its peer.
    const c = startSpeaker({
      asn: 64512, routerId: HOST4, listen: { address: '::', port: 179 }, peers: [{ address: BIRD4, asn: 65000, passive: true }], holdTime: 9,
      nextHopV6: HOST6, announce: ['10.244.1.0/24', 'fd00:10:244:1::/64', 'fd00:10:244:2::/64'],
    });
    try {
      await waitFor('established with BIRD', () => last(c, 'session-established') !== undefined, 20000);
      assert.deepEqual(last(c, 'session-established')?.families, ['ipv4', 'ipv6']);
      await waitFor('IPv6 End-of-RIB from BIRD', () => c.lines.some((l) => l.event === 'end-of-rib' && l.family === 'ipv6'));
      // What BIRD learnt: IPv6 prefixes with our IPv6 next hop, over IPv4 TCP.
      await waitFor('BIRD holds our prefixes', () => birdRoutes('weft4').length === 3, 10000);
      assert.deepEqual(birdRoutes('weft4'), [`10.244.1.0/24 via ${HOST4}`, `fd00:10:244:1::/64 via ${HOST6}`, `fd00:10:244:2::/64 via ${HOST6}`]);
      const detail = birdc('show', 'route', 'fd00:10:244:1::/64', 'all');
      assert.match(detail, /BGP\.as_path: 64512/);
      assert.match(detail, new RegExp(`BGP\\.next_hop: ${HOST6}`));
      // What weft learnt: BIRD's global next hop, and the kernel took it (it is on the link).
      assert.deepEqual(await learned(c), ['10.99.1.0/24 via 198.18.66.1', `fd00:99:1::/64 via ${BIRD6}`, `fd00:99:2::/64 via ${BIRD6}`]);
      assert.ok(c.lines.filter((l) => l.event === 'route-installed').every((l) => l.kernel === 'ok'), JSON.stringify(c.lines));
      await waitFor('kernel routes', () => kernelRoutes().length === 3);
      assert.deepEqual(kernelRoutes(), [`10.99.1.0/24 via ${BIRD4}`, `fd00:99:1::/64 via ${BIRD6}`, `fd00:99:2::/64 via ${BIRD6}`]);

      // Withdrawals both ways: ours of one IPv6 prefix, BIRD's of another.
      await ask(c, 'withdraw', 'withdrawn', { prefix: 'fd00:10:244:2::/64' });
      await waitFor('BIRD dropped fd00:10:244:2::/64', () => birdRoutes('weft4').length === 2);
      assert.deepEqual(birdRoutes('weft4'), [`10.244.1.0/24 via ${HOST4}`, `fd00:10:244:1::/64 via ${HOST6}`]);
      birdc('disable', 'st6b');
      await waitFor('weft dropped fd00:99:2::/64', () => c.lines.some((l) => l.event === 'route-removed' && l.prefix === 'fd00:99:2::/64'));
      assert.deepEqual(await learned(c), ['10.99.1.0/24 via 198.18.66.1', `fd00:99:1::/64 via ${BIRD6}`]);
      await waitFor('kernel route removed', () => kernelRoutes().length === 2);

      // Administrative stop: BIRD withdraws everything of ours, we everything of BIRD's.
      await ask(c, 'stop', 'stopped');
      await waitFor('BIRD withdrew our routes', () => birdRoutes('weft4').length === 0, 10000);
      await waitFor('kernel routes removed', () => kernelRoutes().length === 0, 10000);
    } finally {
      birdc('enable', 'st6b');
      birdc('disable', 'weft4');
      await exit(c);
    }
  });

  test('IPv6 session: an IPv6-only node (router id from its address) exchanges IPv6 routes; IPv4, not offered by BIRD, stays home', async () => {
    birdc('enable', 'weft6');
    const c = startSpeaker({
      asn: 64512, routerId: routerIdFromIPv6(HOST6), listen: { address: HOST6, port: 179 }, peers: [{ address: BIRD6, asn: 65000 }], holdTime: 9, connectRetrySeconds: 1,
      announce: ['fd00:10:244:3::/64', '10.244.3.0/24'],
    });
    try {
      await waitFor('established with BIRD over IPv6', () => last(c, 'session-established') !== undefined, 20000);
      assert.deepEqual(last(c, 'session-established')?.families, ['ipv6']);
      assert.match(birdc('show', 'protocols', 'all', 'weft6'), new RegExp(`Established[\\s\\S]*Neighbor address: +${HOST6}[\\s\\S]*Neighbor ID: +${routerIdFromIPv6(HOST6).replace(/\./g, '\\.')}`));
      // Our IPv6 address on the session is the next hop: no nextHopV6 needed.
      await waitFor('BIRD holds our IPv6 prefix', () => birdRoutes('weft6').length === 1, 10000);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(birdRoutes('weft6'), [`fd00:10:244:3::/64 via ${HOST6}`]);
      await waitFor('IPv6 End-of-RIB from BIRD', () => last(c, 'end-of-rib')?.complete === true);
      assert.deepEqual(await learned(c), [`fd00:99:1::/64 via ${BIRD6}`, `fd00:99:2::/64 via ${BIRD6}`]);
      await waitFor('kernel routes', () => kernelRoutes().length === 2);
      assert.deepEqual(kernelRoutes(), [`fd00:99:1::/64 via ${BIRD6}`, `fd00:99:2::/64 via ${BIRD6}`]);

      await ask(c, 'withdraw', 'withdrawn', { prefix: 'fd00:10:244:3::/64' });
      await waitFor('BIRD dropped our prefix', () => birdRoutes('weft6').length === 0, 10000);
      assert.match(birdc('show', 'protocols', 'weft6'), /Established/, 'a withdrawal, not a reset');
      birdc('disable', 'st6');
      await waitFor('weft dropped fd00:99:1::/64', () => c.lines.some((l) => l.event === 'route-removed' && l.prefix === 'fd00:99:1::/64'));
      assert.deepEqual(await learned(c), [`fd00:99:2::/64 via ${BIRD6}`]);
      await waitFor('kernel route removed', () => kernelRoutes().length === 1);
    } finally {
      birdc('enable', 'st6');
      birdc('disable', 'weft6');
      await exit(c);
    }
  });
}

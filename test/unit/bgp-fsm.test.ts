// FSM transitions (RFC 4271 §8) driven through the runner with a fake clock: every timer is real
// protocol time, advanced instantly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../src/clock.js';
import type { OpenMessage } from '../../src/bgp/codec.js';
import { BgpError } from '../../src/bgp/errors.js';
import { type FsmAction, type FsmConfig, FsmRunner, fsmStep, initialFsmState, negotiateHoldTime } from '../../src/bgp/fsm.js';
import { parseIPv4 } from '../../src/net/ip.js';

const cfg: FsmConfig = {
  localAsn: 64512, peerAsn: 64512, bgpId: parseIPv4('10.0.0.1'), holdTime: 90, passive: false,
  connectRetrySeconds: 120, openHoldSeconds: 240,
};

function open(over: Partial<OpenMessage> = {}): OpenMessage {
  return { type: 'open', version: 4, asn: 64512, holdTime: 30, bgpId: parseIPv4('10.0.0.2'), capabilities: [], ...over };
}

function harness(c: FsmConfig = cfg) {
  const clock = new FakeClock();
  const actions: FsmAction[] = [];
  const runner = new FsmRunner(c, clock, (a) => actions.push(a));
  const take = (): string[] => actions.splice(0).map((a) => a.type === 'send-notification' ? `notify ${a.code}/${a.subcode}` : a.type === 'down' ? `down ${a.reason.kind}` : a.type);
  return { clock, runner, take };
}

function toEstablished(h: ReturnType<typeof harness>, peerHold = 30): void {
  h.runner.dispatch({ type: 'ManualStart' });
  h.runner.dispatch({ type: 'TcpConnected' });
  h.runner.dispatch({ type: 'OpenReceived', open: open({ holdTime: peerHold }) });
  h.runner.dispatch({ type: 'KeepaliveReceived' });
  assert.equal(h.runner.state.name, 'Established');
  h.take();
}

test('connect, fail, retry after ConnectRetry time', () => {
  const h = harness();
  h.runner.dispatch({ type: 'ManualStart' });
  assert.equal(h.runner.state.name, 'Connect');
  assert.deepEqual(h.take(), ['connect']);
  assert.deepEqual(h.runner.activeTimers(), ['connectRetry']);
  h.runner.dispatch({ type: 'TcpConnectionFails' });
  assert.equal(h.runner.state.name, 'Active');
  h.clock.advance(119_000);
  assert.equal(h.runner.state.name, 'Active');
  h.clock.advance(1_000);
  assert.equal(h.runner.state.name, 'Connect');
  assert.deepEqual(h.take(), ['connect']);
  // A connect that hangs is abandoned and retried when the timer fires again.
  h.clock.advance(120_000);
  assert.deepEqual(h.take(), ['disconnect', 'connect']);
});

test('full handshake negotiates the smaller hold time and keeps alive every third of it', () => {
  const h = harness();
  h.runner.dispatch({ type: 'ManualStart' });
  h.runner.dispatch({ type: 'TcpConnected' });
  assert.equal(h.runner.state.name, 'OpenSent');
  assert.deepEqual(h.take(), ['connect', 'send-open']);
  assert.ok(h.runner.activeTimers().includes('hold'));
  h.runner.dispatch({ type: 'OpenReceived', open: open({ holdTime: 30 }) });
  assert.equal(h.runner.state.name, 'OpenConfirm');
  assert.equal(h.runner.state.holdTime, 30);
  assert.equal(h.runner.state.keepaliveTime, 10);
  assert.deepEqual(h.take(), ['send-keepalive']);
  h.runner.dispatch({ type: 'KeepaliveReceived' });
  assert.equal(h.runner.state.name, 'Established');
  assert.deepEqual(h.take(), ['established']);
  h.clock.advance(10_000);
  assert.deepEqual(h.take(), ['send-keepalive']);
  // Peer keepalives reset the hold timer.
  h.clock.advance(9_000);
  h.runner.dispatch({ type: 'KeepaliveReceived' });
  h.clock.advance(25_000);
  assert.equal(h.runner.state.name, 'Established');
  h.take();
  // Silence for the full hold time ends the session with 4/0, then the automatic restart.
  h.clock.advance(6_000);
  assert.equal(h.runner.state.name, 'Idle');
  assert.deepEqual(h.take().filter((a) => a !== 'send-keepalive'), ['notify 4/0', 'disconnect', 'down notification-sent']);
  h.clock.advance(120_000);
  assert.equal(h.runner.state.name, 'Connect');
  assert.equal(h.runner.state.connectRetryCounter, 1);
});

test('an UPDATE sent restarts our keepalive timer; one received restarts the hold timer', () => {
  const h = harness();
  toEstablished(h, 30);
  h.clock.advance(9_000);
  h.runner.dispatch({ type: 'UpdateSent' });
  h.clock.advance(9_000);
  assert.deepEqual(h.take(), [], 'keepalive postponed by the UPDATE');
  h.clock.advance(1_000);
  assert.deepEqual(h.take(), ['send-keepalive']);
  h.runner.dispatch({ type: 'UpdateReceived', update: { type: 'update', withdrawn: [], attributes: undefined, nlri: [] } });
  assert.deepEqual(h.take(), ['deliver-update']);
  h.clock.advance(29_000);
  assert.equal(h.runner.state.name, 'Established');
});

test('hold time 0 on either side means no keepalives and no hold timer', () => {
  assert.equal(negotiateHoldTime(90, 0), 0);
  assert.equal(negotiateHoldTime(0, 90), 0);
  assert.equal(negotiateHoldTime(90, 180), 90);
  const h = harness();
  toEstablished(h, 0);
  assert.deepEqual(h.runner.activeTimers(), []);
  h.clock.advance(3_600_000);
  assert.equal(h.runner.state.name, 'Established');
  assert.deepEqual(h.take(), []);
});

test('OpenSent: no OPEN within the large hold time → 4/0', () => {
  const h = harness();
  h.runner.dispatch({ type: 'ManualStart' });
  h.runner.dispatch({ type: 'TcpConnected' });
  h.take();
  h.clock.advance(240_000);
  assert.equal(h.runner.state.name, 'Idle');
  assert.deepEqual(h.take(), ['notify 4/0', 'disconnect', 'down notification-sent']);
});

test('OPEN checks: wrong AS → 2/2, our own identifier over iBGP → 2/3', () => {
  for (const [o, expect] of [[open({ asn: 65000 }), 'notify 2/2'], [open({ bgpId: parseIPv4('10.0.0.1') }), 'notify 2/3']] as const) {
    const h = harness();
    h.runner.dispatch({ type: 'ManualStart' });
    h.runner.dispatch({ type: 'TcpConnected' });
    h.take();
    h.runner.dispatch({ type: 'OpenReceived', open: o });
    assert.equal(h.runner.state.name, 'Idle');
    assert.equal(h.take()[0], expect);
  }
});

test('messages out of order are FSM errors (RFC 6608 subcodes)', () => {
  const h = harness();
  h.runner.dispatch({ type: 'ManualStart' });
  h.runner.dispatch({ type: 'TcpConnected' });
  h.take();
  h.runner.dispatch({ type: 'KeepaliveReceived' });
  assert.deepEqual(h.take().slice(0, 1), ['notify 5/1']);
  const h2 = harness();
  toEstablished(h2);
  h2.runner.dispatch({ type: 'OpenReceived', open: open() });
  assert.deepEqual(h2.take().slice(0, 1), ['notify 5/3']);
});

test('a decode error sends the NOTIFICATION it names', () => {
  const h = harness();
  toEstablished(h);
  h.runner.dispatch({ type: 'MessageError', error: new BgpError(3, 6, 'invalid ORIGIN') });
  assert.equal(h.runner.state.name, 'Idle');
  assert.deepEqual(h.take(), ['notify 3/6', 'disconnect', 'down notification-sent']);
});

test('ManualStop sends Cease/Administrative Shutdown and does not restart', () => {
  const h = harness();
  toEstablished(h);
  h.runner.dispatch({ type: 'ManualStop' });
  assert.equal(h.runner.state.name, 'Idle');
  assert.deepEqual(h.take(), ['notify 6/2', 'disconnect', 'down stopped']);
  assert.deepEqual(h.runner.activeTimers(), []);
  h.clock.advance(1_000_000);
  assert.equal(h.runner.state.name, 'Idle');
});

test('passive: waits in Active, never connects, takes an incoming connection', () => {
  const h = harness({ ...cfg, passive: true });
  h.runner.dispatch({ type: 'ManualStart' });
  assert.equal(h.runner.state.name, 'Active');
  h.clock.advance(600_000);
  assert.equal(h.runner.state.name, 'Active');
  assert.deepEqual(h.take(), []);
  h.runner.dispatch({ type: 'TcpIncoming' });
  assert.equal(h.runner.state.name, 'OpenSent');
  assert.deepEqual(h.take(), ['send-open']);
});

test('peer NOTIFICATION or lost connection in Established reports why', () => {
  const h = harness();
  toEstablished(h);
  h.runner.dispatch({ type: 'NotificationReceived', notification: { type: 'notification', code: 6, subcode: 2, data: Buffer.alloc(0) } });
  assert.deepEqual(h.take(), ['disconnect', 'down notification-received']);
  const h2 = harness();
  toEstablished(h2);
  h2.runner.dispatch({ type: 'TcpConnectionFails' });
  assert.deepEqual(h2.take(), ['disconnect', 'down connection-lost']);
});

test('collision dump in OpenConfirm sends Cease/7', () => {
  const r1 = fsmStep(initialFsmState, { type: 'ManualStart' }, cfg);
  const r2 = fsmStep(r1.state, { type: 'TcpConnected' }, cfg);
  const r3 = fsmStep(r2.state, { type: 'OpenReceived', open: open() }, cfg);
  assert.equal(r3.state.name, 'OpenConfirm');
  const r4 = fsmStep(r3.state, { type: 'CollisionDump' }, cfg);
  assert.equal(r4.state.name, 'Idle');
  assert.deepEqual(r4.actions[0], { type: 'send-notification', code: 6, subcode: 7, data: Buffer.alloc(0) });
});

test('Idle ignores everything but a start', () => {
  for (const e of [{ type: 'KeepaliveReceived' }, { type: 'TcpConnected' }, { type: 'HoldTimerExpires' }] as const) {
    const r = fsmStep(initialFsmState, e, cfg);
    assert.equal(r.state.name, 'Idle');
    assert.deepEqual(r.actions, []);
  }
});

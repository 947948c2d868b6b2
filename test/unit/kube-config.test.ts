// Reading kubeconfigs as kubectl does (current context, files relative to the kubeconfig, data
// fields, tokens) and the in-cluster mount; every refusal names what was wrong.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inClusterConnection, loadKubeconfig, resolveKubeConnection } from '../../src/kube/config.js';
import { Backoff } from '../../src/backoff.js';

const dir = mkdtempSync(join(tmpdir(), 'weft-kubeconfig-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(name: string, user: Record<string, unknown>, cluster: Record<string, unknown> = { server: 'https://127.0.0.1:6443/', 'certificate-authority': 'ca.crt' }): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'main',
    contexts: [{ name: 'other', context: { cluster: 'nope', user: 'nope' } }, { name: 'main', context: { cluster: 'c', user: 'u' } }],
    clusters: [{ name: 'c', cluster }],
    users: [{ name: 'u', user }],
  }));
  return path;
}

writeFileSync(join(dir, 'ca.crt'), 'CA');
writeFileSync(join(dir, 'client.crt'), 'CERT');
writeFileSync(join(dir, 'client.key'), 'KEY');

describe('kubeconfig', () => {
  it('reads the current context with files relative to the kubeconfig', () => {
    const c = loadKubeconfig(kubeconfig('cert.yaml', { 'client-certificate': 'client.crt', 'client-key': 'client.key' }));
    assert.equal(c.server, 'https://127.0.0.1:6443');
    assert.equal(c.ca?.toString(), 'CA');
    assert.deepEqual(c.credentials, { type: 'cert', cert: Buffer.from('CERT'), key: Buffer.from('KEY') });
  });

  it('reads data fields and tokens', () => {
    const data = loadKubeconfig(kubeconfig('data.yaml', { 'client-certificate-data': Buffer.from('C2').toString('base64'), 'client-key-data': Buffer.from('K2').toString('base64') },
      { server: 'https://10.0.0.1:443', 'certificate-authority-data': Buffer.from('CA2').toString('base64') }));
    assert.equal(data.ca?.toString(), 'CA2');
    assert.deepEqual(data.credentials, { type: 'cert', cert: Buffer.from('C2'), key: Buffer.from('K2') });
    assert.deepEqual(loadKubeconfig(kubeconfig('token.yaml', { token: 'abc' })).credentials, { type: 'token', token: 'abc' });
    assert.deepEqual(loadKubeconfig(kubeconfig('tokenfile.yaml', { tokenFile: 'tok' })).credentials, { type: 'token-file', path: join(dir, 'tok') });
  });

  it('names what is wrong', () => {
    assert.throws(() => loadKubeconfig(join(dir, 'missing.yaml')), /kubeconfig .*missing\.yaml/);
    assert.throws(() => loadKubeconfig(kubeconfig('nokey.yaml', { 'client-certificate': 'client.crt' })), /client certificate without client key/);
    assert.throws(() => loadKubeconfig(kubeconfig('exec.yaml', { exec: { command: 'x' } })), /exec and auth-provider credentials are not supported/);
    assert.throws(() => loadKubeconfig(kubeconfig('badserver.yaml', { token: 't' }, { server: 'ftp://x' })), /server must be an http\(s\) URL/);
    assert.throws(() => loadKubeconfig(kubeconfig('noca.yaml', { token: 't' }, { server: 'https://x', 'certificate-authority': 'nope.crt' })), /cannot read certificate-authority .*nope\.crt/);
  });

  it('falls back to $KUBECONFIG, then to the in-cluster mount', () => {
    const path = kubeconfig('env.yaml', { token: 't' });
    assert.equal(resolveKubeConnection(undefined, { KUBECONFIG: `${path}:/other` }).source, path);
    assert.throws(() => resolveKubeConnection(undefined, {}), /not running in a pod/);
    const sa = join(dir, 'sa');
    assert.throws(() => inClusterConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, sa), /cannot read the service account mount/);
    const mount = mkdtempSync(join(dir, 'sa-'));
    writeFileSync(join(mount, 'ca.crt'), 'CA3');
    writeFileSync(join(mount, 'token'), 'tok');
    const c = inClusterConnection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, mount);
    assert.equal(c.server, 'https://[fd00::1]:443');
    assert.deepEqual(c.credentials, { type: 'token-file', path: join(mount, 'token') });
  });
});

describe('backoff', () => {
  it('grows to its ceiling with jitter in the upper half and starts over after reset', () => {
    const lows = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => lows.next()), [50, 100, 200, 400, 500, 500]);
    const highs = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
    assert.deepEqual([1, 2, 3].map(() => highs.next()), [100, 200, 400]);
    assert.equal(highs.attempts, 3);
    highs.reset();
    assert.equal(highs.next(), 100);
  });
});

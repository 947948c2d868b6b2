// The lab's rack router config, checked by BIRD 2 itself (bird -p parses and exits): a BIRD that
// rejects it would leave a bgp lab with racks without routes. Runs a process, so not in unit/.
import { describe, it } from 'node:test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderRackBirdConfig } from '../../src/lab/racks.js';

describe('rack router BIRD config', () => {
  for (const mode of ['rr', 'ebgp'] as const) {
    it(`${mode}: BIRD 2 accepts it (bird -p)`, () => {
      const text = renderRackBirdConfig({ mode, clusterAsn: 64512, routerAsn: 65000, hosts: [{ name: 'h0', ip: '198.18.0.1' }, { name: 'h1', ip: '198.18.1.1' }] });
      const dir = mkdtempSync(join(tmpdir(), 'wbb-conf-'));
      try {
        writeFileSync(join(dir, 'bird.conf'), text);
        // Throws with BIRD's complaint (file:line) on stderr when it does not parse.
        execFileSync('bird', ['-p', '-c', join(dir, 'bird.conf')], { stdio: 'pipe' });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

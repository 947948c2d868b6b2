// Network config parsing: flannel's defaults, each invalid key named in its error, backends
// validating their own keys through the registry; and lease values parsed without throwing.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, formatIP } from '../../src/net/ip.js';
import { parseNetworkConfig, subnetCount } from '../../src/store/config.js';
import { parseLeaseValue } from '../../src/store/lease.js';
import { backendTypes } from '../../src/backends/registry.js';

describe('network config', () => {
  it('applies flannel defaults', () => {
    const c = parseNetworkConfig('{"Network":"10.244.0.0/16"}');
    assert.ok(c.ipv4);
    assert.equal(formatCidr(c.ipv4.network), '10.244.0.0/16');
    assert.equal(c.ipv4.subnetLen, 24);
    assert.equal(formatIP(c.ipv4.subnetMin.ip), '10.244.1.0');
    assert.equal(formatIP(c.ipv4.subnetMax.ip), '10.244.255.0');
    assert.equal(subnetCount(c.ipv4), 255n);
    assert.equal(c.ipv6, undefined);
    assert.deepEqual(c.backend, { type: 'vxlan', settings: { VNI: 1, Port: 8472, DirectRouting: false, GBP: false, Learning: false } });
  });

  it('takes a small network apart into at least four subnets by default', () => {
    const c = parseNetworkConfig('{"Network":"10.9.0.0/26"}');
    assert.equal(c.ipv4?.subnetLen, 28);
  });

  it('parses each backend with its own defaults', () => {
    assert.deepEqual(parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"udp"}}').backend.settings, { Port: 8285 });
    assert.deepEqual(parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"host-gw"}}').backend.settings, {});
    assert.deepEqual(
      parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"bgp","Peers":[{"Address":"198.18.0.1","ASN":65001}],"RouteReflector":true}}').backend.settings,
      { ASN: 64512, Peers: [{ Address: '198.18.0.1', ASN: 65001 }], RouteReflector: true, RouteReflectorNodes: [], NodeMesh: true, HoldTime: 90, GracefulRestartTime: 120, ImportPrefixes: [] },
    );
    assert.deepEqual(parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":42,"MTU":1400,"DirectRouting":true}}').backend.settings,
      { VNI: 42, Port: 8472, DirectRouting: true, MTU: 1400, GBP: false, Learning: false });
    assert.deepEqual(backendTypes().sort(), ['bgp', 'host-gw', 'udp', 'vxlan']);
  });

  it('parses dual stack', () => {
    const c = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}');
    assert.equal(c.ipv6 && formatCidr(c.ipv6.network), 'fd00:10:244::/56');
    assert.equal(c.ipv6?.subnetLen, 64);
  });

  const bad: [string, RegExp][] = [
    ['{"Network":', /not valid JSON/],
    ['[1,2]', /\(root\): expected a JSON object/],
    ['{}', /Network: is required/],
    ['{"Network":"10.244.0.0"}', /Network: expected an IPv4 CIDR, got "10.244.0.0"/],
    ['{"Network":42}', /Network: Expected string, received number/],
    ['{"Network":"fd00::/48"}', /Network: expected an IPv4 CIDR/],
    ['{"Network":"10.244.0.0/16","SubnetLen":31}', /SubnetLen: must be at most 30, got 31/],
    ['{"Network":"10.244.0.0/16","SubnetLen":17}', /SubnetLen: must be at least 18/],
    ['{"Network":"10.244.0.0/16","SubnetLen":"24"}', /SubnetLen: Expected number, received string/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}', /SubnetMin: 10.245.0.0 is not inside Network 10.244.0.0\/16/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.5"}', /SubnetMin: 10.244.1.5 is not on a \/24 subnet boundary/],
    ['{"Network":"10.244.0.0/16","SubnetMax":"10.244.7.1"}', /SubnetMax: 10.244.7.1 is not on a \/24 subnet boundary/],
    ['{"Network":"10.244.0.0/16","SubnetMax":"banana"}', /SubnetMax: expected an IPv4 address, got "banana"/],
    ['{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}', /SubnetMin: 10.244.9.0 is above SubnetMax 10.244.3.0/],
    ['{"Network":"10.244.0.0/16","Subnetlen":24}', /network config: Subnetlen: unknown key/],
    ['{"Network":"10.244.0.0/16","EnableIPv6":"yes"}', /EnableIPv6: Expected boolean/],
    ['{"Network":"10.244.0.0/16","EnableIPv6":true}', /IPv6Network: is required/],
    ['{"Network":"10.244.0.0/16","IPv6Network":"fd00::/56"}', /IPv6Network: is set but EnableIPv6 is not true/],
    ['{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}', /IPv6Network: expected an IPv6 CIDR/],
    ['{"EnableIPv4":false}', /EnableIPv4: at least one/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"geneve"}}', /Backend.Type: unknown backend "geneve" \(expected one of vxlan, host-gw, udp, bgp\)/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":7}}', /Backend.Type: expected a string/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":0}}', /Backend.VNI: Number must be greater than or equal to 1/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":70000}}', /Backend.Port: Number must be less than or equal to 65535/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":100}}', /Backend.MTU:/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Learning":"no"}}', /Backend.Learning: Expected boolean/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":1}}', /Backend.VNI: unknown key/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":-1}}', /Backend.Port:/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"bgp","ASN":0}}', /Backend.ASN:/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"bgp","Peers":[{"Address":"x","ASN":1}]}}', /Backend.Peers.0.Address: expected an IPv4 address/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"bgp","Peers":[{"Address":"198.18.0.1"}]}}', /Backend.Peers.0.ASN: Required/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"bgp","RouteReflectorClusterID":"1"}}', /Backend.RouteReflectorClusterID:/],
    ['{"Network":"10.244.0.0/16","Backend":"vxlan"}', /Backend: Expected object, received string/],
  ];
  for (const [text, re] of bad) {
    it(`rejects ${text}`, () => {
      assert.throws(() => parseNetworkConfig(text), (err: Error) => {
        assert.match(err.message, re);
        return true;
      });
    });
  }
});

describe('lease values', () => {
  it('parses flannel lease JSON', () => {
    const r = parseLeaseValue('{"PublicIP":"198.18.0.3","BackendType":"vxlan","BackendData":{"VtepMAC":"0a:58:0a:f4:03:01"}}');
    assert.ok(r.ok);
    assert.equal(formatIP(r.attrs.publicIP), '198.18.0.3');
    assert.deepEqual(r.attrs.backendData, { VtepMAC: '0a:58:0a:f4:03:01' });
  });
  it('keeps BackendData as the peer wrote it: checking it is the backend\'s business', () => {
    // A vxlan lease without a usable VtepMAC still reaches the watchers; the vxlan backend skips it
    // (test/unit/backend-modules.test.ts), any other backend never looks at it.
    for (const data of ['{}', '{"VtepMAC":"0a:58:0a:f4:03"}', '["0a:58:0a:f4:03:01"]', '{"VtepMAC":"0A:58:0a:f4:03:01","Extra":1}']) {
      const r = parseLeaseValue(`{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":${data}}`);
      assert.ok(r.ok, data);
      assert.deepEqual(r.attrs.backendData, JSON.parse(data));
    }
    const none = parseLeaseValue('{"PublicIP":"198.18.0.1","BackendType":"host-gw"}');
    assert.equal(none.ok && none.attrs.backendData, null);
  });
  it('reports garbage instead of throwing', () => {
    for (const [v, re] of [
      ['', /not JSON/], ['null', /value: Expected object/], ['{"BackendType":"vxlan"}', /PublicIP: Required/],
      ['{"PublicIP":"::1","BackendType":"udp"}', /PublicIP: expected an IPv4/],
      ['{"PublicIP":"198.18.0.1","PublicIPv6":"1.2.3.4","BackendType":"udp"}', /PublicIPv6/],
    ] as const) {
      const r = parseLeaseValue(v);
      assert.equal(r.ok, false, v);
      assert.match(r.ok ? '' : r.reason, re);
    }
  });
});

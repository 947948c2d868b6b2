// The pure pieces of dual-stack and IPv6-only networks: flannel's lease keys and values, subnet.env
// as flanneld writes it, and weftd's rules for both families.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, formatIP, leaseKey, parseCidr, parseIP, parseLeaseKey, parseSubnetKey } from '../../src/net/ip.js';
import { encodeLeaseAttrs, formatLeaseSubnets, ipv4SubnetOf, parseLease, parseLeaseValue } from '../../src/store/lease.js';
import { renderSubnetFile } from '../../src/agent/subnet-file.js';
import { readLeasedSubnets } from '../../src/cni/subnet-env.js';
import { agentRuleCount, agentRulesScript } from '../../src/agent/traffic-rules.js';
import { withLabIPv6 } from '../../src/lab/backends.js';
import { parseNetworkConfig } from '../../src/store/config.js';

describe('lease keys (flanneld\'s format)', () => {
  it('dual-stack: "<v4>-<len>&<v6>-<len>", known by its IPv4 subnet', () => {
    const k = leaseKey(parseCidr('10.244.3.0/24'), parseCidr('fd00:10:244:3::/64'));
    assert.equal(k, '10.244.3.0-24&fd00:10:244:3::-64');
    const back = parseLeaseKey(k);
    assert.equal(back && formatCidr(back.subnet), '10.244.3.0/24');
    assert.equal(back?.ipv6Subnet && formatCidr(back.ipv6Subnet), 'fd00:10:244:3::/64');
    assert.equal(formatCidr(parseSubnetKey(k)!), '10.244.3.0/24');
  });

  it('IPv4-only and IPv6-only keys name one subnet; an IPv6-only lease\'s IPv6 subnet is its subnet', () => {
    assert.equal(leaseKey(parseCidr('10.244.3.0/24')), '10.244.3.0-24');
    assert.equal(parseLeaseKey('10.244.3.0-24')?.ipv6Subnet, undefined);
    assert.equal(leaseKey(parseCidr('fd00:1::/64'), parseCidr('fd00:1::/64')), 'fd00:1::-64');
    const v6 = parseLeaseKey('fd00:1::-64');
    assert.equal(v6?.ipv6Subnet && formatCidr(v6.ipv6Subnet), 'fd00:1::/64');
  });

  it('refuses keys whose halves are of the wrong family or not network addresses', () => {
    for (const k of ['fd00::-64&10.0.0.0-24', '10.0.0.0-24&10.0.1.0-24', '10.0.0.1-24&fd00::-64', '10.0.0.0-24&fd00::1-64', '10.0.0.0-24&', 'garbage']) {
      assert.equal(parseLeaseKey(k), undefined, k);
    }
  });
});

describe('lease values (flanneld\'s LeaseAttrs)', () => {
  it('reads PublicIPv6 and BackendV6Data as flanneld writes them', () => {
    const r = parseLeaseValue('{"PublicIP":"198.18.0.25","PublicIPv6":"2001:2::25","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8e:f5:62:5c:1b:25"},"BackendV6Data":{"VNI":1,"VtepMAC":"8e:f5:62:5c:1b:26"}}');
    assert.ok(r.ok);
    assert.equal(formatIP(r.attrs.publicIP), '198.18.0.25');
    assert.equal(r.attrs.publicIPv6 && formatIP(r.attrs.publicIPv6), '2001:2::25');
    assert.deepEqual(r.attrs.backendV6Data, { VNI: 1, VtepMAC: '8e:f5:62:5c:1b:26' });
  });

  it('a host with no IPv4 underlay: written as PublicIP 0.0.0.0, read back as known by its IPv6 address', () => {
    const text = encodeLeaseAttrs({ publicIP: parseIP('2001:2::7'), publicIPv6: undefined, backendType: 'vxlan', backendData: null, backendV6Data: { VtepMAC: '0a:00:00:00:00:06' } });
    assert.deepEqual(JSON.parse(text), { PublicIP: '0.0.0.0', PublicIPv6: '2001:2::7', BackendType: 'vxlan', BackendV6Data: { VtepMAC: '0a:00:00:00:00:06' } });
    const r = parseLeaseValue(text);
    assert.ok(r.ok);
    assert.equal(formatIP(r.attrs.publicIP), '2001:2::7');
    assert.equal(r.attrs.publicIPv6 && formatIP(r.attrs.publicIPv6), '2001:2::7');
  });

  it('PublicIP 0.0.0.0 without a PublicIPv6 is garbage (a peer with no address), named as such', () => {
    const r = parseLeaseValue('{"PublicIP":"0.0.0.0","BackendType":"vxlan"}');
    assert.deepEqual(r, { ok: false, reason: 'PublicIP: 0.0.0.0 without a PublicIPv6' });
    const bad6 = parseLeaseValue('{"PublicIP":"198.18.0.1","PublicIPv6":"198.18.0.2","BackendType":"vxlan"}');
    assert.equal(bad6.ok, false);
  });

  it('a parsed lease carries the IPv6 subnet of its key', () => {
    const p = parseLease({ subnet: parseCidr('10.244.3.0/24'), ipv6Subnet: parseCidr('fd00:3::/64'), value: '{"PublicIP":"198.18.0.3","PublicIPv6":"2001:2::3","BackendType":"host-gw"}', revision: 1n });
    assert.ok(p.ok);
    assert.equal(formatLeaseSubnets(p.lease), '10.244.3.0/24 fd00:3::/64');
    assert.equal(ipv4SubnetOf(p.lease) && formatCidr(ipv4SubnetOf(p.lease)!), '10.244.3.0/24');
    assert.equal(ipv4SubnetOf({ subnet: parseCidr('fd00:3::/64') }), undefined);
  });
});

describe('subnet.env as flanneld writes it', () => {
  it('dual-stack: the IPv4 pair, the IPv6 pair, MTUs, masquerade, then weft\'s keys', () => {
    const text = renderSubnetFile({
      network: parseCidr('10.244.0.0/16'), subnet: parseCidr('10.244.3.0/24'), ipv6Network: parseCidr('fd00:244::/56'), ipv6Subnet: parseCidr('fd00:244:0:3::/64'),
      mtu: 1430, ipv6Mtu: 1430, ipMasq: true, backend: 'vxlan',
    });
    assert.equal(text, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:244::/56\nFLANNEL_IPV6_SUBNET=fd00:244:0:3::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPV6_MTU=1430\nFLANNEL_IPMASQ=true\nWEFT_BACKEND=vxlan\n');
  });

  it('IPv6-only: no IPv4 lines (as flanneld with EnableIPv4 false); a restart reads both subnets back', () => {
    const text = renderSubnetFile({ ipv6Network: parseCidr('fd00:244::/56'), ipv6Subnet: parseCidr('fd00:244:0:9::/64'), mtu: 1430, ipv6Mtu: 1430, ipMasq: false, backend: 'vxlan' });
    assert.doesNotMatch(text, /FLANNEL_NETWORK|FLANNEL_SUBNET=/);
    const dir = mkdtempSync(join(tmpdir(), 'weft-dual-'));
    try {
      const file = join(dir, 'subnet.env');
      writeFileSync(file, text);
      const prev = readLeasedSubnets(file);
      assert.equal(prev.subnet, undefined);
      assert.equal(prev.ipv6Subnet && formatCidr(prev.ipv6Subnet), 'fd00:244:0:9::/64');
      writeFileSync(file, 'FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_SUBNET=10.244.4.1/24\n');
      assert.deepEqual(Object.keys(readLeasedSubnets(file)), ['subnet'], 'a FLANNEL_IPV6_SUBNET of the wrong family is ignored');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('weftd\'s rules for both families', () => {
  it('accepts and masquerades each cluster network with its own family\'s match', () => {
    const spec = { network: parseCidr('10.244.0.0/16'), ipv6Network: parseCidr('fd00:244::/56'), ipMasq: true, subnet: parseCidr('10.244.3.0/24') };
    const script = agentRulesScript(spec);
    assert.match(script, /forward ip saddr 10\.244\.0\.0\/16 accept/);
    assert.match(script, /forward ip6 saddr fd00:244::\/56 accept/);
    assert.match(script, /forward ip6 daddr fd00:244::\/56 accept/);
    assert.match(script, /postrouting ip6 saddr fd00:244::\/56 ip6 daddr fd00:244::\/56 return/);
    assert.match(script, /postrouting ip6 saddr fd00:244::\/56 ip6 daddr != ff00::\/8 masquerade fully-random/);
    const rules = script.split('\n').filter((l) => l.startsWith('add rule')).length;
    assert.equal(agentRuleCount(spec), rules, 'the repair check counts what the script adds');
  });

  it('IPv6-only: the one network is matched as ip6, and no per-peer IPv4 counters are set up', () => {
    const spec = { network: parseCidr('fd00:244::/56'), ipMasq: true, subnet: parseCidr('fd00:244:0:3::/64') };
    const script = agentRulesScript(spec);
    assert.doesNotMatch(script, / ip saddr /);
    assert.doesNotMatch(script, /peer_tx/);
    assert.equal(agentRuleCount(spec), script.split('\n').filter((l) => l.startsWith('add rule')).length);
  });
});

describe('the lab\'s IPv6 network configs', () => {
  it('dual adds IPv6Network beside Network; only drops IPv4 — both parse as weftd would', () => {
    const base = { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } };
    const dual = parseNetworkConfig(JSON.stringify(withLabIPv6(base, 'dual')));
    assert.ok(dual.ipv4 && dual.ipv6);
    assert.equal(dual.ipv6.subnetLen, 64);
    const only = parseNetworkConfig(JSON.stringify(withLabIPv6(base, 'only')));
    assert.equal(only.ipv4, undefined);
    assert.equal(only.ipv6 && formatCidr(only.ipv6.network), 'fd10:244::/56');
  });
});

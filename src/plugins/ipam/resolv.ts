// resolv.conf → CNI dns, as host-local's `resolvConf` option does.
import { readFileSync } from 'node:fs';
import { CniCode, WeftError } from '../../errors.js';
import type { CniDNS } from '../../cni/result.js';

export function parseResolvConf(text: string): CniDNS {
  const dns: CniDNS = {};
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') continue;
    const [key, ...vals] = line.split(/\s+/);
    switch (key) {
      case 'nameserver':
        if (vals[0]) (dns.nameservers ??= []).push(vals[0]);
        break;
      case 'domain':
        if (vals[0]) dns.domain = vals[0];
        break;
      case 'search':
        dns.search = vals;
        break;
      case 'options':
        (dns.options ??= []).push(...vals);
        break;
      default:
        break;
    }
  }
  return dns;
}

export function readResolvConf(path: string): CniDNS {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new WeftError(CniCode.InvalidNetworkConfig, `ipam.resolvConf: cannot read ${path}: ${(err as Error).message}`);
  }
  return parseResolvConf(text);
}

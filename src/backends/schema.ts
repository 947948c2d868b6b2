// Value schemas more than one backend's config uses, so their wording is the same everywhere.
import { z } from 'zod';

export const port = z.number().int().min(1).max(65535);
export const mtu = z.number().int().min(576).max(65535);
export const asn = z.number().int().min(1).max(4294967295);
const octet = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
export const ipv4 = z.string().regex(new RegExp(`^${octet}(\\.${octet}){3}$`), 'expected an IPv4 address');
export const ipv4Cidr = z.string().regex(new RegExp(`^${octet}(\\.${octet}){3}\\/(3[0-2]|[12]?\\d)$`), 'expected an IPv4 CIDR such as 10.99.0.0/16');
/** Backends without lease data publish `null` or nothing; anything else is tolerated and ignored. */
export const noLeaseData = z.unknown();

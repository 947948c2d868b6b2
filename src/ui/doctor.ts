// doctor's path check for the page: the topology where the view runs, the store as the feed holds
// it (no extra reads), and both ends' hosts named by the page's ids so it can draw the path.
import { CniCode, WeftError } from '../errors.js';
import { tryParseIP } from '../net/ip.js';
import { runDoctor, type StoreView } from '../doctor/doctor.js';
import type { Topology } from '../doctor/locate.js';
import { hostIdOf } from './build.js';
import type { UiDoctorReport, UiDoctorRequest } from './model.js';

/** The doctor's answer with both ends' hosts as the page's ids. */
export function doctorFor(feed: { storeView(): StoreView }, topology: () => Promise<Topology>, storeFlags: string): (req: UiDoctorRequest) => Promise<UiDoctorReport> {
  return async (req) => {
    const protocol = req.protocol ?? 'ICMP';
    if (protocol !== 'ICMP' && req.port === undefined) throw new WeftError(CniCode.InvalidEnvironment, `a ${protocol} check needs a port`);
    const view = feed.storeView();
    const report = await runDoctor({
      topology: await topology(), src: req.src, dst: req.dst, probe: { protocol, port: protocol === 'ICMP' ? 0 : req.port ?? 0 }, store: view, storeFlags,
    });
    const hostOf = (ip: string): string | undefined => {
      const a = tryParseIP(ip);
      return a ? hostIdOf(view.leases, a) : undefined;
    };
    return {
      src: { ...report.src, hostId: hostOf(report.src.ip) }, dst: { ...report.dst, hostId: hostOf(report.dst.ip) },
      hops: report.hops, ok: report.ok, firstFailure: report.firstFailure,
    };
  };
}

// The blocking benchmark's client, run inside weftd's host namespace (its /healthz listens on the
// host's loopback, which the root namespace cannot reach). argv[2] is a JSON job. Two loops run
// side by side for job.durationMs: CNI ADD+DEL pairs over weftd's fast-path socket (one at a
// time, rotating over the containers) and GET /healthz every healthEveryMs. It prints one JSON
// line: the ADD, DEL and /healthz latencies (ms) and how many reconcile passes weftd finished
// meanwhile (weft_reconcile_runs_total before and after).
import { request } from 'node:http';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface DriverJob {
  readonly socket: string;
  /** http://127.0.0.1:PORT */
  readonly healthBase: string;
  /** Container namespace paths (/run/netns/NAME); each gets ADD then DEL in turn. */
  readonly containers: readonly string[];
  readonly conf: string;
  readonly cniPath: string;
  readonly durationMs: number;
  readonly healthEveryMs: number;
}

export interface DriverReport {
  readonly add: number[];
  readonly del: number[];
  readonly health: number[];
  readonly passes: number;
}

function httpGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; });
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

async function reconcileRuns(base: string): Promise<number> {
  const m = /^weft_reconcile_runs_total (\d+)/m.exec(await httpGet(`${base}/metrics`));
  if (!m) throw new Error('weftd /metrics has no weft_reconcile_runs_total');
  return Number(m[1]);
}

/** One fast-path round trip (see src/cni/fastpath-client.ts for the framing). */
function fastPath(socket: string, env: Record<string, string>, stdin: string): Promise<{ stdout: string; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const c = connect(socket);
    let out = '';
    c.setEncoding('utf8').on('data', (d: string) => { out += d; });
    c.on('error', reject);
    c.on('end', () => {
      try {
        resolve(JSON.parse(out) as { stdout: string; exitCode: number });
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    c.end(JSON.stringify({ env, stdin }));
  });
}

async function run(job: DriverJob): Promise<DriverReport> {
  const add: number[] = [];
  const del: number[] = [];
  const health: number[] = [];
  const runs0 = await reconcileRuns(job.healthBase);
  const until = performance.now() + job.durationMs;
  const cni = async (): Promise<void> => {
    for (let i = 0; performance.now() < until; i++) {
      const netns = job.containers[i % job.containers.length]!;
      const env = { CNI_CONTAINERID: `wlp-${i % job.containers.length}`, CNI_NETNS: netns, CNI_IFNAME: 'eth0', CNI_PATH: job.cniPath };
      for (const [cmd, into] of [['ADD', add], ['DEL', del]] as const) {
        const t0 = performance.now();
        const r = await fastPath(job.socket, { ...env, CNI_COMMAND: cmd }, job.conf);
        into.push(performance.now() - t0);
        if (r.exitCode !== 0) throw new Error(`${cmd} failed: ${r.stdout}`);
      }
    }
  };
  const probe = async (): Promise<void> => {
    while (performance.now() < until) {
      const t0 = performance.now();
      await httpGet(`${job.healthBase}/healthz`);
      health.push(performance.now() - t0);
      await sleep(job.healthEveryMs);
    }
  };
  await Promise.all([cni(), probe()]);
  return { add, del, health, passes: (await reconcileRuns(job.healthBase)) - runs0 };
}

const arg = process.argv[2];
if (arg !== undefined) {
  run(JSON.parse(arg) as DriverJob).then(
    (r) => { process.stdout.write(JSON.stringify(r) + '\n'); },
    (err: unknown) => { process.stderr.write(`blocking-driver: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`); process.exitCode = 1; },
  );
}

/**
 * The routing case of `npm run bench` (issue 12): the two-platform build of test/e2e/routing.test.ts
 * (`FROM busybox` from an OCI layout + a RUN that writes `uname -m` and counts to 20000 in sh,
 * `--platform linux/ppc64le,linux/s390x --no-cache`, an OCI archive out) routed (s390x to the
 * test node of test/fixtures/remote-buildkitd.ts over mTLS, ppc64le in the local sandbox, at the
 * same time) against both platforms in the local sandbox. CLI wall time, interleaved, median of
 * BENCH_ROUTING_RUNS (3) after one warm-up each.
 *
 * What it measures here: the test node runs on this machine and emulates s390x with QEMU too, so
 * the routed build gains only from the parts running side by side in two BuildKits (and pays for
 * a second sandbox and the merge); on a real s390x machine the node's part runs natively.
 *
 * Run by bench.ts at its end (skipped with the reason when ../shared/upstream lacks BuildKit), or
 * alone: `npm run build && node dist/test/bench/routing-bench.js`. Writes test/bench/last-routing-run.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {pathToFileURL} from 'node:url';
import {execa} from 'execa';
import {parsePlatform} from '../../src/platforms/parse.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {startRemoteBuildkitd} from '../fixtures/remote-buildkitd.js';
import {upstreamSkip} from '../fixtures/upstream.js';
import {bin, exobuildEnv, fixturesDir, repoRoot} from '../e2e/helpers.js';

const median = (values: number[]): number => {
	const sorted = [...values].sort((a, b) => a - b);
	const middle = Math.floor(sorted.length / 2);
	return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

export const runRoutingBench = async (runs = Number(process.env['BENCH_ROUTING_RUNS'] ?? 3)): Promise<void> => {
	const skip = upstreamSkip('buildkit');
	if (skip !== undefined) {
		process.stdout.write(`routing: skipped (${skip})\n`);
		return;
	}

	Object.assign(process.env, exobuildEnv);
	const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-routing-bench-'));
	const node = await startRemoteBuildkitd(parsePlatform('linux/s390x'));
	try {
		const busybox = await busyboxLayout(['linux/ppc64le', 'linux/s390x'], path.join(fixturesDir, 'busybox'));
		const context = path.join(work, 'ctx');
		fs.mkdirSync(context);
		fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM busybox\nRUN uname -m > /m && i=0 && while [ $i -lt 20000 ]; do i=$((i+1)); done && echo $i > /count\n');
		const routedConfig = path.join(work, 'routed-config');
		const localConfig = path.join(work, 'local-config');
		const {client, address} = node;
		await execa(bin, ['node', 'add', 'z', address, '--platform', 'linux/s390x', '--tls-ca', client.ca, '--tls-cert', client.cert, '--tls-key', client.key], {env: {XDG_CONFIG_HOME: routedConfig}});
		const once = async (config: string): Promise<number> => {
			const started = performance.now();
			const result = await execa(bin, [
				'build', '--progress', 'plain', '--no-cache', '--platform', 'linux/ppc64le,linux/s390x', '--build-context', `busybox=oci-layout://${busybox}`,
				'--output', `type=oci,dest=${path.join(work, 'out.tar')}`, context,
			], {env: {XDG_CONFIG_HOME: config}, reject: false, all: true});
			const wall = performance.now() - started;
			if (result.exitCode !== 0) {
				throw new Error(`exobuild failed:\n${result.all}`);
			}

			if (config === routedConfig && !/@z/.test(String(result.stderr))) {
				throw new Error('the routed build did not go to node z');
			}

			return wall;
		};

		const loadBefore = os.loadavg()[0]!.toFixed(2);
		await once(routedConfig);
		await once(localConfig);
		const routed: number[] = [];
		const local: number[] = [];
		for (let index = 0; index < runs; index++) {
			routed.push(await once(routedConfig));
			local.push(await once(localConfig));
		}

		const report = {
			date: new Date().toISOString(),
			runs,
			build: 'FROM busybox (OCI layout) + RUN uname -m, count to 20000 in sh; --platform linux/ppc64le,linux/s390x --no-cache; OCI archive out',
			machine: `${os.cpus().length} cpus, ${os.release()}`,
			loadAverage: {before: loadBefore, after: os.loadavg()[0]!.toFixed(2)},
			routedWallMs: {median: Math.round(median(routed)), all: routed.map(Math.round), what: 's390x on the test node (its own buildkitd, QEMU on this machine), ppc64le in the local sandbox, at once'},
			localWallMs: {median: Math.round(median(local)), all: local.map(Math.round), what: 'both platforms in the local sandbox'},
		};
		fs.writeFileSync(path.join(repoRoot, 'test', 'bench', 'last-routing-run.json'), `${JSON.stringify(report, undefined, 2)}\n`);
		process.stdout.write(`routing (two platforms, --no-cache, median of ${runs}): routed ${report.routedWallMs.median} ms, both local ${report.localWallMs.median} ms (load ${report.loadAverage.before} → ${report.loadAverage.after})\n`);
	} finally {
		await node.stop();
		fs.rmSync(work, {recursive: true, force: true});
	}
};

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
	await runRoutingBench();
}

/**
 * `npm run bench`: exobuild's warm wall time against the anchor, the tool a user would otherwise
 * pick: a persistent buildkitd that stays up between builds (issue 10).
 *
 * The build: `FROM debian` (a Debian base from an OCI layout, test/fixtures/base-images.ts) +
 * `RUN echo hi > /hi`, `--platform linux/ppc64le --no-cache`, an OCI archive out.
 *
 * - The anchor: buildkitd v0.32.2 from ../shared/upstream (the tarball's own bin/buildkitd and
 *   bin/buildctl), started once and kept up for the whole bench, chrooted into the builder image's
 *   root filesystem for runc and QEMU, rootless in a private user namespace whose own binfmt_misc
 *   holds the ppc64le handler before the clock starts (the host's table is never touched), its
 *   --root on the host's disk. After a warm-up build the base is in its store. Each measured
 *   build is one `buildctl build` process, timed inside the namespace from its start to its exit.
 * - exobuild: the CLI (from process start to exit: what a user waits for), warm (builder image
 *   unpacked, BuildKit's kept state holding the base after a warm-up build).
 * - Interleaved, median of BENCH_RUNS (5); then the same number of in-process builds for the
 *   per-phase split. The machine's load average is recorded before and after.
 *
 * Output: a table on stdout and test/bench/last-run.json. Not a test: it asserts nothing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {PassThrough} from 'node:stream';
import {execa} from 'execa';
import {ensureBuilderImage} from '../../src/builder-image/index.js';
import {toBuildRequest} from '../../src/cli/build-flags/options.js';
import {resolvePlatformManifests} from '../../src/oci/index.js';
import {cacheBuilderStore, runBuild} from '../../src/pipeline/run-build.js';
import {PlainReporter} from '../../src/progress/plain-reporter.js';
import {parsePlatform} from '../../src/platforms/parse.js';
import {createDriver} from '../../src/sandboxes/index.js';
import {builderRootfs} from '../../src/sandboxes/linux-userns/index.js';
import {runInNamespaces} from '../../src/sandboxes/linux-userns/namespaces.js';
import {debianLayout} from '../fixtures/base-images.js';
import {chrootSetupScript} from '../fixtures/chroot-namespace.js';
import {bin, exobuildEnv, fixturesDir, repoRoot, upstreamTarballs} from '../e2e/helpers.js';

const runs = Number(process.env['BENCH_RUNS'] ?? 5);
Object.assign(process.env, exobuildEnv);
const tarballs = upstreamTarballs();
if ('skip' in tarballs) {
	process.stderr.write(`bench: ${tarballs.skip}\n`);
	process.exit(1);
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-bench-'));
const context = path.join(work, 'ctx');
fs.mkdirSync(context);
fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM debian\nRUN echo hi > /hi\n');

const median = (values: number[]): number => {
	const sorted = [...values].sort((a, b) => a - b);
	const middle = Math.floor(sorted.length / 2);
	return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

const load = (): string => os.loadavg().map(value => value.toFixed(2)).join(' ');
const loadBefore = load();

// The platforms of the e2e tests' Debian layout, so that the cached fixture serves.
const layout = await debianLayout(['linux/ppc64le', 'linux/s390x', 'linux/arm64'], path.join(fixturesDir, 'debian'));
const topDigest = (await resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'debian'})).topDigest;
const builder = await ensureBuilderImage({});
const rootfs = await builderRootfs(builder);
const upstreamBin = path.join(work, 'upstream');
fs.mkdirSync(upstreamBin);
await execa('tar', ['-xzf', tarballs.buildkit, '-C', upstreamBin]);

// The anchor: one namespace for the whole bench; a line `build N` on its stdin runs one build and
// prints `anchor-ms N MS`; end of stdin stops buildkitd and ends the namespace.
const ppc64le = parsePlatform('linux/ppc64le');
const anchorState = path.join(work, 'anchor');
for (const dir of ['upper', 'work', 'state', 'mnt']) {
	fs.mkdirSync(path.join(anchorState, dir), {recursive: true});
}

const anchorScript = `${chrootSetupScript({
	rootfs, dir: anchorState, handlers: [ppc64le],
	binds: [[layout, '/bench/layout'], [context, '/bench/ctx'], [path.join(anchorState, 'state'), '/bench/state'], [path.join(upstreamBin, 'bin'), '/bench/bin']],
})}
chroot $mnt /bin/sh -c '
set -eu
/bench/bin/buildkitd --rootless --addr unix:///run/buildkitd.sock --root /bench/state/buildkit --oci-worker=true --containerd-worker=false >/bench/state/buildkitd.log 2>&1 &
daemon=$!
until /bench/bin/buildctl --addr unix:///run/buildkitd.sock debug workers >/dev/null 2>&1; do sleep 0.1; done
echo anchor-ready
ms() { echo $(( $(date +%s%N) / 1000000 )); }
while read -r word n; do
	[ "$word" = build ] || continue
	t0=$(ms)
	/bench/bin/buildctl --addr unix:///run/buildkitd.sock build --frontend dockerfile.v0 --local context=/bench/ctx --local dockerfile=/bench/ctx \\
		--opt platform=linux/ppc64le --no-cache --oci-layout base=/bench/layout --opt context:debian=oci-layout://base@${topDigest} \\
		--output type=oci,dest=/bench/state/out.tar --progress plain 2>/bench/state/build-$n.log
	t1=$(ms)
	echo "anchor-ms $n $((t1 - t0))"
done
kill $daemon
wait $daemon || true'
`;
const anchorInput = new PassThrough();
const anchorWaiters: Array<(line: string) => void> = [];
const anchorLines: string[] = [];
const anchorErrors: string[] = [];
const anchorDone = runInNamespaces(['/bin/sh', '-c', anchorScript], {
	stdin: anchorInput,
	onStdoutLine(line) {
		const waiter = anchorWaiters.shift();
		if (waiter) {
			waiter(line);
		} else {
			anchorLines.push(line);
		}
	},
	onStderrLine: line => anchorErrors.push(line),
});
const nextAnchorLine = async (): Promise<string> => anchorLines.shift() ?? new Promise(resolve => {
	anchorWaiters.push(resolve);
});
let anchorRuns = 0;
const anchorBuild = async (): Promise<number> => {
	anchorInput.write(`build ${anchorRuns++}\n`);
	const line = await Promise.race([nextAnchorLine(), anchorDone.then(exit => {
		throw new Error(`the anchor ended (${exit.exitCode}): ${anchorErrors.slice(-5).join('\n')}`);
	})]);
	const match = /^anchor-ms \d+ (\d+)$/.exec(line);
	if (!match) {
		throw new Error(`anchor: unexpected line ${line}`);
	}

	return Number(match[1]);
};

const ready = await Promise.race([nextAnchorLine(), anchorDone.then(exit => `ended ${exit.exitCode}: ${anchorErrors.slice(-5).join('\n')}`)]);
if (ready !== 'anchor-ready') {
	throw new Error(`the anchor's buildkitd did not start: ${ready}`);
}

const args = ['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/ppc64le', '--build-context', `debian=oci-layout://${layout}`, '--output', `type=oci,dest=${path.join(work, 'out.tar')}`, context];
/**
 * Where the CLI's wall time goes outside the pipeline's phases, from when each progress line
 * arrives: start-up (process start to the first line), sandbox boot to the agent's first word
 * (the sandbox-start phase ends when the namespace exists, before the agent runs), and the end
 * (the output written to process exit).
 */
const cliSplits: Array<Record<'cliStart' | 'bootToAgent' | 'exit', number>> = [];
const exobuildOnce = async (): Promise<number> => {
	const started = performance.now();
	const marks = new Map<string, number>();
	const child = execa(bin, args, {env: exobuildEnv, reject: false});
	let pending = '';
	child.stderr?.on('data', (chunk: Buffer) => {
		const lines = (pending + chunk.toString('utf8')).split('\n');
		pending = lines.pop() ?? '';
		for (const line of lines) {
			const now = performance.now() - started;
			const text = line.replace(/^#\s+\d+(?:\.\d+)?s /, '');
			const mark = marks.size === 0 ? 'first' : (/^Start sandbox: done/.test(text) ? 'sandbox' : (/^agent \S+ on /.test(text) ? 'agent' : (/^Write the output: done/.test(text) ? 'written' : undefined)));
			if (mark !== undefined && !marks.has(mark)) {
				marks.set(mark, now);
			}
		}
	});
	const result = await child;
	const wall = performance.now() - started;
	if (result.exitCode !== 0) {
		throw new Error(`exobuild failed:\n${result.stderr}`);
	}

	cliSplits.push({cliStart: marks.get('first') ?? 0, bootToAgent: (marks.get('agent') ?? 0) - (marks.get('sandbox') ?? 0), exit: wall - (marks.get('written') ?? wall)});
	return wall;
};

// Warm-ups: the base into each side's store, the page cache.
await anchorBuild();
await exobuildOnce();
await exobuildOnce();

cliSplits.length = 0;
const exobuildWall: number[] = [];
const anchorMs: number[] = [];
for (let index = 0; index < runs; index++) {
	exobuildWall.push(await exobuildOnce());
	anchorMs.push(await anchorBuild());
}

anchorInput.end();
await anchorDone;

// exobuild in-process, for the per-phase split (host phases and the agent's, in ms).
const phaseRuns: Array<Record<string, number>> = [];
for (let index = 0; index < runs; index++) {
	const request = toBuildRequest(context, {
		platform: ['linux/ppc64le'], tag: [], buildArg: [], cache: false, buildContext: [`debian=oci-layout://${layout}`],
		output: [`type=oci,dest=${path.join(work, 'phases.tar')}`], progress: 'plain', engine: 'buildkit', driver: 'linux-userns',
	}, {cwd: work, env: process.env, warn() {}});
	const result = await runBuild(request, {driver: createDriver(request.driver), builders: cacheBuilderStore, reporter: new PlainReporter(() => undefined)});
	phaseRuns.push({...result.phaseMs});
}

fs.rmSync(work, {recursive: true, force: true});

const phases = [...new Set(phaseRuns.flatMap(run => Object.keys(run)))];
const report = {
	date: new Date().toISOString(),
	runs,
	build: 'FROM debian (OCI layout) + RUN echo hi > /hi, --platform linux/ppc64le --no-cache, OCI archive out',
	machine: `${os.cpus().length} cpus, ${os.release()}`,
	loadAverage: {before: loadBefore, after: load()},
	exobuildWarmWallMs: {median: Math.round(median(exobuildWall)), all: exobuildWall.map(Math.round)},
	anchorMs: {median: median(anchorMs), all: anchorMs, what: 'persistent buildkitd v0.32.2 (../shared/upstream), handler pre-registered, base in its store; one buildctl build'},
	ratio: Number((median(exobuildWall) / median(anchorMs)).toFixed(3)),
	phaseMedianMs: Object.fromEntries(phases.map(phase => [phase, median(phaseRuns.map(run => run[phase] ?? 0))])),
	cliSplitMedianMs: Object.fromEntries((['cliStart', 'bootToAgent', 'exit'] as const).map(split => [split, Math.round(median(cliSplits.map(run => run[split])))])),
};
fs.writeFileSync(path.join(repoRoot, 'test', 'bench', 'last-run.json'), `${JSON.stringify(report, undefined, 2)}\n`);
process.stdout.write(`FROM debian + RUN, linux/ppc64le, --no-cache, warm; median of ${runs} interleaved runs (load ${report.loadAverage.before} → ${report.loadAverage.after})\n`);
for (const [phase, ms] of Object.entries(report.phaseMedianMs)) {
	process.stdout.write(`  ${phase.padEnd(16)} ${String(Math.round(ms)).padStart(7)} ms\n`);
}

process.stdout.write(`CLI: start-up to first line ${report.cliSplitMedianMs.cliStart} ms, sandbox boot to agent ${report.cliSplitMedianMs.bootToAgent} ms, output written to exit ${report.cliSplitMedianMs.exit} ms\n`);
process.stdout.write(`exobuild warm (CLI wall) ${report.exobuildWarmWallMs.median} ms\nanchor (persistent buildkitd) ${report.anchorMs.median} ms\nratio ${report.ratio} (issue 10: <= 1.5, goal 1.15)\n`);
await (await import('./routing-bench.js')).runRoutingBench(); // issue 12: routed vs local (test/bench/routing-bench.ts)

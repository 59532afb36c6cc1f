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
 * - Two platforms (issue 10: no longer than the slowest platform + 10% where cores allow): the
 *   same build for linux/ppc64le alone, linux/s390x alone and both in one call, interleaved,
 *   median of BENCH_RUNS each; both against the slower of the two single-platform medians.
 * - Cold: the same build after `exobuild prune --max-cache-size 0` (an empty BuildKit state
 *   slot: the base is imported and unpacked again; the builder image stays unpacked), median of
 *   BENCH_RUNS (the prune is not timed).
 * - Host memory: the CLI's peak RSS (VmHWM of its process, polled every 20 ms) and the peak of
 *   the summed RSS of its whole process tree on the host (the sandbox's processes, buildkitd
 *   among them, are in it), for `COPY` of a file of random bytes: 100 MB by default, and 1 GB
 *   too with BENCH_BIG=1 (slow: BuildKit compresses the layer, the host verifies and repacks it).
 *
 * Output: a table on stdout and test/bench/last-run.json. Not a test: it asserts nothing.
 */
import crypto from 'node:crypto';
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

/**
 * Where the CLI's wall time goes outside the pipeline's phases, from when each progress line
 * arrives: start-up (process start to the first line), sandbox boot to the agent's first word
 * (the sandbox-start phase ends when the namespace exists, before the agent runs), and the end
 * (the output written to process exit).
 */
const cliSplits: Array<Record<'cliStart' | 'bootToAgent' | 'exit', number>> = [];

/** The kB value of a line of /proc/PID/status (VmRSS, VmHWM), or 0 when the process is gone. */
const statusKb = (pid: number, field: 'VmRSS' | 'VmHWM'): number => {
	try {
		const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
		return match ? Number(match[1]) : 0;
	} catch {
		return 0;
	}
};

/** `pid` and every descendant, through /proc/PID/task/TID/children. */
const processTree = (pid: number): number[] => {
	const tree = [pid];
	for (let index = 0; index < tree.length; index++) {
		let tasks: string[] = [];
		try {
			tasks = fs.readdirSync(`/proc/${tree[index]}/task`);
		} catch {
			continue;
		}

		for (const task of tasks) {
			try {
				tree.push(...fs.readFileSync(`/proc/${tree[index]}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
			} catch {
				// Gone meanwhile.
			}
		}
	}

	return tree;
};

interface CliRun {
	readonly wall: number;
	/** The CLI process's peak RSS (VmHWM), kB, as last read before it ended. */
	readonly cliPeakKb: number;
	/** The peak of the summed RSS of the CLI's process tree (sandbox included), kB. */
	readonly treePeakKb: number;
}

const exobuildRun = async (runArgs: readonly string[], options: {splits?: boolean} = {}): Promise<CliRun> => {
	const started = performance.now();
	const marks = new Map<string, number>();
	const child = execa(bin, runArgs, {env: exobuildEnv, reject: false});
	let cliPeakKb = 0;
	let treePeakKb = 0;
	const sample = (): void => {
		if (child.pid === undefined) {
			return;
		}

		cliPeakKb = Math.max(cliPeakKb, statusKb(child.pid, 'VmHWM'));
		treePeakKb = Math.max(treePeakKb, processTree(child.pid).reduce((sum, pid) => sum + statusKb(pid, 'VmRSS'), 0));
	};

	const sampler = setInterval(sample, 20);
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

			if (mark === 'written') {
				// The last chance to read the CLI's VmHWM: only its exit follows.
				sample();
			}
		}
	});
	const result = await child;
	clearInterval(sampler);
	const wall = performance.now() - started;
	if (result.exitCode !== 0) {
		throw new Error(`exobuild ${runArgs.join(' ')} failed:\n${result.stderr.split('\n').slice(-20).join('\n')}`);
	}

	if (options.splits === true) {
		cliSplits.push({cliStart: marks.get('first') ?? 0, bootToAgent: (marks.get('agent') ?? 0) - (marks.get('sandbox') ?? 0), exit: wall - (marks.get('written') ?? wall)});
	}

	return {wall, cliPeakKb, treePeakKb};
};

const buildArgs = (platforms: string, contextDir = context, out = path.join(work, 'out.tar')): string[] => [
	'build', '--progress', 'plain', '--no-cache', '--platform', platforms, '--build-context', `debian=oci-layout://${layout}`, '--output', `type=oci,dest=${out}`, contextDir,
];
const args = buildArgs('linux/ppc64le');
const exobuildOnce = async (): Promise<number> => (await exobuildRun(args, {splits: true})).wall;

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

// Two platforms in one call against the slower single platform, all three interleaved (the load moves).
const twoPlatforms = buildArgs('linux/ppc64le,linux/s390x');
const s390xOnly = buildArgs('linux/s390x');
await exobuildRun(s390xOnly);
await exobuildRun(twoPlatforms);
const ppc64leWall: number[] = [];
const s390xWall: number[] = [];
const twoWall: number[] = [];
for (let index = 0; index < runs; index++) {
	ppc64leWall.push((await exobuildRun(args)).wall);
	s390xWall.push((await exobuildRun(s390xOnly)).wall);
	twoWall.push((await exobuildRun(twoPlatforms)).wall);
}

// Cold: an empty state slot before each run (prune not timed).
const coldWall: number[] = [];
for (let index = 0; index < runs; index++) {
	const pruned = await execa(bin, ['prune', '--max-cache-size', '0'], {env: exobuildEnv, reject: false});
	if (pruned.exitCode !== 0) {
		throw new Error(`exobuild prune failed: ${pruned.stderr}`);
	}

	coldWall.push((await exobuildRun(args)).wall);
}

// Host memory for an image with one big layer of random bytes (incompressible), warm state.
const memoryRuns: Array<{imageMb: number; wallMs: number; cliPeakMb: number; treePeakMb: number; outputMb: number}> = [];
for (const megabytes of process.env['BENCH_BIG'] === '1' ? [100, 1024] : [100]) {
	const bigContext = path.join(work, `big-${megabytes}`);
	fs.mkdirSync(bigContext);
	fs.writeFileSync(path.join(bigContext, 'Dockerfile'), 'FROM debian\nCOPY random.bin /random.bin\n');
	const handle = fs.openSync(path.join(bigContext, 'random.bin'), 'w');
	const chunk = Buffer.alloc(1024 * 1024);
	for (let written = 0; written < megabytes; written++) {
		crypto.randomFillSync(chunk);
		fs.writeSync(handle, chunk);
	}

	fs.closeSync(handle);
	const out = path.join(work, `big-${megabytes}.tar`);
	const run = await exobuildRun(buildArgs('linux/ppc64le', bigContext, out));
	memoryRuns.push({imageMb: megabytes, wallMs: Math.round(run.wall), cliPeakMb: Math.round(run.cliPeakKb / 1024), treePeakMb: Math.round(run.treePeakKb / 1024), outputMb: Math.round(fs.statSync(out).size / 1024 / 1024)});
	fs.rmSync(bigContext, {recursive: true, force: true});
	fs.rmSync(out, {force: true});
}

// exobuild in-process, for the per-phase split (host phases and the agent's, in ms).
/** A failed in-process build is counted and its output's end shown, not fatal: the bench's other results stand. */
const phaseFailures: string[] = [];
const phasesOf = async (platform: string): Promise<Record<string, number> | undefined> => {
	const request = toBuildRequest(context, {
		platform: [platform], tag: [], buildArg: [], cache: false, buildContext: [`debian=oci-layout://${layout}`],
		output: [`type=oci,dest=${path.join(work, 'phases.tar')}`], progress: 'plain', engine: 'buildkit', driver: 'linux-userns',
	}, {cwd: work, env: process.env, warn() {}});
	const lines: string[] = [];
	try {
		const result = await runBuild(request, {driver: createDriver(request.driver), builders: cacheBuilderStore, reporter: new PlainReporter(line => lines.push(line))});
		return {...result.phaseMs};
	} catch (error) {
		phaseFailures.push(`${platform}: ${(error as Error).message}`);
		process.stderr.write(`bench: an in-process ${platform} build failed: ${(error as Error).message}\n${lines.slice(-30).join('\n')}\n`);
		return undefined;
	}
};

const phaseRuns: Array<Record<string, number>> = [];
const twoPhaseRuns: Array<Record<string, number>> = [];
for (let index = 0; index < runs; index++) {
	const one = await phasesOf('linux/ppc64le');
	const two = await phasesOf('linux/ppc64le,linux/s390x');
	for (const [list, run] of [[phaseRuns, one], [twoPhaseRuns, two]] as const) {
		if (run !== undefined) {
			list.push(run);
		}
	}
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
	twoPlatforms: {
		what: '--platform linux/ppc64le,linux/s390x in one call against the slower of the two single-platform builds (warm, CLI wall)',
		ppc64leMedianMs: Math.round(median(ppc64leWall)),
		s390xMedianMs: Math.round(median(s390xWall)),
		bothMedianMs: Math.round(median(twoWall)),
		all: {ppc64le: ppc64leWall.map(Math.round), s390x: s390xWall.map(Math.round), both: twoWall.map(Math.round)},
		ratio: Number((median(twoWall) / Math.max(median(ppc64leWall), median(s390xWall))).toFixed(3)),
		phaseMedianMs: Object.fromEntries(phases.map(phase => [phase, median(twoPhaseRuns.map(run => run[phase] ?? 0))])),
	},
	exobuildColdWallMs: {median: Math.round(median(coldWall)), all: coldWall.map(Math.round), what: 'after exobuild prune --max-cache-size 0: an empty BuildKit state slot (builder image still unpacked)'},
	phaseRunFailures: phaseFailures,
	hostMemory: {what: 'COPY of a file of random bytes, OCI archive out, warm; CLI peak RSS (VmHWM) and peak summed RSS of its process tree (sandbox included)', runs: memoryRuns},
};
fs.writeFileSync(path.join(repoRoot, 'test', 'bench', 'last-run.json'), `${JSON.stringify(report, undefined, 2)}\n`);
process.stdout.write(`FROM debian + RUN, linux/ppc64le, --no-cache, warm; median of ${runs} interleaved runs (load ${report.loadAverage.before} → ${report.loadAverage.after})\n`);
process.stdout.write(`  ${'phase'.padEnd(16)} ${'ppc64le'.padStart(7)}    ${'ppc64le,s390x'.padStart(13)}\n`);
for (const [phase, ms] of Object.entries(report.phaseMedianMs)) {
	process.stdout.write(`  ${phase.padEnd(16)} ${String(Math.round(ms)).padStart(7)} ms ${String(Math.round(report.twoPlatforms.phaseMedianMs[phase] ?? 0)).padStart(10)} ms\n`);
}

process.stdout.write(`CLI: start-up to first line ${report.cliSplitMedianMs.cliStart} ms, sandbox boot to agent ${report.cliSplitMedianMs.bootToAgent} ms, output written to exit ${report.cliSplitMedianMs.exit} ms\n`);
process.stdout.write(`exobuild warm (CLI wall) ${report.exobuildWarmWallMs.median} ms\nanchor (persistent buildkitd) ${report.anchorMs.median} ms\nratio ${report.ratio} (issue 10: <= 1.5, goal 1.15)\n`);
process.stdout.write(`exobuild cold (empty state slot) ${report.exobuildColdWallMs.median} ms\n`);
process.stdout.write(`two platforms ${report.twoPlatforms.bothMedianMs} ms vs ppc64le ${report.twoPlatforms.ppc64leMedianMs} ms, s390x ${report.twoPlatforms.s390xMedianMs} ms: ratio ${report.twoPlatforms.ratio} (issue 10: <= 1.10)\n`);
for (const run of memoryRuns) {
	process.stdout.write(`${run.imageMb} MB layer: CLI peak RSS ${run.cliPeakMb} MB, process tree peak ${run.treePeakMb} MB, wall ${run.wallMs} ms, archive ${run.outputMb} MB\n`);
}
await (await import('./routing-bench.js')).runRoutingBench(); // issue 12: routed vs local (test/bench/routing-bench.ts)

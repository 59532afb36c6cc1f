/**
 * `npm run bench`: per-phase timings of a small linux/ppc64le build, and the ratio of exobuild's
 * total wall time (the CLI, from process start to exit) to the same engine building and
 * exporting the same Dockerfile directly, with the handler registered beforehand.
 *
 * The baseline runs the builder image's own buildah (same binary, same flags as the agent gives
 * it, same storage driver, same isolation) chrooted into the same unpacked builder rootfs, with
 * empty storage, in a private user namespace whose
 * binfmt_misc already holds the ppc64le handler before the clock starts (the host's own table
 * is never touched). It leaves out everything exobuild adds: CLI start, validation, builder
 * lookup, sandbox boot, handler registration and proof, agent, archive packing, teardown.
 *
 * exobuild's measured builds get an empty cache folder each (--cache-to), so both sides do the
 * same engine work. Then: a rebuild with no change (warm cache, new sandbox) and how many steps
 * came from the cache.
 *
 * Output: a table on stdout and test/bench/last-run.json. Not a test: it asserts nothing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {execa} from 'execa';
import {ensureBuilderImage} from '../../src/builder-image/index.js';
import {toBuildRequest} from '../../src/cli/build-flags/options.js';
import {cacheBuilderStore, runBuild} from '../../src/pipeline/run-build.js';
import {PlainReporter} from '../../src/progress/plain-reporter.js';
import {platformSlug} from '../../src/agent/agent-args.js';
import {resolvePlatformManifests, writePlatformView} from '../../src/oci/index.js';
import {parsePlatform} from '../../src/platforms/parse.js';
import {createDriver} from '../../src/sandboxes/index.js';
import {builderRootfs} from '../../src/sandboxes/linux-userns/index.js';
import {runInPrivateUserns} from '../../src/sandboxes/linux-userns/namespaces.js';
import {busyboxLayout} from '../fixtures/base-images.js';
import {bin, exobuildEnv, fixturesDir, repoRoot} from '../e2e/helpers.js';

const runs = Number(process.env['BENCH_RUNS'] ?? 5);
Object.assign(process.env, exobuildEnv);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-bench-'));
// A small but real build: two RUN steps that do some work under emulation (checksums of 192 MiB,
// an archive of /bin), a COPY from the context, a second stage.
const dockerfile = [
	'FROM busybox AS work',
	'RUN uname -m > /uname.txt && dd if=/dev/zero bs=1M count=192 2>/dev/null | sha256sum > /sum.txt && dd if=/dev/zero bs=1M count=192 2>/dev/null | md5sum >> /sum.txt',
	'COPY input.txt /input.txt',
	'RUN tar -cf /bin.tar /bin && gzip -9 /bin.tar && ls -l /bin.tar.gz > /size.txt',
	'FROM busybox',
	'COPY --from=work /uname.txt /sum.txt /size.txt /',
	'',
].join('\n');
const context = path.join(work, 'ctx');
fs.mkdirSync(context);
fs.writeFileSync(path.join(context, 'Dockerfile'), dockerfile);
fs.writeFileSync(path.join(context, 'input.txt'), 'bench input\n');

const median = (values: number[]): number => {
	const sorted = [...values].sort((a, b) => a - b);
	const middle = Math.floor(sorted.length / 2);
	return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

const layout = await busyboxLayout(['linux/ppc64le'], path.join(fixturesDir, 'busybox-bench'));
const builder = await ensureBuilderImage({});
const rootfs = await builderRootfs(builder);

// exobuild, through the CLI (what a user waits for).
// Every measured build starts from an empty cache folder (cold, as the baseline is), so the ratio
// compares the same engine work; the rebuild measurement below uses a warm one.
let cacheRuns = 0;
const coldCache = (): string => path.join(work, `cache-${cacheRuns++}`);
const args = (cache: string): string[] => [
	'build', '--progress', 'plain', '--platform', 'linux/ppc64le', '--build-context', `busybox=oci-layout://${layout}`,
	'--cache-to', `type=local,dest=${cache}`, '--output', `type=oci,dest=${path.join(work, 'out.tar')}`, context,
];
await execa(bin, args(coldCache()), {env: exobuildEnv}); // warm-up: page cache, rootfs unpack, agent layer

// exobuild in-process, for the per-phase split.
const phaseRuns: Array<Record<string, number>> = [];
for (let index = 0; index < runs; index++) {
	const request = toBuildRequest(context, {
		platform: ['linux/ppc64le'], tag: [], buildArg: [], cache: true, buildContext: [`busybox=oci-layout://${layout}`],
		output: [`type=oci,dest=${path.join(work, 'phases.tar')}`], progress: 'plain', engine: 'buildah', driver: 'linux-userns', cacheTo: [`type=local,dest=${coldCache()}`],
	}, {cwd: work, env: process.env, warn() {}});
	const result = await runBuild(request, {driver: createDriver(request.driver), builders: cacheBuilderStore, reporter: new PlainReporter(() => undefined)});
	phaseRuns.push({...result.phaseMs});
}

// Baseline: the same buildah, same Dockerfile, handler pre-registered, no exobuild around it.
const ppc64le = parsePlatform('linux/ppc64le');
const manifests = await resolvePlatformManifests(layout, ['linux/ppc64le'], {name: 'busybox'});
const view = path.join(work, 'view');
await writePlatformView(manifests.platforms.get('linux/ppc64le')!, path.join(view, platformSlug('linux/ppc64le')), '/bench/layout/blobs', 'busybox');
/** The baseline's own steps, to set beside exobuild's base-images, build and export phases. */
const baselineSteps: Array<Record<'pull' | 'build' | 'push', number>> = [];
const baselineOnce = async (): Promise<number> => {
	const run = fs.mkdtempSync(path.join(work, 'baseline-'));
	for (const dir of ['upper', 'work', 'state']) {
		fs.mkdirSync(path.join(run, dir));
	}

	const script = `set -eu
root=${rootfs}
mnt=${run}/mnt
mkdir $mnt
mount -t overlay overlay -o lowerdir=$root,upperdir=${run}/upper,workdir=${run}/work $mnt
mount -t proc proc $mnt/proc
mount --rbind /dev $mnt/dev
mount --rbind /sys $mnt/sys
mount -t tmpfs tmpfs $mnt/tmp
mount -t tmpfs tmpfs $mnt/run
mkdir -p $mnt/bench/layout $mnt/bench/view $mnt/bench/ctx $mnt/bench/state
mount --bind ${layout} $mnt/bench/layout
mount --bind ${view} $mnt/bench/view
mount --bind ${context} $mnt/bench/ctx
mount --bind ${run}/state $mnt/bench/state
mount -t binfmt_misc binfmt_misc $mnt/proc/sys/fs/binfmt_misc
# Registered from inside the chroot: with F the kernel opens the interpreter path in the
# registering process's root, so this is the builder image's QEMU, as in exobuild's sandbox (from
# outside, it was the host's older QEMU, which runs this build faster and skewed the ratio).
chroot $mnt /bin/sh -c "printf '%s' ':qemu-${ppc64le.arch.qemu}:M::${ppc64le.arch.magic}:${ppc64le.arch.mask}:/usr/bin/qemu-${ppc64le.arch.qemu}-static:FPC' > /proc/sys/fs/binfmt_misc/register"
chroot $mnt /bin/sh -c '
set -eu
b="buildah --root /bench/state/containers --runroot /bench/state/run --storage-driver overlay"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
$b pull -q --platform linux/ppc64le oci:/bench/view/${platformSlug('linux/ppc64le')}:busybox >/dev/null
t1=$(ms)
$b build --isolation chroot --network host --platform linux/ppc64le --pull=never --layers -f /bench/ctx/Dockerfile -t out /bench/ctx >/dev/null
t2=$(ms)
$b push -q --format oci out oci:/bench/state/out:latest
t3=$(ms)
echo "baseline-ms $((t3 - t0)) pull $((t1 - t0)) build $((t2 - t1)) push $((t3 - t2))"'
`;
	const baseline = await runInPrivateUserns(['/bin/sh', '-c', script]);
	fs.rmSync(run, {recursive: true, force: true});
	const times = /baseline-ms (\d+) pull (\d+) build (\d+) push (\d+)/.exec(baseline.stdout);
	if (baseline.exitCode !== 0 || times === null) {
		throw new Error(`baseline failed (${baseline.exitCode}):\n${baseline.stderr}\n${baseline.stdout}`);
	}

	baselineSteps.push({pull: Number(times[2]), build: Number(times[3]), push: Number(times[4])});
	return Number(times[1]);
};

// Interleaved, so that drift of the machine's speed hits both sides alike.
const exobuildWall: number[] = [];
const baselineMs: number[] = [];
await baselineOnce(); // warm-up
for (let index = 0; index < runs; index++) {
	const started = performance.now();
	await execa(bin, args(coldCache()), {env: exobuildEnv});
	exobuildWall.push(performance.now() - started);
	baselineMs.push(await baselineOnce());
}

// A rebuild with no change: every step comes from the kept cache, though the sandbox is new.
const warm = coldCache();
await execa(bin, args(warm), {env: exobuildEnv});
const rebuildWall: number[] = [];
let cachedSteps = '';
for (let index = 0; index < runs; index++) {
	const started = performance.now();
	const rebuild = await execa(bin, args(warm), {env: exobuildEnv});
	rebuildWall.push(performance.now() - started);
	const lines = String(rebuild.stderr).split('\n');
	const steps = lines.filter(line => /^#\d+ \[/.test(line) && !/\] FROM /.test(line)).length;
	cachedSteps = `${lines.filter(line => /^#\d+ CACHED$/.test(line)).length}/${steps}`;
}

fs.rmSync(work, {recursive: true, force: true});

const phases = [...new Set(phaseRuns.flatMap(run => Object.keys(run)))];
const report = {
	date: new Date().toISOString(),
	runs,
	machine: `${os.cpus().length} cpus, ${os.release()}`,
	exobuildWallMs: {median: Math.round(median(exobuildWall)), all: exobuildWall.map(Math.round)},
	baselineMs: {median: median(baselineMs), all: baselineMs},
	ratio: Number((median(exobuildWall) / median(baselineMs)).toFixed(3)),
	rebuildWallMs: {median: Math.round(median(rebuildWall)), all: rebuildWall.map(Math.round), cachedSteps},
	phaseMedianMs: Object.fromEntries(phases.map(phase => [phase, median(phaseRuns.map(run => run[phase] ?? 0))])),
	baselineStepMedianMs: Object.fromEntries((['pull', 'build', 'push'] as const).map(step => [step, median(baselineSteps.slice(1).map(steps => steps[step]))])),
};
fs.writeFileSync(path.join(repoRoot, 'test', 'bench', 'last-run.json'), `${JSON.stringify(report, undefined, 2)}\n`);
process.stdout.write(`small linux/ppc64le build, median of ${runs} runs\n`);
for (const [phase, ms] of Object.entries(report.phaseMedianMs)) {
	process.stdout.write(`  ${phase.padEnd(16)} ${String(ms).padStart(7)} ms\n`);
}

process.stdout.write(`baseline steps: ${Object.entries(report.baselineStepMedianMs).map(([step, ms]) => `${step} ${ms} ms`).join(', ')}\n`);
process.stdout.write(`exobuild total (CLI wall) ${report.exobuildWallMs.median} ms\nbaseline (same buildah, handler pre-registered) ${report.baselineMs.median} ms\noverhead ratio ${report.ratio} (target <= 1.15)\n`);
process.stdout.write(`rebuild with no change (warm cache, new sandbox): ${report.rebuildWallMs.median} ms, steps cached ${cachedSteps}\n`);

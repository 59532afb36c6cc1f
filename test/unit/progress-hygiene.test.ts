/** Plain/TTY progress hygiene: no engine daemon log without --debug, no line twice, rawjson untouched. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import type {AgentEvent} from '../../src/agent/contract.js';
import {keepDaemonLog, withKeptDaemonLog} from '../../src/agent/daemon-log.js';
import {daemonLogPath} from '../../src/agent/agent-args.js';
import {PlainReporter} from '../../src/progress/plain-reporter.js';
import {RawJsonReporter} from '../../src/progress/quiet-reporters.js';
import {StepTracker} from '../../src/progress/steps.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-progress-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));

const hello = (engine: 'buildkit' | 'buildah'): AgentEvent => ({v: 1, event: 'hello', agentVersion: '0.1.0', machine: 'x86_64', kernel: '6.1', engine});
const log = (line: string, source: 'engine' | 'daemon' = 'engine', platform?: string): AgentEvent => ({v: 1, event: 'log', source, line, ...(platform === undefined ? {} : {platform})});

/** Feeds events as src/pipeline does (each event, then the steps read from engine lines) and returns the printed lines without the time prefix. */
const plainOutput = (events: readonly AgentEvent[], debug = false): string[] => {
	const printed: string[] = [];
	const reporter = new PlainReporter(line => printed.push(line.replace(/^#\s*\d+\.\d+s /, '')), {debug});
	const steps = new StepTracker();
	for (const event of events) {
		reporter.report({kind: 'agent', event});
		for (const {step, state} of event.event === 'log' && event.source === 'engine' ? steps.onLine(event.platform, event.line) : []) {
			reporter.report({kind: 'step', id: steps.steps.indexOf(step) + 1, name: step.name, state, cached: step.cached, ...(step.ms === undefined ? {} : {ms: step.ms})});
		}
	}

	return printed;
};

const buildkitOutput = [
	'#1 [internal] load build definition from Dockerfile', '#1 DONE 0.1s', '',
	'#4 [linux/ppc64le 2/3] RUN echo hi', '#4 0.512 hi', '#4 DONE 17.2s', '',
	'#5 [linux/ppc64le 3/3] COPY a /', '#5 CACHED',
];

test('BuildKit: every step line is printed once (BuildKit\'s plain output already is docker\'s plain style)', () => {
	const printed = plainOutput([hello('buildkit'), ...buildkitOutput.map(line => log(line, 'engine'))]);
	for (const line of buildkitOutput.filter(Boolean)) {
		assert.equal(printed.filter(text => text === line).length, 1, `${line} in:\n${printed.join('\n')}`);
	}

	assert.equal(printed.filter(text => /RUN echo hi/.test(text)).length, 1);
});

test('buildah: steps read from its output are still shown, with their timing', () => {
	const printed = plainOutput([hello('buildah'), log('STEP 1/2: FROM busybox', 'engine', 'linux/s390x'), log('STEP 2/2: RUN true', 'engine', 'linux/s390x'), log('COMMIT exobuild-out-linux-s390x', 'engine', 'linux/s390x')]);
	assert.ok(printed.includes('#1 [linux/s390x 1/2] FROM busybox'), printed.join('\n'));
	assert.ok(printed.some(line => /^#2 DONE \d+\.\ds$/.test(line)), printed.join('\n'));
});

test('the daemon log and buildctl\'s logrus diagnostics are shown only with --debug; errors always', () => {
	const events = [
		hello('buildkit'),
		log('time="2026-12-03T03:15:58Z" level=warning msg="CDI setup error /etc/cdi: failed to monitor for changes"', 'daemon'),
		log('buildkitd: got SIGTERM/SIGINT, forcing shutdown', 'daemon'),
		log('time="2026-12-03T03:20:00Z" level=warning msg="failed check for fsverity support" error="enable fsverity failed"', 'engine'),
		log('error: failed to solve: process "/bin/sh -c exit 3" did not complete successfully: exit code: 3', 'engine'),
	];
	const quiet = plainOutput(events);
	assert.equal(quiet.some(line => /level=|forcing shutdown/.test(line)), false, quiet.join('\n'));
	assert.ok(quiet.some(line => line.startsWith('error: failed to solve')));
	const debug = plainOutput(events, true);
	assert.ok(debug.includes('daemon: buildkitd: got SIGTERM/SIGINT, forcing shutdown'), debug.join('\n'));
	assert.ok(debug.some(line => line.includes('failed check for fsverity support')));
});

test('rawjson: BuildKit\'s SolveStatus lines are written as they came, nothing else', () => {
	const status = [
		'{"vertexes":[{"digest":"sha256:e6b8","name":"[linux/ppc64le 2/3] RUN echo \\"hi\\" \\u0026\\u0026 printf \'\\\\t\'","started":"2026-12-03T03:20:00.1Z"}]}',
		'{"logs":[{"vertex":"sha256:e6b8","stream":1,"data":"aGkK","timestamp":"2026-12-03T03:20:00.2Z"}],"statuses":[{"id":"ünï","name":"\\t"}]}',
	];
	let written = '';
	const reporter = new RawJsonReporter(line => {
		written += `${line}\n`;
	});
	for (const event of [hello('buildkit'), log('time="x" level=warning msg="y"'), ...status.map(line => log(line)), log('{"from":"the daemon"}', 'daemon')]) {
		reporter.report({kind: 'agent', event});
	}

	assert.equal(written, status.map(line => `${line}\n`).join(''));
});

test('keepDaemonLog moves the daemon log into the logs folder, refuses a symlink, and an engine error names the kept file', async () => {
	const env = {EXOBUILD_CACHE_DIR: path.join(root, 'cache')};
	const out = path.join(root, 'out');
	fs.mkdirSync(out);
	fs.writeFileSync(path.join(out, 'engine-daemon.log'), 'level=info msg="running server"\n');
	const kept = await keepDaemonLog(out, 'session-1', env);
	assert.equal(kept, path.join(root, 'cache', 'logs', 'session-1-engine-daemon.log'));
	assert.equal(fs.readFileSync(kept, 'utf8'), 'level=info msg="running server"\n');
	assert.equal(fs.existsSync(path.join(out, 'engine-daemon.log')), false);
	assert.equal(await keepDaemonLog(out, 'session-2', env), undefined, 'no log (buildah): nothing kept');

	// The out folder is written by the sandbox: a symlink there must not make exobuild read a host file.
	fs.writeFileSync(path.join(root, 'host-secret'), 'do not copy');
	fs.symlinkSync(path.join(root, 'host-secret'), path.join(out, 'engine-daemon.log'));
	assert.equal(await keepDaemonLog(out, 'session-3', env), undefined);
	assert.equal(fs.existsSync(path.join(root, 'cache', 'logs', 'session-3-engine-daemon.log')), false);

	assert.equal(withKeptDaemonLog(`buildkitd did not become ready: no answer within 60000 ms (its log: ${daemonLogPath})`, kept), `buildkitd did not become ready: no answer within 60000 ms (its log: ${kept})`);
});

test('keepDaemonLog: builds ending at once trim the logs folder together and none fails for it', async () => {
	const env = {EXOBUILD_CACHE_DIR: path.join(root, 'cache-many')};
	// More than are kept, so every call trims while the others write and trim (eight builds at once found this: ENOENT from lstat).
	const outs = Array.from({length: 40}, (_, index) => {
		const out = path.join(root, `out-many-${index}`);
		fs.mkdirSync(out);
		fs.writeFileSync(path.join(out, 'engine-daemon.log'), `log ${index}\n`);
		return out;
	});
	const kept = await Promise.all(outs.map(async (out, index) => keepDaemonLog(out, `many-${index}`, env)));
	assert.equal(kept.filter(file => file !== undefined).length, 40);
	const left = fs.readdirSync(path.join(root, 'cache-many', 'logs')).filter(name => name.endsWith('-engine-daemon.log'));
	assert.ok(left.length > 0 && left.length <= 40, `${left.length} logs left`);
});

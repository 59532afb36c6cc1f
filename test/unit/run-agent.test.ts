/** runAgent's outcomes, with an in-memory sandbox that replays agent output. */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {runAgent, type RunAgentOptions} from '../../src/agent/run-agent.js';
import type {AgentExit, AgentRun} from '../../src/sandboxes/driver.js';

const line = (event: Record<string, unknown>): string => JSON.stringify({v: 1, ...event});
const hello = line({event: 'hello', agentVersion: '0.1.0', machine: 'x86_64', kernel: '6.1', engine: 'buildkit'});
const result = line({event: 'result', engine: 'buildkit', layout: '/exobuild/out/oci-layout', platforms: ['linux/ppc64le'], digest: `sha256:${'a'.repeat(64)}`});
const error = (code: string, platform?: string): string => line({event: 'error', code, message: `${code} happened`, ...(platform === undefined ? {} : {platform})});

interface Replay {
	readonly stdout: readonly string[];
	readonly stderr?: readonly string[];
	readonly exit: AgentExit;
	/** Abort the caller's controller after this many stdout lines. */
	readonly abortAfter?: number;
}

/** A Sandbox whose agent prints the given lines and exits as given; it records what it was run with. */
const replaying = (replay: Replay, controller?: AbortController) => {
	const runs: AgentRun[] = [];
	return {
		runs,
		async runAgent(run: AgentRun): Promise<AgentExit> {
			runs.push(run);
			for (const [index, text] of replay.stdout.entries()) {
				run.onStdoutLine(text);
				if (replay.abortAfter === index + 1) {
					controller?.abort();
				}
			}

			for (const text of replay.stderr ?? []) {
				run.onStderrLine(text);
			}

			return replay.exit;
		},
	};
};

const run = async (replay: Replay, options: Partial<RunAgentOptions> = {}, controller?: AbortController) => {
	const sandbox = replaying(replay, controller);
	const events: string[] = [];
	const stderr: string[] = [];
	const outcome = await runAgent(sandbox, {args: ['build'], onEvent: event => events.push(event.event), onStderrLine: text => stderr.push(text), ...options});
	return {outcome, events, stderr, runs: sandbox.runs};
};

test('succeeded: a result event and exit 0; args and stdin reach the sandbox; every event is handed on', async () => {
	const {outcome, events, runs} = await run({stdout: [hello, '', result], exit: {exitCode: 0, signal: undefined}}, {args: ['build', '--engine', 'buildkit'], stdin: 'id\tdmFsdWU=\n'});
	assert.equal(outcome.kind, 'succeeded');
	assert.equal(outcome.kind === 'succeeded' ? outcome.result?.digest : undefined, `sha256:${'a'.repeat(64)}`);
	assert.deepEqual(events, ['hello', 'result']);
	assert.deepEqual([runs[0]!.args, runs[0]!.stdin], [['build', '--engine', 'buildkit'], 'id\tdmFsdWU=\n']);
});

test('failed: the first error event, with the exit code', async () => {
	const {outcome} = await run({stdout: [hello, error('E_ENGINE_START'), error('E_INTERNAL')], exit: {exitCode: 1, signal: undefined}});
	assert.equal(outcome.kind, 'failed');
	assert.deepEqual(outcome.kind === 'failed' ? [outcome.error.code, outcome.error.message, outcome.exitCode] : [], ['E_ENGINE_START', 'E_ENGINE_START happened', 1]);
});

test('protocol error: a line off the contract, even when the agent then exits 0 with a result', async () => {
	for (const bad of ['not json', line({event: 'hello'}), line({event: 'log', source: 'kernel', line: 'x'}), JSON.stringify({v: 2, event: 'result'})]) {
		const {outcome} = await run({stdout: [hello, bad, result], exit: {exitCode: 0, signal: undefined}});
		assert.equal(outcome.kind, 'protocol-error', bad);
		assert.ok(outcome.kind === 'protocol-error' && outcome.error.message.length > 0);
	}
});

test('a daemon log event (source daemon) is on contract', async () => {
	const {outcome, events} = await run({stdout: [hello, line({event: 'log', source: 'daemon', line: 'level=info msg=x'}), result], exit: {exitCode: 0, signal: undefined}});
	assert.equal(outcome.kind, 'succeeded');
	assert.deepEqual(events, ['hello', 'log', 'result']);
});

test('crashed: no terminal event; exit code, signal and the last non-empty stderr line', async () => {
	const {outcome, stderr} = await run({stdout: [hello], stderr: ['first', 'sh: 12: syntax error', '  '], exit: {exitCode: 2, signal: undefined}});
	assert.deepEqual(outcome, {kind: 'crashed', exitCode: 2, signal: undefined, lastStderr: 'sh: 12: syntax error'});
	assert.deepEqual(stderr, ['first', 'sh: 12: syntax error', '  ']);
	const killed = await run({stdout: [hello], exit: {exitCode: undefined, signal: 'SIGKILL'}});
	assert.deepEqual(killed.outcome, {kind: 'crashed', exitCode: undefined, signal: 'SIGKILL', lastStderr: undefined});
	// A result without exit 0 is no success.
	assert.equal((await run({stdout: [hello, result], exit: {exitCode: 1, signal: undefined}})).outcome.kind, 'crashed');
});

test('interrupted: the caller aborted, whatever the agent printed after', async () => {
	const controller = new AbortController();
	const {outcome, runs} = await run({stdout: [hello, error('E_INTERRUPTED')], exit: {exitCode: 1, signal: undefined}, abortAfter: 1}, {signal: controller.signal}, controller);
	assert.equal(outcome.kind, 'interrupted');
	assert.equal(runs[0]!.signal, controller.signal, 'the signal reaches the sandbox');
});

test('prove: per-platform errors are results, not terminal; exit 1 with one is failed; an error without platform is terminal', async () => {
	const handler = line({event: 'handler', platform: 'linux/ppc64le', mode: 'native', registeredBy: 'none', proof: 'ppc64le'});
	const proven = await run({stdout: [hello, handler], exit: {exitCode: 0, signal: undefined}}, {mode: 'prove'});
	assert.deepEqual(proven.outcome, {kind: 'succeeded', result: undefined});
	const onePlatform = await run({stdout: [hello, error('E_HANDLER_PROOF', 'linux/s390x'), handler], exit: {exitCode: 1, signal: undefined}}, {mode: 'prove'});
	assert.equal(onePlatform.outcome.kind, 'failed');
	assert.equal(onePlatform.outcome.kind === 'failed' ? onePlatform.outcome.error.platform : undefined, 'linux/s390x');
	assert.deepEqual(onePlatform.events, ['hello', 'error', 'handler'], 'the other platforms are still reported');
	const terminal = await run({stdout: [hello, error('E_BINFMT_MOUNT')], exit: {exitCode: 1, signal: undefined}}, {mode: 'prove'});
	assert.equal(terminal.outcome.kind === 'failed' ? terminal.outcome.error.code : undefined, 'E_BINFMT_MOUNT');
	// In build mode an error with a platform is terminal.
	assert.equal((await run({stdout: [hello, error('E_HANDLER_PROOF', 'linux/s390x')], exit: {exitCode: 1, signal: undefined}})).outcome.kind, 'failed');
});

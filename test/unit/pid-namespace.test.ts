/**
 * The sweep that empties a sandbox's pid namespace after it ends (namespaces.ts) names the
 * namespace by its /proc link ("pid:[N]"), and the kernel gives N to the next pid namespace made
 * once the old one is freed. Found by eight concurrent builds: one build's sweep SIGKILLed
 * another build's RUN step (exit 137, or runc's "write init-p: broken pipe"). The sweep now
 * holds the namespace open, so N stays its own.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import {test} from 'node:test';
import {execa} from 'execa';
import {holdPidNamespace, processesInPidNamespace} from '../../src/sandboxes/linux-userns/namespaces.js';

/** unshare of a new pid namespace (with a user namespace when not root, where that is allowed). */
const unshareArgs = (): string[] => [...(process.getuid?.() === 0 ? [] : ['--user', '--map-root-user']), '--pid', '--fork', '--kill-child'];

const canUnshare = async (): Promise<boolean> => (await execa('unshare', [...unshareArgs(), 'true'], {reject: false})).exitCode === 0;

/** Starts `sleep` as pid 1 of a new pid namespace; its host pid and a stop that waits for it. */
const namespaceWithSleep = async () => {
	const unshare = execa('unshare', [...unshareArgs(), 'sleep', '60'], {reject: false});
	let sleeper: number | undefined;
	for (let attempt = 0; attempt < 500 && sleeper === undefined; attempt++) {
		const children = await fs.readFile(`/proc/${unshare.pid}/task/${unshare.pid}/children`, 'utf8').catch(() => '');
		sleeper = Number(children.trim().split(/\s+/)[0]) || undefined;
		await new Promise(resolve => setTimeout(resolve, 5));
	}

	assert.ok(sleeper !== undefined, 'unshare forked its child');
	return {
		sleeper,
		async stop() {
			unshare.kill('SIGKILL');
			await unshare;
		},
	};
};

test('holdPidNamespace refuses this process\'s own pid namespace, and a process that is gone', async () => {
	assert.equal(await holdPidNamespace(process.pid), undefined, 'never hand out the namespace the host\'s processes live in');
	const done = execa('true');
	const pid = done.pid!;
	await done;
	// The pid may already be someone else's; the point is only that a missing /proc entry is no error.
	const held = await holdPidNamespace(pid);
	await held?.release();
});

test('a held pid namespace keeps its number: one made after it ended gets another, and the sweep finds none of its processes', async t => {
	if (!(await canUnshare())) {
		t.skip('unshare --pid is not allowed here');
		return;
	}

	const first = await namespaceWithSleep();
	const held = await holdPidNamespace(first.sleeper);
	assert.ok(held !== undefined);
	assert.match(held.link, /^pid:\[\d+\]$/);
	assert.deepEqual(await processesInPidNamespace(held.link), [first.sleeper]);
	await first.stop();
	assert.deepEqual(await processesInPidNamespace(held.link), [], 'the namespace is empty once its pid 1 is gone');

	const second = await namespaceWithSleep();
	try {
		const secondLink = await fs.readlink(`/proc/${second.sleeper}/ns/pid`);
		assert.notEqual(secondLink, held.link, 'while the first is held open its number is not given to a new namespace');
		assert.deepEqual(await processesInPidNamespace(held.link), [], 'a sweep of the first namespace sees nothing of the second');
	} finally {
		await held.release();
		await second.stop();
	}
});

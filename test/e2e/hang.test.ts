/**
 * A RUN step that prints nothing and uses no CPU (here: sleep under the ppc64le emulator) is
 * diagnosed as a likely emulator hang within the configured time, named, and stopped cleanly.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {busyboxLayout} from '../fixtures/base-images.js';
import {assertNothingLeft, exobuild, fixturesDir, hostBinfmtSnapshot, makeContext} from './helpers.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-hang-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));

test('a silent, idle step ends with the hang diagnosis within the timeout, leaving nothing behind', async () => {
	const layout = await busyboxLayout(['linux/ppc64le'], path.join(fixturesDir, 'busybox'));
	const binfmtBefore = hostBinfmtSnapshot();
	const context = makeContext(path.join(work, 'hang'), {Dockerfile: 'FROM busybox\nRUN echo about-to-hang && sleep 600\n'});
	const started = Date.now();
	const result = await exobuild(['build', '--progress', 'plain', '--no-cache', '--platform', 'linux/ppc64le', '--hang-timeout', '6s', '--build-context', `busybox=oci-layout://${layout}`, context]);
	const seconds = (Date.now() - started) / 1000;
	assert.equal(result.exitCode, 1, result.all);
	// buildah builds one platform per step (the error names it first); BuildKit one build for all (named in the diagnosis).
	assert.match(String(result.stderr), /exobuild: (?:linux\/ppc64le: )?no output and no CPU for 6s while building linux\/ppc64le: likely an emulator hang in "[^"]*sleep 600" \(pid \d+, under qemu-ppc64le[^)]*\)/);
	assert.match(String(result.stderr), /hint: under QEMU this is usually an emulator bug/);
	assert.ok(seconds < 40, `ended after ${seconds.toFixed(1)} s`);
	assert.equal(hostBinfmtSnapshot(), binfmtBefore);
	await assertNothingLeft();
});

test('--hang-timeout 0 turns the watchdog off; a bad duration is refused', async () => {
	const context = makeContext(path.join(work, 'bad'), {Dockerfile: 'FROM busybox\n'});
	const bad = await exobuild(['build', '--hang-timeout', 'soon', context]);
	assert.equal(bad.exitCode, 2);
	assert.match(String(bad.stderr), /invalid --hang-timeout "soon"/);
});

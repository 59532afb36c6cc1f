/**
 * Hostile builds through the CLI (real builds, the native platform with a busybox base):
 * a Dockerfile whose layers try to empty a host folder through `-o type=local`, and `-o .`
 * with the build context as the destination.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, before, test} from 'node:test';
import {busyboxLayout} from '../fixtures/base-images.js';
import {exobuild, failure, fixturesDir, makeContext} from '../e2e/helpers.js';
import {makeVictim, type Victim} from './victim.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-hostile-'));
let layout: string;
let victim: Victim;

before(async () => {
	layout = await busyboxLayout(['linux/amd64'], path.join(fixturesDir, 'busybox'));
	victim = makeVictim();
});
after(() => {
	victim.remove();
	fs.rmSync(work, {recursive: true, force: true});
});

const build = async (context: string, output: string) => exobuild([
	'build', '--progress', 'plain', '--platform', 'linux/amd64', '--build-context', `busybox=oci-layout://${layout}`, '--output', output, context,
]);

test('issue 8: whiteouts under a folder that replaced a symlink to a host folder stay in the output', async () => {
	const context = makeContext(path.join(work, 'whiteout-ctx'), {
		'Dockerfile': [
			'FROM busybox',
			`RUN ln -s ${victim.dir} /x`,
			'RUN rm /x && mkdir /x && touch /x/.wh.a /x/.wh..wh..opq && echo hi > /x/f',
			'',
		].join('\n'),
	});
	const out = path.join(work, 'whiteout-out');
	const result = await build(context, `type=local,dest=${out}`);
	victim.assertUnchanged();
	assert.equal(result.exitCode, 0, failure(result));
	assert.equal(fs.readFileSync(path.join(out, 'x', 'f'), 'utf8'), 'hi\n');
	assert.ok(fs.lstatSync(path.join(out, 'x')).isDirectory(), 'x is a real folder');
});

test('-o with the build context as dest keeps the project and adds the image\'s files, setuid bits cleared', async () => {
	const dockerfile = 'FROM busybox\nRUN echo from-the-image > /greeting && cp /bin/busybox /suid && chmod 4755 /suid\n';
	const context = makeContext(path.join(work, 'project'), {'Dockerfile': dockerfile, 'src/main.c': 'int main(void) { return 0; }\n'});
	const result = await build(context, context);
	assert.equal(result.exitCode, 0, failure(result));
	assert.equal(fs.readFileSync(path.join(context, 'Dockerfile'), 'utf8'), dockerfile, 'the Dockerfile survives');
	assert.equal(fs.readFileSync(path.join(context, 'src', 'main.c'), 'utf8'), 'int main(void) { return 0; }\n');
	assert.equal(fs.readFileSync(path.join(context, 'greeting'), 'utf8'), 'from-the-image\n');
	assert.ok(fs.lstatSync(path.join(context, 'bin', 'busybox')).isFile());
	const suid = fs.statSync(path.join(context, 'suid'));
	assert.equal(suid.mode & 0o7777, 0o755, 'the setuid bit is cleared');
	assert.equal(suid.uid, process.getuid?.());
	assert.deepEqual(fs.readdirSync(work).filter(name => name.endsWith('.partial')), [], 'no partial folder left');
	victim.assertUnchanged();
});

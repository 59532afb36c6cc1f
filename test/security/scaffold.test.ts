/** The security suite's own tools: the victim snapshot sees every kind of change. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {test} from 'node:test';
import {makeVictim} from './victim.js';

test('the victim check notices a changed byte, a removed file, a new file and a retargeted symlink', () => {
	const changes: Array<(dir: string) => void> = [
		dir => fs.writeFileSync(path.join(dir, 'a'), 'precious A\n'),
		dir => fs.rmSync(path.join(dir, 'nested', 'deep.txt')),
		dir => fs.writeFileSync(path.join(dir, 'new'), ''),
		dir => {
			fs.rmSync(path.join(dir, 'link'));
			fs.symlinkSync('/etc/passwd', path.join(dir, 'link'));
		},
		dir => fs.chmodSync(path.join(dir, 'tool'), 0o4755),
	];
	for (const change of changes) {
		const victim = makeVictim();
		try {
			victim.assertUnchanged();
			change(victim.dir);
			assert.throws(() => victim.assertUnchanged());
		} finally {
			victim.remove();
		}
	}
});

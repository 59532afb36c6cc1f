/** How a push names its registry and finds its login (the push itself: test/e2e/push.test.ts, against a real registry). */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {isUserError} from '../../src/errors.js';
import {parseImageReference, registryCredentials} from '../../src/outputs/registry-push.js';

test('references are read as docker reads them', () => {
	assert.deepEqual(parseImageReference('app'), {registry: 'registry-1.docker.io', configKey: 'https://index.docker.io/v1/', repository: 'library/app', tag: 'latest'});
	assert.deepEqual(parseImageReference('team/app:1'), {registry: 'registry-1.docker.io', configKey: 'https://index.docker.io/v1/', repository: 'team/app', tag: '1'});
	assert.deepEqual(parseImageReference('127.0.0.1:5000/team/app:v2'), {registry: '127.0.0.1:5000', configKey: '127.0.0.1:5000', repository: 'team/app', tag: 'v2'});
	assert.deepEqual(parseImageReference('ghcr.io/o/r'), {registry: 'ghcr.io', configKey: 'ghcr.io', repository: 'o/r', tag: 'latest'});
	assert.throws(() => parseImageReference('Bad Name'), (error: unknown) => isUserError(error) && /not an image reference/.test(error.message));
});

test('credentials come from the docker config\'s auths (auth or username/password); a credential helper is named, not called', async () => {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-dockercfg-'));
	try {
		const env = {DOCKER_CONFIG: dir};
		assert.equal(await registryCredentials(parseImageReference('ghcr.io/o/r'), env), undefined, 'no config file');
		fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({auths: {
			'ghcr.io': {auth: Buffer.from('me:pa:ss').toString('base64')},
			'https://index.docker.io/v1/': {username: 'hub', password: 'word'},
		}}));
		assert.deepEqual(await registryCredentials(parseImageReference('ghcr.io/o/r'), env), {username: 'me', password: 'pa:ss'});
		assert.deepEqual(await registryCredentials(parseImageReference('team/app'), env), {username: 'hub', password: 'word'});
		assert.equal(await registryCredentials(parseImageReference('quay.io/x/y'), env), undefined);
		fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({credsStore: 'osxkeychain'}));
		await assert.rejects(registryCredentials(parseImageReference('quay.io/x/y'), env), /credential helper "osxkeychain"/);
	} finally {
		fs.rmSync(dir, {recursive: true, force: true});
	}
});

/**
 * Containerfile.builder, read as text: every upstream image pinned by version and digest in its
 * ARG block (the one place), every FROM going through those ARGs or an earlier stage, and every
 * build arg exobuild passes declared. Its build cannot run here (no registry); its tag must
 * change whenever it or vm-image/ changes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {test} from 'node:test';
import {containerfileBuildArgs} from '../../src/builder-image/containerfile.js';
import {containerfileHash, containerfilePath} from '../../src/builder-image/identity.js';

const text = fs.readFileSync(containerfilePath, 'utf8');
const lines = text.split('\n').filter(line => !line.startsWith('#'));

test('every FROM names a pinned ARG or an earlier stage; every image ARG is pinned by tag and digest', () => {
	const args = new Map(lines.flatMap(line => {
		const match = /^ARG (\w+)(?:=(.*))?$/.exec(line.trim());
		return match ? [[match[1]!, match[2]]] as Array<[string, string | undefined]> : [];
	}));
	const stages: string[] = [];
	for (const line of lines.filter(line => line.startsWith('FROM '))) {
		const [, image, , stage] = line.split(/\s+/);
		const arg = /^\$\{(\w+)\}$/.exec(image!)?.[1];
		if (arg === undefined) {
			assert.ok(stages.includes(image!), `FROM ${image} is neither a pinned ARG nor an earlier stage`);
		} else {
			assert.match(args.get(arg) ?? '', /^docker\.io\/[\w./-]+:[\w.-]+@sha256:[a-f\d]{64}$/, `${arg} is pinned by tag and digest`);
		}

		if (stage !== undefined) {
			stages.push(stage);
		}
	}

	assert.ok(stages.length >= 3, 'binfmt, buildkit and probe stages');
	for (const key of Object.keys(containerfileBuildArgs('0'.repeat(64), 'http://mirror.example/debian'))) {
		assert.ok(args.has(key), `ARG ${key} is declared`);
	}
});

test('the image tag follows Containerfile.builder and vm-image/', async () => {
	const before = await containerfileHash();
	assert.match(before, /^[a-f\d]{64}$/);
	assert.equal(await containerfileHash(), before, 'stable');
	const original = fs.readFileSync(containerfilePath);
	try {
		fs.appendFileSync(containerfilePath, '\n# changed\n');
		assert.notEqual(await containerfileHash(), before);
	} finally {
		fs.writeFileSync(containerfilePath, original);
	}
});

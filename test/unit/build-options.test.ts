import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {parseBuildArgs, parseBuildContexts, parseOutput, parseTags, toBuildRequest, type RawBuildOptions} from '../../src/cli/build-flags/options.js';
import {isUserError} from '../../src/errors.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-options-'));
after(() => fs.rmSync(root, {recursive: true, force: true}));
const context = path.join(root, 'ctx');
fs.mkdirSync(context);
fs.writeFileSync(path.join(context, 'Dockerfile'), 'FROM scratch\n');
const layout = path.join(root, 'layout');
fs.mkdirSync(layout);
fs.writeFileSync(path.join(layout, 'index.json'), '{}');
fs.writeFileSync(path.join(layout, 'oci-layout'), '{}');

const raw = (overrides: Partial<RawBuildOptions> = {}): RawBuildOptions => ({
	platform: [], tag: [], buildArg: [], cache: true, buildContext: [], output: [], progress: 'auto', engine: 'auto', driver: 'linux-userns', ...overrides,
});
const env = {cwd: root, env: {}, warn() {}};

const rejects = (run: () => unknown, pattern: RegExp): void => {
	assert.throws(run, (error: unknown) => {
		assert.ok(isUserError(error), String(error));
		assert.match(error.message, pattern);
		assert.ok(error.hint && error.hint.length > 0, 'has a hint');
		assert.ok(!error.message.includes('\n'), 'one line');
		return true;
	});
};

test('a full request is normalised with absolute paths and canonical platforms', () => {
	const request = toBuildRequest('ctx', raw({
		platform: ['ppc64el,linux/s390x'], tag: ['demo:1', 'registry.example:5000/team/demo:latest'], buildArg: ['A=1', 'B=x=y'],
		target: 'final', cache: false, buildContext: [`base=oci-layout://${layout}`], output: ['type=oci,dest=out.tar'], progress: 'plain',
	}), env);
	assert.equal(request.contextDir, context);
	assert.equal(request.dockerfile, path.join(context, 'Dockerfile'));
	assert.deepEqual(request.platforms.map(p => p.id), ['linux/ppc64le', 'linux/s390x']);
	assert.deepEqual(request.buildArgs, [['A', '1'], ['B', 'x=y']]);
	assert.equal(request.noCache, true);
	assert.deepEqual(request.output, {type: 'oci', dest: path.join(root, 'out.tar')});
	assert.deepEqual(parseOutput(['out-dir'], root).target, {type: 'local', dest: path.join(root, 'out-dir')});
	assert.deepEqual(parseOutput(['-'], root).target, {type: 'tar', dest: '-'});
	assert.deepEqual(parseOutput(['type=docker,dest=-,name=a:1+b'], root), {target: {type: 'docker', dest: '-'}, names: ['a:1', 'b']});
	assert.deepEqual(parseOutput(['type=oci,dest=layout,tar=false'], root).target, {type: 'oci', dest: path.join(root, 'layout'), tar: false});
	assert.deepEqual(request.buildContexts, [{name: 'base', layoutDir: layout}]);
});

test('bad input gets a one-line cause and a hint', () => {
	rejects(() => toBuildRequest(undefined, raw(), env), /no build context/);
	rejects(() => toBuildRequest('missing', raw(), env), /does not exist/);
	rejects(() => toBuildRequest('ctx/Dockerfile', raw(), env), /not a folder/);
	rejects(() => toBuildRequest('ctx', raw({file: 'nope/Dockerfile'}), env), /not found/);
	rejects(() => toBuildRequest('ctx', raw({file: 'ctx'}), env), /not a file/);
	rejects(() => toBuildRequest('ctx', raw({platform: ['linux/sparc']}), env), /unknown platform/);
	rejects(() => toBuildRequest('ctx', raw({progress: 'fancy'}), env), /--progress/);
	rejects(() => toBuildRequest('ctx', raw({engine: 'docker'}), env), /--engine/);
	rejects(() => toBuildRequest('ctx', raw({target: 'a b'}), env), /--target/);
	rejects(() => toBuildRequest('https://example.com/x.git', raw(), env), /not supported yet/);
	rejects(() => parseTags(['UPPER:case']), /invalid tag/);
	rejects(() => parseTags(['name:']), /invalid tag/);
	rejects(() => parseBuildArgs(['1BAD=x'], {}, () => undefined), /not a valid argument name/);
	rejects(() => parseBuildContexts(['base'], root), /NAME=VALUE/);
	rejects(() => parseBuildContexts(['base=docker-image://debian'], root), /docker-image:\/\/ sources are not supported yet/);
	rejects(() => parseBuildContexts(['base=./dir'], root), /local directory sources/);
	rejects(() => parseBuildContexts([`base=oci-layout://${context}`], root), /not an OCI image layout/);
	rejects(() => parseBuildContexts([`base=oci-layout://${layout}@sha256:xyz`], root), /not a sha256 digest/);
	rejects(() => parseBuildContexts([`a=oci-layout://${layout}`, `a=oci-layout://${layout}`], root), /twice/);
	rejects(() => parseOutput(['type=image,name=example/app'], root), /without push=true/);
	rejects(() => parseOutput(['type=registry,name=example/app,compression=zstd'], root), /option "compression" is not supported/);
	rejects(() => parseOutput(['type=docker,dest=x.tar,compression=zstd'], root), /option "compression" is not supported/);
	rejects(() => parseOutput(['type=oci,dest=x.tar,tar=maybe'], root), /tar=maybe/);
	rejects(() => parseOutput(['type=local,dest=-'], root), /writes a folder/);
	rejects(() => parseOutput(['type=bogus,dest=x'], root), /unknown --output type=bogus/);
	rejects(() => parseOutput(['dest=x.tar'], root), /no type=/);
	rejects(() => parseOutput(['type=oci'], root), /needs dest/);
	rejects(() => parseOutput(['type=oci,dest=nodir/x.tar'], root), /does not exist/);
	rejects(() => parseOutput(['type=oci,dest=ctx'], root), /is a folder/);
	rejects(() => parseOutput(['type=oci,dest=x.tar,compression=zstd'], root), /compression/);
	rejects(() => parseOutput(['type=oci,dest=a.tar', 'type=oci,dest=b.tar'], root), /only one/);
});

test('a bare build-arg takes its value from the environment, and an unset one is reported', () => {
	const warnings: string[] = [];
	assert.deepEqual(parseBuildArgs(['HOME_DIR', 'UNSET_ONE', 'X='], {HOME_DIR: '/root'}, m => warnings.push(m)), [['HOME_DIR', '/root'], ['X', '']]);
	assert.equal(warnings.length, 1);
	assert.match(warnings[0]!, /UNSET_ONE/);
});

test('oci-layout contexts accept a tag and a digest pin', () => {
	const digest = `sha256:${'a'.repeat(64)}`;
	assert.deepEqual(parseBuildContexts([`debian:stable=oci-layout://${layout}:v1@${digest}`], root), [{name: 'debian:stable', layoutDir: layout, ref: 'v1', digest}]);
});


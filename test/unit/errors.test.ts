/**
 * The error table (src/errors.ts): every code exobuild uses has a row; UserError takes its exit
 * code and hint from it; Node's errors of the user's world and schema errors become one line.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {test} from 'node:test';
import {fileURLToPath} from 'node:url';
import {z} from 'zod';
import {errorCodes} from '../../src/agent/contract.js';
import {errorKind, errorTable, exitCodes, signalExitCodes, UserError, userErrorOf} from '../../src/errors.js';

const srcDir = fileURLToPath(new URL('../../../src/', import.meta.url));
const vmImageDir = fileURLToPath(new URL('../../../vm-image/', import.meta.url));

const filesUnder = (dir: string): string[] => fs.readdirSync(dir, {recursive: true, withFileTypes: true})
	.filter(entry => entry.isFile())
	.map(entry => path.join(entry.parentPath, entry.name));

/** Every E_* code the sources use: in `code: 'E_…'`, in a `…Code = 'E_…'` constant, and the agent's `fail E_…`. */
const codesUsed = (): Set<string> => {
	const codes = new Set<string>();
	for (const file of filesUnder(srcDir).filter(name => name.endsWith('.ts'))) {
		const text = fs.readFileSync(file, 'utf8');
		for (const match of text.matchAll(/\bcode:\s*'(E_[A-Z_]+)'|Code\s*=\s*'(E_[A-Z_]+)'|'(E_[A-Z_]+)',\s*\/\//g)) {
			codes.add(match[1] ?? match[2] ?? match[3]!);
		}
	}

	for (const match of fs.readFileSync(path.join(vmImageDir, 'exobuild-agent'), 'utf8').matchAll(/\b(?:fail|fail_build|emit_error|prove_error) "?(E_[A-Z_]+)/g)) {
		codes.add(match[1]!);
	}

	return codes;
};

test('every error code used in src and by the agent has a row in the table', () => {
	const used = codesUsed();
	assert.ok(used.size > 20, `found the codes (${[...used].join(', ')})`);
	for (const code of [...used, ...errorCodes]) {
		assert.ok(errorKind(code) !== undefined, `${code} has no row in src/errors.ts errorTable`);
	}
});

test('each row has an exit code of the convention and a one-line hint', () => {
	const allowed = new Set<number>([exitCodes.usage, exitCodes.failed, exitCodes.bug, ...Object.values(signalExitCodes)]);
	for (const [code, kind] of Object.entries(errorTable)) {
		assert.ok(allowed.has(kind.exitCode), `${code}: exit code ${kind.exitCode}`);
		assert.ok(kind.hint.length > 0 && !kind.hint.includes('\n'), `${code}: hint`);
	}

	assert.equal(errorTable.E_USAGE.exitCode, 2);
	assert.equal(errorTable.E_BUILD_FAILED.exitCode, 1);
	assert.equal(errorTable.E_NO_SPACE.exitCode, 1);
	assert.equal(errorTable.E_INTERRUPTED.exitCode, 130);
	assert.equal(errorTable.E_INTERNAL.exitCode, 70);
});

test('UserError takes the exit code and hint from the table, unless given', () => {
	const fromTable = new UserError('the build failed', {code: 'E_BUILD_FAILED'});
	assert.equal(fromTable.exitCode, 1);
	assert.equal(fromTable.hint, errorTable.E_BUILD_FAILED.hint);
	const explicit = new UserError('x', {code: 'E_BUILD_FAILED', exitCode: 2, hint: 'mine'});
	assert.equal(explicit.exitCode, 2);
	assert.equal(explicit.hint, 'mine');
	const plain = new UserError('bad flag');
	assert.equal(plain.code, 'E_USAGE');
	assert.equal(plain.exitCode, 2);
	assert.equal(new UserError('x', {code: 'E_NOT_IN_TABLE'}).exitCode, 2, 'an unknown code keeps the old default');
});

test('ENOSPC and EDQUOT name the full folder (exit 1); EACCES, EPERM and EROFS name the path (exit 2)', () => {
	const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-errors-'));
	try {
		const file = path.join(folder, 'out.tar');
		for (const code of ['ENOSPC', 'EDQUOT']) {
			const error = userErrorOf(Object.assign(new Error(`${code}: no space left on device, write`), {code, path: file}));
			assert.equal(error?.exitCode, 1);
			assert.equal(error?.code, 'E_NO_SPACE');
			assert.match(error!.message, new RegExp(`^no space left on device in ${folder}`));
			assert.doesNotMatch(error!.message, /\n/);
		}

		const inFolder = userErrorOf(Object.assign(new Error('ENOSPC'), {code: 'ENOSPC', path: folder}));
		assert.match(inFolder!.message, new RegExp(`in ${folder}$`), 'a folder is named as itself');
		for (const code of ['EACCES', 'EPERM', 'EROFS']) {
			const error = userErrorOf(Object.assign(new Error(code), {code, path: '/proc/x.tar'}));
			assert.equal(error?.exitCode, 2);
			assert.match(error!.message, /^\/proc\/x\.tar /);
			assert.ok(error!.hint);
		}
	} finally {
		fs.rmSync(folder, {recursive: true, force: true});
	}

	assert.equal(userErrorOf(new Error('something else')), undefined, 'anything else stays a bug (exit 70)');
	assert.equal(userErrorOf(Object.assign(new Error('EACCES'), {code: 'EACCES'})), undefined, 'a denied access without a path is not the user\'s');
});

test('a zod error becomes one line, never a dump', () => {
	const parsed = z.object({mediaType: z.literal('application/vnd.oci.image.manifest.v1+json'), layers: z.array(z.string())}).safeParse({mediaType: 'application/vnd.oci.image.index.v1+json', layers: 3});
	assert.equal(parsed.success, false);
	const error = userErrorOf(parsed.error);
	assert.ok(error !== undefined);
	assert.doesNotMatch(error.message, /\n/);
	assert.match(error.message, /^invalid data at mediaType: .*\(and 1 more\)$/);
	assert.equal(error.exitCode, 2);
});

/**
 * `--cache-from` / `--cache-to` with buildx's grammar. Only type=local exists here (a folder on
 * this machine); without either flag a build uses its project's cache (./build-cache.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import {csv, usage} from './option-values.js';
import type {CacheSpec} from '../../request/build-request.js';

const localOnly = (flag: string, type: string): Error => usage(`${flag} type=${type} is not supported`, `only type=local (a folder) is: ${flag} type=local,${flag === '--cache-from' ? 'src' : 'dest'}=DIR; without ${flag} every build uses its project's cache`);

const parseOne = (flag: '--cache-from' | '--cache-to', value: string, cwd: string): string => {
	const key = flag === '--cache-from' ? 'src' : 'dest';
	if (!value.includes('=')) {
		throw usage(`${flag} ${value}: a registry cache is not supported`, `use ${flag} type=local,${key}=DIR`);
	}

	const fields = csv(value, flag, `type=local,${key}=DIR`);
	const type = fields.get('type') ?? 'registry';
	if (type !== 'local') {
		throw localOnly(flag, type);
	}

	const dir = fields.get(key);
	if (dir === undefined || dir === '') {
		throw usage(`${flag} type=local needs ${key}=DIR`, `e.g. ${flag} type=local,${key}=.cache/build`);
	}

	for (const option of fields.keys()) {
		if (!['type', key, ...(flag === '--cache-to' ? ['mode'] : [])].includes(option)) {
			throw usage(`${flag} option "${option}" is not supported`, `supported: type=local,${key}=DIR${flag === '--cache-to' ? ',mode=max (always max here)' : ''}`);
		}
	}

	if (fields.has('mode') && !['min', 'max'].includes(fields.get('mode')!)) {
		throw usage(`--cache-to mode=${fields.get('mode')} is not min or max`, 'mode=max (the default here: every layer is kept)');
	}

	const absolute = path.resolve(cwd, dir);
	if (flag === '--cache-from' && !fs.existsSync(absolute)) {
		throw usage(`--cache-from ${absolute} does not exist`, 'give a folder written by --cache-to type=local,dest=DIR');
	}

	return absolute;
};

export const parseCache = (from: readonly string[], to: readonly string[], cwd: string): CacheSpec => {
	for (const [flag, values] of [['--cache-from', from], ['--cache-to', to]] as const) {
		if (values.length > 1) {
			throw usage(`only one ${flag} is supported`, `give a single ${flag} type=local,…`);
		}
	}

	if (from.length === 0 && to.length === 0) {
		return {kind: 'project'};
	}

	return {
		kind: 'local',
		...(from[0] === undefined ? {} : {from: parseOne('--cache-from', from[0], cwd)}),
		...(to[0] === undefined ? {} : {to: parseOne('--cache-to', to[0], cwd)}),
	};
};

/** Helpers shared by the option parsers: the usage error, and buildx's key=value lists. */
import {UserError} from '../../errors.js';

export const usage = (message: string, hint: string): UserError => new UserError(message, {hint, code: 'E_USAGE'});

/** buildx's `key=value,key=value` option values. */
export const csv = (value: string, flag = '--output', example = 'type=oci,dest=image.tar'): Map<string, string> => {
	const fields = new Map<string, string>();
	for (const part of value.split(',')) {
		const eq = part.indexOf('=');
		if (eq <= 0) {
			throw usage(`invalid ${flag} "${value}": "${part}" is not key=value`, `e.g. ${flag} ${example}`);
		}

		fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
	}

	return fields;
};


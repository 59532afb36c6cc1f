/** Small helpers the engines' command lines share. */
import path from 'node:path';

/**
 * One field of a comma-separated option value (buildctl's --output, --secret…), quoted as
 * encoding/csv reads it when it holds a comma or a quote, so that a value cannot split the list.
 */
export const csvField = (field: string): string => (/[",\n]/.test(field) ? `"${field.replaceAll('"', '""')}"` : field);

/** The folder and file name of a path inside the sandbox (POSIX: the sandbox is Linux). */
export const splitPath = (file: string): {dir: string; base: string} => ({dir: path.posix.dirname(file), base: path.posix.basename(file)});

/** A value the host must have put in the layout; its absence is a bug of the host, not user error. */
export const required = <T>(value: T | undefined, what: string): T => {
	if (value === undefined) {
		throw new Error(`engine plan: the sandbox layout has no ${what}`);
	}

	return value;
};

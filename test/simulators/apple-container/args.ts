/**
 * Command-line parsing with swift-argument-parser's grammar and errors: `--opt value`,
 * `--opt=value`, bundled short flags (`-it`), `--` ends options; an unknown option is a usage
 * error (exit 64). An option newer than the simulated version does not exist there.
 */
import {CliError, simVersion, versionAtLeast} from './state.js';

export interface OptionSpec {
	/** Every spelling: '-e', '--env'. */
	readonly names: readonly string[];
	/** Takes a value (repeatable options keep every value). */
	readonly value: boolean;
	/** The version that introduced it. */
	readonly since?: string;
}

export interface CommandSpec {
	readonly path: string;
	readonly usage: string;
	readonly options: Readonly<Record<string, OptionSpec>>;
	/** Everything after the first positional argument is passed through (run: the container's arguments). */
	readonly passthroughAfterFirst?: boolean;
}

export interface Parsed<K extends string> {
	values(key: K): string[];
	value(key: K): string | undefined;
	flag(key: K): boolean;
	readonly positionals: string[];
}

export const usageError = (spec: CommandSpec, message: string): CliError =>
	new CliError(`${message}\nUsage: ${spec.usage}\n  See '${spec.path} --help' for more information.`, 64);

const debugOption: OptionSpec = {names: ['--debug'], value: false};

export const parseArgs = <K extends string>(spec: CommandSpec & {options: Record<K, OptionSpec>}, argv: readonly string[]): Parsed<K> => {
	const options: Record<string, OptionSpec> = {...spec.options, debug: debugOption};
	const byName = new Map<string, string>();
	for (const [key, option] of Object.entries(options)) {
		if (option.since === undefined || versionAtLeast(option.since, simVersion())) {
			for (const name of option.names) {
				byName.set(name, key);
			}
		}
	}

	const values = new Map<string, string[]>();
	const positionals: string[] = [];
	const add = (key: string, value: string): void => {
		values.set(key, [...(values.get(key) ?? []), value]);
	};

	const takeValue = (name: string, index: number, inline: string | undefined): [string, number] => {
		if (inline !== undefined) {
			return [inline, index];
		}

		const next = argv[index + 1];
		if (next === undefined) {
			const option = options[byName.get(name)!]!;
			throw usageError(spec, `Missing value for '${option.names.at(-1)} <${option.names.at(-1)!.replace(/^-+/, '')}>'`);
		}

		return [next, index + 1];
	};

	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i]!;
		if (spec.passthroughAfterFirst && positionals.length > 0) {
			positionals.push(...argv.slice(i));
			break;
		}

		if (arg === '--') {
			positionals.push(...argv.slice(i + 1));
			break;
		}

		if (arg === '-h' || arg === '--help') {
			throw new CliError('', 0, `USAGE: ${spec.usage}\n`);
		}

		if (arg.startsWith('--')) {
			const equals = arg.indexOf('=');
			const name = equals === -1 ? arg : arg.slice(0, equals);
			const key = byName.get(name);
			if (key === undefined) {
				throw usageError(spec, `Unknown option '${name}'`);
			}

			if (options[key]!.value) {
				const [value, next] = takeValue(name, i, equals === -1 ? undefined : arg.slice(equals + 1));
				add(key, value);
				i = next;
			} else {
				if (equals !== -1) {
					throw usageError(spec, `Unknown option '${arg}'`);
				}

				add(key, 'true');
			}

			continue;
		}

		if (arg.startsWith('-') && arg.length > 1) {
			const letters = [...arg.slice(1)];
			for (const [position, letter] of letters.entries()) {
				const name = `-${letter}`;
				const key = byName.get(name);
				if (key === undefined) {
					throw usageError(spec, `Unknown option '${name}'`);
				}

				if (options[key]!.value) {
					const rest = letters.slice(position + 1).join('');
					const [value, next] = takeValue(name, i, rest === '' ? undefined : rest);
					add(key, value);
					i = next;
					break;
				}

				add(key, 'true');
			}

			continue;
		}

		positionals.push(arg);
	}

	return {
		values: key => values.get(key) ?? [],
		value: key => values.get(key)?.at(-1),
		flag: key => values.has(key),
		positionals,
	};
};

/** Sizes as the CLI takes them: a number with an optional K, M, G, T or P suffix (binary units). */
export const parseSize = (text: string, defaultUnit: 'B' | 'M' = 'B'): number => {
	const match = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B)?$/i.exec(text.trim());
	if (match === null) {
		throw new CliError(`invalidArgument: "invalid size ${text}"`);
	}

	const unit = match[2]!.toUpperCase() || (match[3] ? 'B' : defaultUnit);
	const powers: Record<string, number> = {B: 0, K: 1, M: 2, G: 3, T: 4, P: 5};
	return Math.round(Number(match[1]) * (1024 ** powers[unit]!));
};

export const keyValues = (entries: readonly string[]): Record<string, string> =>
	Object.fromEntries(entries.map(entry => {
		const equals = entry.indexOf('=');
		return equals === -1 ? [entry, ''] : [entry.slice(0, equals), entry.slice(equals + 1)];
	}));

/** Left-aligned columns separated by at least two spaces, like the CLI's TableOutput. */
export const table = (rows: readonly (readonly string[])[]): string => {
	const widths = rows[0]!.map((_, column) => Math.max(...rows.map(row => row[column]?.length ?? 0)));
	return rows.map(row => row.map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]! + 2))).join('').trimEnd()).join('\n');
};

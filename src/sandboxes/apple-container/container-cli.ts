/**
 * Apple's `container` CLI as exobuild calls it: where it is, one way to run it, and its version.
 * Every JSON it prints is parsed with the zod schemas of ./shapes.ts. Nothing else in exobuild
 * runs `container`.
 */
import {execa, type ResultPromise} from 'execa';
import {UserError} from '../../errors.js';
import {cliVersionLine, parseCliVersion, versionList} from './shapes.js';

/** $EXOBUILD_CONTAINER_CLI (tests point it at the simulator), else `container` on PATH. */
export const containerCli = (env: NodeJS.ProcessEnv = process.env): string => env['EXOBUILD_CONTAINER_CLI'] || 'container';

export interface CliResult {
	readonly exitCode: number;
	readonly stdout: string;
	readonly stderr: string;
}

/** The first line of the CLI's own error output (`Error: notFound: "…"`), for messages. */
export const firstErrorLine = (result: CliResult): string =>
	(result.stderr.split('\n').find(line => line.trim() !== '') ?? result.stdout.split('\n')[0] ?? '').trim();

const notInstalled = (cli: string): UserError => new UserError(`Apple's container CLI was not found (${cli})`, {
	hint: 'install it from https://github.com/apple/container/releases (1.2 or later), then run `container system start`',
	code: 'E_CONTAINER_CLI',
});

/** Runs `container ARGS`; never throws for a non-zero exit (the caller decides), only when it cannot start. */
export const runCli = async (args: readonly string[], options: {signal?: AbortSignal; input?: string} = {}): Promise<CliResult> => {
	const cli = containerCli();
	const result = await execa(cli, args, {
		reject: false, stripFinalNewline: true,
		...(options.input === undefined ? {stdin: 'ignore'} : {input: options.input}),
		...(options.signal === undefined ? {} : {cancelSignal: options.signal}),
	});
	if ((result as {code?: string}).code === 'ENOENT') {
		throw notInstalled(cli);
	}

	return {exitCode: result.exitCode ?? 1, stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? '')};
};

/** Starts `container ARGS` with piped output, for long runs whose lines are streamed; `input` is written to its stdin. */
export const spawnCli = (args: readonly string[], input?: string): ResultPromise<{reject: false; buffer: false}> =>
	execa(containerCli(), args, {reject: false, buffer: false, ...(input === undefined ? {stdin: 'ignore' as const} : {input})});

/** A parsed version, compared numerically. */
export type Version = readonly [number, number, number];

/** "1.2.2", "1.2.0-4-g1275b70" (git describe: taken as 1.2.0), "container CLI version 0.11.0 (…)". */
export const parseVersion = (text: string): Version | undefined => parseCliVersion(text);

export const atLeast = (version: Version, minimum: Version): boolean => {
	for (let index = 0; index < 3; index++) {
		if (version[index]! !== minimum[index]!) {
			return version[index]! > minimum[index]!;
		}
	}

	return true;
};

export const formatVersion = (version: Version): string => version.join('.');

/**
 * The CLI's version: `container system version --format json` (0.10.0+; the element whose
 * appName is "container", not the apiserver's), else the line of `container --version`
 * ("container CLI version 0.11.0 (build: release, commit: …)"). A development build carries a
 * git-describe suffix (1.2.0-4-g1275b70): it counts as the tag it follows.
 */
export const readVersion = async (): Promise<Version> => {
	const json = await runCli(['system', 'version', '--format', 'json']);
	if (json.exitCode === 0) {
		const parsed = versionList.safeParse((() => {
			try {
				return JSON.parse(json.stdout || 'null');
			} catch {
				return undefined;
			}
		})());
		const cli = parsed.success ? parsed.data.find(entry => entry.appName === 'container') ?? parsed.data[0] : undefined;
		const version = cli === undefined ? undefined : parseVersion(cli.version);
		if (version !== undefined) {
			return version;
		}
	}

	const line = await runCli(['--version']);
	const checked = cliVersionLine.safeParse(line.stdout);
	const version = line.exitCode === 0 && checked.success ? parseVersion(checked.data) : undefined;
	if (version === undefined) {
		throw new UserError(`cannot tell the version of Apple's container CLI (${containerCli()} --version said: ${firstErrorLine(line) || 'nothing'})`, {
			hint: 'reinstall it from https://github.com/apple/container/releases',
			code: 'E_CONTAINER_CLI',
		});
	}

	return version;
};

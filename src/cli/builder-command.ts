import {Option, type Command} from 'commander';
import {createBuilderImage, findBuilderImage} from '../builder-image/index.js';
import {collect} from './main.js';

interface CreateOptions {
	mirror?: string;
	suite: string[];
	force?: boolean;
}

export const registerBuilderCommand = (program: Command): void => {
	const builder = program.command('builder').description('Manage the builder image (the sandbox\'s root filesystem: emulators, engine, agent)');
	builder
		.command('create')
		.description('Make the builder image from Debian packages (mmdebstrap) and store it in the cache')
		.addOption(new Option('--mirror <URL>', 'Debian mirror to install from (any apt mirror: the air-gapped path)').env('EXOBUILD_DEBIAN_MIRROR'))
		.addOption(new Option('--suite <NAME>', 'Debian suite(s) to try in order, repeatable (default: trixie, then stable)').argParser(collect).default([]))
		.addOption(new Option('--force', 'make it again even if a current one is cached'))
		.action(async (options: CreateOptions) => {
			const image = await createBuilderImage({
				...(options.mirror === undefined ? {} : {mirror: options.mirror}),
				...(options.suite.length === 0 ? {} : {suites: options.suite}),
				force: options.force === true,
				onProgress(step, detail) {
					process.stderr.write(`${step}${detail ? `: ${detail}` : ''}\n`);
				},
			});
			process.stdout.write(`${JSON.stringify(image, undefined, 2)}\n`);
		});
	builder
		.command('inspect')
		.description('Print the current builder image as JSON (exit 1 if there is none)')
		.action(async () => {
			const image = await findBuilderImage();
			if (image === undefined) {
				process.stderr.write('exobuild: no current builder image in the cache\nhint: run `exobuild builder create`\n');
				process.exitCode = 1;
				return;
			}

			process.stdout.write(`${JSON.stringify(image, undefined, 2)}\n`);
		});
};

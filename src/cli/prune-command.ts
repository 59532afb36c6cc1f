/**
 * `exobuild prune`: removes what killed runs left behind (sandboxes/VMs whose owner is gone,
 * host scratch folders) and, with --builders, builder images not made from this checkout's
 * recipes. Builds do the first part themselves on start; this is for doing it on demand.
 */
import {Option, type Command} from 'commander';
import {listWithCurrency, removeBuilderImage} from '../builder-image/index.js';
import {reapHostScratch} from '../build/host-scratch.js';
import {createRuntime, defaultRuntime, runtimeNames} from '../sandboxes/index.js';
import type {RuntimeName} from '../sandboxes/runtime.js';

export const registerPruneCommand = (program: Command): void => {
	program
		.command('prune')
		.description('Remove sandboxes and scratch folders of killed runs (and, with --builders, stale builder images)')
		.addOption(new Option('--driver <DRIVER>', 'sandbox runtime whose orphans to remove').choices(runtimeNames).default(defaultRuntime()))
		.option('--builders', 'also remove builder images not made from this exobuild\'s recipes')
		.action(async (options: {driver: RuntimeName; builders?: boolean}) => {
			const runtime = createRuntime(options.driver);
			await runtime.features();
			const sandboxes = await runtime.reapOrphans();
			const scratch = await reapHostScratch();
			for (const id of sandboxes.removed) {
				process.stdout.write(`sandbox ${id}\n`);
			}

			for (const dir of scratch) {
				process.stdout.write(`scratch ${dir}\n`);
			}

			if (options.builders) {
				for (const image of (await listWithCurrency()).filter(stored => !stored.current)) {
					// eslint-disable-next-line no-await-in-loop
					await removeBuilderImage(image);
					process.stdout.write(`builder ${image.reference}\n`);
				}
			}
		});
};

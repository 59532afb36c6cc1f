/**
 * `exobuild prune`: removes what killed runs left behind (sandboxes/VMs whose owner is gone,
 * host scratch folders, partial outputs beside their destinations), shrinks the build caches to a size bound (least recently used first)
 * and, with --builders, removes builder images not made from this checkout's recipes. Builds
 * do the first part themselves on start; this is for doing it on demand.
 */
import {Option, type Command} from 'commander';
import {listWithCurrency, removeBuilderImage} from '../builder-image/index.js';
import {parseSize, pruneProjectCaches} from '../pipeline/build-cache.js';
import {reapHostScratch} from '../pipeline/host-scratch.js';
import {UserError} from '../errors.js';
import {pruneFileDigests} from '../runs/file-digests.js';
import {reapPartials} from '../runs/partials.js';
import {createDriver, defaultDriver, driverNames} from '../sandboxes/index.js';
import type {DriverName} from '../sandboxes/driver.js';

export const registerPruneCommand = (program: Command): void => {
	program
		.command('prune')
		.description('Remove sandboxes and scratch folders of killed runs (and, with --builders, stale builder images)')
		.addOption(new Option('--driver <DRIVER>', 'sandbox driver whose orphans to remove').choices(driverNames).default(defaultDriver()))
		.option('--builders', 'also remove builder images not made from this exobuild\'s recipes')
		.option('--max-cache-size <SIZE>', 'shrink the build caches to at most SIZE (e.g. 10G; 0 removes them all), least recently used first', '20G')
		.action(async (options: {driver: DriverName; builders?: boolean; maxCacheSize: string}) => {
			const maxBytes = parseSize(options.maxCacheSize);
			if (maxBytes === undefined) {
				throw new UserError(`--max-cache-size ${options.maxCacheSize} is not a size`, {hint: 'e.g. --max-cache-size 10G (K, M, G, T), or 0 to remove every build cache', code: 'E_USAGE'});
			}

			const driver = createDriver(options.driver);
			await driver.features();
			const sandboxes = await driver.reapOrphans();
			const scratch = await reapHostScratch();
			for (const partial of await reapPartials()) {
				process.stdout.write(`partial ${partial}\n`);
			}

			for (const id of sandboxes.removed) {
				process.stdout.write(`sandbox ${id}\n`);
			}

			for (const dir of scratch) {
				process.stdout.write(`scratch ${dir}\n`);
			}

			// A driver that keeps BuildKit's state in volumes of its own: those go with their slots.
			const volumes = driver.engineState?.kind === 'volume' && (await driver.engineState.volumes.unavailable()) === undefined ? driver.engineState.volumes : undefined;
			for (const cache of await pruneProjectCaches(maxBytes, volumes)) {
				process.stdout.write(`cache ${cache.context ?? cache.dir} (${(cache.bytes / 1024 / 1024).toFixed(0)} MiB)\n`);
			}

			const staleDigests = await pruneFileDigests();
			if (staleDigests > 0) {
				process.stdout.write(`file-digests ${staleDigests} records of files gone or changed\n`);
			}

			if (options.builders) {
				for (const image of (await listWithCurrency()).filter(stored => !stored.current)) {
					await removeBuilderImage(image);
					process.stdout.write(`builder ${image.reference}\n`);
				}
			}
		});
};

/**
 * What a build is given rather than reaching for: the sandbox driver, the builder image store,
 * the reporter, the stop signal, the environment (env= secrets) and the clock. The CLI passes
 * the real ones (src/cli/build-command.ts); tests pass an in-memory driver that replays
 * recorded agent events (test/fixtures/replay-driver.ts) and a store holding one record.
 */
import {ensureBuilderImage, findBuilderImage, type BuilderImage} from '../builder-image/index.js';
import type {BuildReporter} from '../progress/events.js';
import type {SandboxDriver} from '../sandboxes/driver.js';

/** Finding and making the builder image a build runs in (src/builder-image). */
export interface BuilderStore {
	/** The current stored builder image, if there is one (no making, no verifying). */
	find(): Promise<BuilderImage | undefined>;
	/** The builder image to use, verified, made on first use with the driver's image builder or from Debian packages. */
	ensure(options: {readonly driver: SandboxDriver; readonly signal?: AbortSignal; readonly onProgress?: (step: string, detail?: string) => void}): Promise<BuilderImage>;
}

/** The store in exobuild's cache folder (findBuilderImage / ensureBuilderImage). */
export const cacheBuilderStore: BuilderStore = {
	async find() {
		return findBuilderImage({});
	},
	async ensure(options) {
		return ensureBuilderImage(options);
	},
};

export interface BuildDeps {
	readonly driver: SandboxDriver;
	readonly builders: BuilderStore;
	readonly reporter: BuildReporter;
	/** Aborting stops the build: everything it started is removed, and it ends with the signal's reason. */
	readonly signal?: AbortSignal;
	/** Where env= secrets are read from (default: process.env). */
	readonly env?: NodeJS.ProcessEnv;
	/** exobuild --debug: the engine daemon's log is shown as it runs. */
	readonly debug?: boolean;
	/** A monotonic clock in milliseconds for phase times (default: performance.now). */
	readonly now?: () => number;
}

/** BuildKit as an Engine: its capabilities, its plan, its steps (./steps.ts). */
import {refuseWith} from '../capabilities.js';
import type {Engine} from '../plan.js';
import {buildkitCapabilities} from './capabilities.js';
import {planBuildKit} from './plan.js';

export const buildkit: Engine = {
	name: 'buildkit',
	refuse: request => refuseWith(buildkitCapabilities, request),
	plan(request, layout) {
		const refusal = refuseWith(buildkitCapabilities, request);
		if (refusal !== undefined) {
			throw new Error(`engine plan: BuildKit was asked for what it refuses (${refusal.message})`);
		}

		return planBuildKit(request, layout);
	},
	// BuildKit matches cached steps by content, whatever the base's history.
	warnings: () => [],
};

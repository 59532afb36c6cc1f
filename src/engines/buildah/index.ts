/** buildah as an Engine: its capabilities, its plan, its steps (./steps.ts), its cache warning. */
import {refuseWith} from '../capabilities.js';
import type {Engine} from '../plan.js';
import {buildahCapabilities} from './capabilities.js';
import {planBuildah} from './plan.js';
import {historylessBasesWarning} from './warnings.js';

export const buildah: Engine = {
	name: 'buildah',
	refuse: request => refuseWith(buildahCapabilities, request),
	plan(request, layout) {
		const refusal = refuseWith(buildahCapabilities, request);
		if (refusal !== undefined) {
			throw new Error(`engine plan: buildah was asked for what it refuses (${refusal.message})`);
		}

		return planBuildah(request, layout);
	},
	warnings: (_request, bases) => historylessBasesWarning(bases),
};

/**
 * The engines, and which one a build runs in: BuildKit wherever the builder image has it,
 * else buildah; an engine asked for by name that the builder lacks is a usage error (exit 2).
 */
import {UserError} from '../errors.js';
import {buildah} from './buildah/index.js';
import {buildkit} from './buildkit/index.js';
import type {Engine, EngineName} from './plan.js';

export type {Engine, EngineName, EnginePlan, EngineStep, SandboxLayout, BaseFacts, Refusal} from './plan.js';

export const engines: Readonly<Record<EngineName, Engine>> = {buildkit, buildah};

/** BuildKit first: the default wherever the builder has it. */
const preference: readonly EngineName[] = ['buildkit', 'buildah'];

const hints: Record<EngineName, string> = {
	buildkit: 'drop --engine buildkit (buildah builds it), or use a builder with BuildKit: `exobuild builder build --buildkit SOURCE`, or load one made from Containerfile.builder (`exobuild builder load -i FILE`)',
	buildah: 'drop --engine buildah (BuildKit builds it), or use a builder image with buildah (`exobuild builder build`)',
};

/**
 * The engine a build runs in. `available`: the engines of the builder image; `builder`: how to
 * name it in a message.
 */
export const chooseEngine = (requested: 'auto' | EngineName, available: readonly EngineName[], builder = 'the builder image'): EngineName => {
	if (requested !== 'auto') {
		if (!available.includes(requested)) {
			throw new UserError(`--engine ${requested}: ${builder} has no ${requested === 'buildkit' ? 'BuildKit' : 'buildah'} (it has ${available.length === 0 ? 'no engine' : available.join(' and ')})`, {
				hint: hints[requested], code: 'E_ENGINE_MISSING', exitCode: 2,
			});
		}

		return requested;
	}

	const chosen = preference.find(engine => available.includes(engine));
	if (chosen === undefined) {
		throw new UserError(`${builder} has neither BuildKit nor buildah`, {
			hint: 'rebuild the builder: `exobuild builder build` (add --buildkit SOURCE for BuildKit)', code: 'E_ENGINE_MISSING', exitCode: 2,
		});
	}

	return chosen;
};

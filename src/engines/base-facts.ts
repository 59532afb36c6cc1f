/**
 * What an engine needs to know of a base image (a named context from an OCI layout) before the
 * build: how many `history` entries its image config has (buildah's layer cache needs them:
 * ./buildah/warnings.ts). The pipeline reads the config blob (bounded, as every image byte is
 * hostile: docs/security.md) and hands the parsed JSON here.
 */
import {z} from 'zod';
import type {BaseFacts} from './plan.js';

/** Only `history` matters here; an entry may be any object (OCI image-spec config.md: all its fields are optional). */
const historySchema = z.object({history: z.array(z.object({}).passthrough()).nullish()}).passthrough();

export const baseFactsOf = (name: string, platform: string, config: unknown): BaseFacts => {
	const parsed = historySchema.safeParse(config);
	return {name, platform, historyEntries: parsed.success ? parsed.data.history?.length ?? 0 : 0};
};

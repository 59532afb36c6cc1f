/**
 * buildah's layer cache and bases without `history`. buildah reuses a cached step only when the
 * candidate image's history is the base's history plus one entry, and when the base's layers
 * are as many as its history entries that add a layer: historyAndDiffIDsMatch in
 * imagebuildah/stage_executor.go (containers/buildah; read in the v1.39-era source). A
 * base whose config has no history has layers but zero such entries, so
 * `len(baseDiffIDs) != expectedDiffIDs` holds for every candidate: no step is ever found in the
 * cache, and each rebuild re-runs every step. BuildKit keys its cache by content, not history.
 */
import type {BaseFacts} from '../plan.js';

export const historylessBasesWarning = (bases: readonly BaseFacts[]): string[] => {
	const names = [...new Set(bases.filter(base => base.historyEntries === 0).map(base => base.name))];
	if (names.length === 0) {
		return [];
	}

	const list = names.join(', ');
	return [`buildah's layer cache cannot match steps on ${names.length === 1 ? 'base' : 'bases'} ${list}: ${names.length === 1 ? 'its image config has' : 'their image configs have'} no history, which buildah compares to find a cached step, so every step runs again on each build; build with BuildKit (--engine buildkit), or use a base whose config has a history entry per layer`];
};

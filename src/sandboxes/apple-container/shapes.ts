/**
 * The JSON Apple's `container` CLI prints, as zod schemas (see
 * test/simulators/apple-container/GRAMMAR.md for the sources). Both the 1.x shapes and the
 * pre-1.0 ones are accepted; unknown fields pass through untouched.
 */
import {z} from 'zod';

/** `container system status --format json`. */
export const systemStatus = z.looseObject({
	status: z.string(),
	apiServerVersion: z.string().optional(),
});

/** `container system version --format json` (1.x): one entry per component. */
export const versionList = z.array(z.looseObject({version: z.string(), appName: z.string().optional()}));

/** `container --version`. */
export const cliVersionLine = z.string().regex(/version \d+\.\d+\.\d+/);

const configuration = z.looseObject({
	id: z.string().optional(),
	labels: z.record(z.string(), z.string()).optional(),
	image: z.looseObject({reference: z.string().optional()}).optional(),
});

/**
 * One element of `container list --all --format json` / `container inspect`:
 * 1.x `{id, configuration, status: {state}}`; 0.x `{configuration: {id}, status: "running"}`.
 */
export const containerEntry = z.looseObject({
	id: z.string().optional(),
	configuration,
	status: z.union([z.string(), z.looseObject({state: z.string()})]),
});
export const containerList = z.array(containerEntry);
export type ContainerEntry = z.infer<typeof containerEntry>;

export const containerId = (entry: ContainerEntry): string | undefined => entry.id ?? entry.configuration.id;
export const containerState = (entry: ContainerEntry): string => (typeof entry.status === 'string' ? entry.status : entry.status.state);
export const containerLabels = (entry: ContainerEntry): Record<string, string> => entry.configuration.labels ?? {};

/** One element of `container image list --format json` (1.x `name`/`configuration.reference`; 0.x `reference`). */
export const imageEntry = z.looseObject({
	name: z.string().optional(),
	reference: z.string().optional(),
	configuration: z.looseObject({reference: z.string().optional()}).optional(),
});
export const imageList = z.array(imageEntry);
export const imageName = (entry: z.infer<typeof imageEntry>): string | undefined => entry.name ?? entry.configuration?.reference ?? entry.reference;

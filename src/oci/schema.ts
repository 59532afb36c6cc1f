/** The OCI image-spec documents exobuild reads and writes (only the fields it uses), as zod schemas. */
import {z} from 'zod';

export const mediaTypes = {
	index: 'application/vnd.oci.image.index.v1+json',
	manifest: 'application/vnd.oci.image.manifest.v1+json',
	config: 'application/vnd.oci.image.config.v1+json',
	layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
	layer: 'application/vnd.oci.image.layer.v1.tar',
	dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
	dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export const refNameAnnotation = 'org.opencontainers.image.ref.name';
export const containerdNameAnnotation = 'io.containerd.image.name';

const digestPattern = /^sha256:[a-f0-9]{64}$/;
export const digestSchema = z.string().regex(digestPattern, 'a sha256 digest');

/** A sha256 digest with its exact hex length (the only algorithm exobuild reads). */
export const isDigest = (value: unknown): value is string => typeof value === 'string' && digestPattern.test(value);

export const platformSchema = z.object({
	architecture: z.string(),
	os: z.string(),
	variant: z.string().optional(),
});

/**
 * BuildKit lists an attestation (provenance, SBOM) as a manifest next to the image it describes,
 * marked with this annotation; it is not an image (moby/buildkit v0.32.2 docs/attestations/attestation-storage.md).
 */
export const isAttestationManifest = (descriptor: {readonly annotations?: Readonly<Record<string, string>> | undefined}): boolean =>
	descriptor.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest';

export const descriptorSchema = z.object({
	mediaType: z.string(),
	digest: digestSchema,
	size: z.number().int().nonnegative(),
	annotations: z.record(z.string(), z.string()).optional(),
	platform: platformSchema.optional(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

export const indexSchema = z.object({
	schemaVersion: z.literal(2),
	mediaType: z.string().optional(),
	manifests: z.array(descriptorSchema),
	annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageIndex = z.infer<typeof indexSchema>;

export const manifestSchema = z.object({
	schemaVersion: z.literal(2),
	mediaType: z.string().optional(),
	config: descriptorSchema,
	layers: z.array(descriptorSchema),
	annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageManifest = z.infer<typeof manifestSchema>;

export const configSchema = z.object({
	architecture: z.string(),
	os: z.string(),
	variant: z.string().optional(),
	config: z.object({
		Env: z.array(z.string()).optional(),
		Entrypoint: z.array(z.string()).nullable().optional(),
		Cmd: z.array(z.string()).nullable().optional(),
		Labels: z.record(z.string(), z.string()).nullable().optional(),
		WorkingDir: z.string().optional(),
	}).passthrough().optional(),
	rootfs: z.object({type: z.literal('layers'), diff_ids: z.array(digestSchema)}),
}).passthrough();
export type ImageConfig = z.infer<typeof configSchema>;

export const isIndexMediaType = (mediaType: string | undefined): boolean => mediaType === mediaTypes.index || mediaType === mediaTypes.dockerList;

/** linux/arm/v7 style id of an OCI platform, normalised as exobuild's table does (arm → arm/v7, arm64/v8 → arm64). */
export const platformIdOf = (platform: {os: string; architecture: string; variant?: string | undefined}): string => {
	let {variant} = platform;
	if (platform.architecture === 'arm' && variant === undefined) {
		variant = 'v7';
	}

	if (platform.architecture === 'arm64' && variant === 'v8') {
		variant = undefined;
	}

	return [platform.os, platform.architecture, variant].filter(Boolean).join('/');
};

/** What reading a document needs of a schema (zod's safeParse). */
export interface SafeParser<T> {
	safeParse(value: unknown): {success: true; data: T} | {success: false; error: z.ZodError};
}

const printableKey = (key: PropertyKey): string => {
	const text = String(key).replaceAll(/[\u0000-\u001F\u007F-\u009F\u2028\u2029]/g, '?');
	return text.length > 40 ? `${text.slice(0, 40)}…` : text;
};

/** manifests[0].digest */
const pathText = (parts: readonly PropertyKey[]): string => parts
	.map((part, position) => (typeof part === 'number' ? `[${part}]` : `${position === 0 ? '' : '.'}${printableKey(part)}`))
	.join('');

const withArticle = (noun: string): string => `${/^[aeiou]/.test(noun) ? 'an' : 'a'} ${noun}`;

/** A schema failure as one line ("manifests is missing", "layers[2].digest is not a sha256 digest"), never a dump. */
export const describeSchemaError = (error: z.ZodError): string => {
	const [issue, ...more] = error.issues;
	if (issue === undefined) {
		return 'it does not match the schema';
	}

	const where = issue.path.length === 0 ? 'the document' : pathText(issue.path);
	let text: string;
	switch (issue.code) {
		case 'invalid_type': {
			text = /received undefined$/.test(issue.message) ? `${where} is missing` : `${where} is not ${withArticle(String(issue.expected))}`;
			break;
		}

		case 'invalid_format': {
			text = `${where} is not ${issue.format === 'regex' ? issue.message : withArticle(String(issue.format))}`;
			break;
		}

		case 'invalid_value': {
			text = `${where} is not ${issue.values.map(value => JSON.stringify(value)).join(' or ')}`;
			break;
		}

		default: {
			text = `${where}: ${issue.message.replaceAll(/\s+/g, ' ').slice(0, 100)}`;
		}
	}

	return more.length === 0 ? text : `${text} (and ${more.length} more problem${more.length === 1 ? '' : 's'})`;
};

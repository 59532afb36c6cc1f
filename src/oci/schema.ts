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

export const digestSchema = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'a sha256 digest');

export const platformSchema = z.object({
	architecture: z.string(),
	os: z.string(),
	variant: z.string().optional(),
});

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

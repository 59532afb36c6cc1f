/**
 * buildx's `--annotation` grammar: `[TYPE[,TYPE…][PLATFORM]:]KEY=VALUE`, where TYPE is manifest
 * (the default), manifest-descriptor, index or index-descriptor and PLATFORM (in square brackets)
 * limits it to one platform's image (docker/buildx util/buildflags/export.go ParseAnnotations,
 * v0.19). What is parsed here is the key part; the CLI already split KEY from VALUE at the first
 * `=`.
 */
import {UserError} from '../errors.js';
import {printable} from './blobs.js';
import {platformIdOf} from './schema.js';

export const annotationTypes = ['manifest', 'manifest-descriptor', 'index', 'index-descriptor'] as const;
export type AnnotationType = typeof annotationTypes[number];

export interface RequestedAnnotation {
	/** Where it goes; an annotation without a type goes on the manifests (BuildKit's default). */
	readonly type: AnnotationType;
	/** The platform id (linux/arm/v7) it is limited to, if any. */
	readonly platform: string | undefined;
	readonly key: string;
	readonly value: string;
}

const typePattern = /^([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?$/;

const isAnnotationType = (text: string): text is AnnotationType => (annotationTypes as readonly string[]).includes(text);

const normalisedPlatform = (text: string): string => {
	const [os = '', architecture = '', variant] = text.split('/');
	return platformIdOf({os, architecture, variant});
};

const refuse = (flagValue: string, why: string): UserError => new UserError(`invalid --annotation ${printable(flagValue)}: ${why}`, {
	hint: `give KEY=VALUE, or TYPE:KEY=VALUE with TYPE one of ${annotationTypes.join(', ')} (optionally TYPE[os/arch]:KEY=VALUE)`,
	code: 'E_USAGE',
});

/** One `--annotation` (key and value as split by the CLI), one entry per type it names. */
export const parseAnnotation = (key: string, value: string): RequestedAnnotation[] => {
	const flagValue = `${key}=${value}`;
	const colon = key.indexOf(':');
	if (colon === -1) {
		if (key === '') {
			throw refuse(flagValue, 'the key is empty');
		}

		return [{type: 'manifest', platform: undefined, key, value}];
	}

	const name = key.slice(colon + 1);
	if (name === '') {
		throw refuse(flagValue, 'the key is empty');
	}

	return key.slice(0, colon).split(',').map(typeAndPlatform => {
		const groups = typePattern.exec(typeAndPlatform);
		if (groups === null || !isAnnotationType(groups[1]!)) {
			throw refuse(flagValue, `unknown annotation type ${printable(typeAndPlatform, 60)}`);
		}

		return {type: groups[1], platform: groups[2] === undefined ? undefined : normalisedPlatform(groups[2]), key: name, value};
	});
};

/** Every `--annotation` of a build, parsed. */
export const parseAnnotations = (pairs: ReadonlyArray<readonly [string, string]>): RequestedAnnotation[] => pairs.flatMap(([key, value]) => parseAnnotation(key, value));

/**
 * The exporter attribute BuildKit reads for an annotation: `annotation.KEY` (manifest),
 * `annotation-index.KEY`, `annotation-manifest-descriptor[linux/arm64].KEY`… (moby/buildkit
 * v0.32.2 exporter/containerimage/exptypes/annotations.go ParseAnnotationKey; buildx passes them
 * so: build/opt.go).
 */
export const buildkitAnnotationAttribute = (annotation: RequestedAnnotation): string =>
	`annotation${annotation.type === 'manifest' ? '' : `-${annotation.type}`}${annotation.platform === undefined ? '' : `[${annotation.platform}]`}.${annotation.key}`;

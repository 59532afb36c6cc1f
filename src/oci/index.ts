export * from './schema.js';
export {
	badImageCode, layoutSource, ociLimits, openBlob, producedLayout, readBlobStream, userLayout, verifyBlob, type BlobRef, type LayoutRef, type LayoutSource, type OpenedFile,
} from './blobs.js';
export {
	blobPath, imagesOfLayout, imagesUnder, readBlob, readConfig, readIndexJson, readManifest, resolvePlatformManifests, sha256, verifyImageLayers, writePlatformView,
	type PlatformImage, type ResolvedLayout,
} from './layout.js';
export {inspectArchive, normaliseReference, packLayoutToArchive, verifyLayout, writeFileAtomically, type InspectedArchive, type InspectedImage} from './archive.js';
export {applyLayer, unpackImageArchive} from './unpack.js';
export {fileDigest, LayoutWriter, type ImageSpec} from './writer.js';
export {annotationTypes, buildkitAnnotationAttribute, parseAnnotation, parseAnnotations, type AnnotationType, type RequestedAnnotation} from './annotations.js';
export {mergeErrorCode, mergeLayouts, type MergedImage, type MergedLayout, type MergeOptions} from './merge.js';

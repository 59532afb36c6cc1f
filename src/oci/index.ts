export * from './schema.js';
export {blobPath, imagesUnder, readBlob, readIndexJson, resolvePlatformManifests, sha256, writePlatformView, type PlatformImage, type ResolvedLayout} from './layout.js';
export {inspectArchive, normaliseReference, packLayoutToArchive, verifyLayout, writeFileAtomically, type InspectedArchive, type InspectedImage} from './archive.js';
export {applyLayer, unpackImageArchive} from './unpack.js';
export {fileDigest, LayoutWriter, type ImageSpec} from './writer.js';

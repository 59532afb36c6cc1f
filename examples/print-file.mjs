// Prints one file of every platform's image in an OCI archive:  node print-file.mjs ARCHIVE PATH
import {inspectArchive} from '../dist/src/oci/index.js';

const [archive, file] = process.argv.slice(2);
if (!archive || !file) {
	process.stderr.write('usage: node print-file.mjs ARCHIVE PATH\n');
	process.exit(2);
}

const inspected = await inspectArchive(archive);
for (const image of inspected.images) {
	const content = await image.readFile(file);
	process.stdout.write(`${image.platform.padEnd(16)} ${content === undefined ? `(no ${file})` : content.toString('utf8').trimEnd()}\n`);
}

/** The lines of a child's output stream, as they come; resolves when the stream ends (at once for none). Shared by the drivers. */
import readline from 'node:readline';

export const readLines = async (stream: NodeJS.ReadableStream | null | undefined, onLine: ((line: string) => void) | undefined): Promise<void> => new Promise(resolve => {
	if (!stream) {
		resolve();
		return;
	}

	readline.createInterface({input: stream, crlfDelay: Number.POSITIVE_INFINITY}).on('line', line => onLine?.(line)).on('close', resolve);
});

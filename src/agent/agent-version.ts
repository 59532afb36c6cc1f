/**
 * exobuild's version, read once from package.json, and the stamp that puts it into the agent.
 * The agent (vm-image/exobuild-agent) carries the line `AGENT_VERSION=unstamped`; the builder
 * recipe copies it into an image through stampAgentVersion, so `hello` reports the version of the
 * exobuild that made the image and no second copy of the number is kept by hand.
 */
import fs from 'node:fs';
import path from 'node:path';
import {z} from 'zod';
import {packageRoot} from '../paths.js';

const versionText = z.string().regex(/^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$/);

/** `version` of package.json. */
export const exobuildVersion: string = z.object({version: versionText})
	.parse(JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8'))).version;

/** The agent's unstamped version line (as in vm-image/exobuild-agent). */
export const unstampedVersionLine = 'AGENT_VERSION=unstamped';

/** The agent script with its version line set to `version`. Throws unless the line is there exactly once. */
export const stampAgentVersion = (script: string, version: string = exobuildVersion): string => {
	versionText.parse(version);
	const lines = script.split('\n');
	const at = lines.flatMap((line, index) => (line === unstampedVersionLine ? [index] : []));
	if (at.length !== 1) {
		throw new Error(`internal: the agent must have the line ${unstampedVersionLine} exactly once (found ${at.length})`);
	}

	lines[at[0]!] = `AGENT_VERSION=${version}`;
	return lines.join('\n');
};

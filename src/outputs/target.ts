/** Where a build's image goes: the buildx output types exobuild writes on the host. Parsing `--output` is not done here. */
import {z} from 'zod';

const dest = z.string().min(1, 'dest is required');

export const keepOwnersNeedsRoot = 'keep-owners=true needs root: only root can give files to other users and keep setuid/setgid bits';

export const outputTargetSchema = z.discriminatedUnion('type', [
	/** An OCI archive (tar, the default) or, with tar: false, an OCI layout folder. dest `-`: stdout (archive only). */
	z.object({type: z.literal('oci'), dest, tar: z.boolean().optional()}),
	/** A `docker load` archive of one platform. dest `-`: stdout. */
	z.object({type: z.literal('docker'), dest}),
	/**
	 * The root filesystem in a folder (a subfolder per platform when several). keepOwners
	 * (`keep-owners=true`): the image's owners and setuid/setgid bits are kept; root only.
	 */
	z.object({type: z.literal('local'), dest, keepOwners: z.boolean().optional()}),
	/** The root filesystem as a tar (a top-level folder per platform when several). dest `-`: stdout. */
	z.object({type: z.literal('tar'), dest}),
]).superRefine((target, context) => {
	if (target.dest === '-' && (target.type === 'local' || (target.type === 'oci' && target.tar === false))) {
		context.addIssue({code: 'custom', path: ['dest'], message: `type=${target.type}${target.type === 'oci' ? ',tar=false' : ''} writes a folder; dest cannot be - (stdout)`});
	}

	if (target.type === 'local' && target.keepOwners === true && process.getuid?.() !== 0) {
		context.addIssue({code: 'custom', path: ['keepOwners'], message: keepOwnersNeedsRoot});
	}
});

export type OutputTarget = z.infer<typeof outputTargetSchema>;
export type OutputType = OutputTarget['type'];

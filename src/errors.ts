/**
 * An error the user can act on: one line saying what is wrong, one hint saying what to do.
 * The CLI prints these without a stack trace (unless --debug) and exits with `exitCode`.
 */
export class UserError extends Error {
	override readonly name = 'UserError';
	readonly hint: string | undefined;
	readonly exitCode: number;
	/** A stable, greppable code (also used for agent errors, see src/agent-events). */
	readonly code: string;

	constructor(message: string, options: { hint?: string; exitCode?: number; code?: string; cause?: unknown } = {}) {
		super(message, options.cause === undefined ? undefined : { cause: options.cause });
		this.hint = options.hint;
		this.exitCode = options.exitCode ?? 2;
		this.code = options.code ?? 'E_USAGE';
	}
}

export const isUserError = (error: unknown): error is UserError => error instanceof UserError;

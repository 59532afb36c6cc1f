/**
 * Turning a driver's requirement checks into `exobuild doctor` rows. A requirement is a check
 * that returns a one-line detail when it holds and throws a UserError (whose hint is the fix)
 * when it does not: features() runs them in order and stops at the first failure, diagnose()
 * runs each one and reports them all.
 */
import {isUserError} from '../errors.js';
import type {CheckRow} from './driver.js';

export interface Requirement {
	readonly check: string;
	/** The detail when it holds; throws a UserError otherwise. */
	readonly run: () => Promise<string>;
}

/** Runs one requirement into a row; anything but a UserError is a fail row too (never thrown). */
export const requirementRow = async (area: string, requirement: Requirement): Promise<CheckRow> => {
	try {
		return {area, check: requirement.check, status: 'ok', detail: await requirement.run()};
	} catch (error) {
		return isUserError(error)
			? {area, check: requirement.check, status: 'fail', detail: error.message, fix: error.hint ?? 'see the detail'}
			: {area, check: requirement.check, status: 'fail', detail: `could not check: ${error instanceof Error ? error.message : String(error)}`, fix: 'run with --debug and report it'};
	}
};

export const requirementRows = async (area: string, requirements: readonly Requirement[]): Promise<CheckRow[]> => {
	const rows: CheckRow[] = [];
	for (const requirement of requirements) {
		rows.push(await requirementRow(area, requirement));
	}

	return rows;
};

/**
 * `exobuild doctor`'s output: a table (AREA, CHECK, STATUS, DETAIL) with a `fix:` line under it
 * for every warn and fail row, or `{ok, checks}` as JSON; and its exit code. Pure.
 */
import type {CheckRow} from '../sandboxes/driver.js';

export type {CheckRow, CheckStatus} from '../sandboxes/driver.js';

export interface DoctorReport {
	/** No row failed (warnings allowed). */
	readonly ok: boolean;
	readonly checks: readonly CheckRow[];
}

export const doctorReport = (checks: readonly CheckRow[]): DoctorReport => ({ok: checks.every(row => row.status !== 'fail'), checks});

/** 0 when no row failed, 1 otherwise. */
export const doctorExitCode = (checks: readonly CheckRow[]): number => (doctorReport(checks).ok ? 0 : 1);

export const renderJson = (checks: readonly CheckRow[]): string => `${JSON.stringify(doctorReport(checks), undefined, 2)}\n`;

/** Details are one line each: whatever a check found (an agent's message, a CLI's error) is flattened. */
const oneLine = (text: string): string => text.replaceAll(/\s*\n\s*/g, ' ').trim();

export const renderTable = (checks: readonly CheckRow[]): string => {
	const header = ['AREA', 'CHECK', 'STATUS', 'DETAIL'] as const;
	const cells = checks.map(row => [row.area, row.check, row.status, oneLine(row.detail)]);
	const widths = [0, 1, 2].map(column => Math.max(header[column]!.length, ...cells.map(cell => cell[column]!.length)));
	const line = (cell: readonly string[]): string => `${cell.slice(0, 3).map((text, column) => text.padEnd(widths[column]!)).join('  ')}  ${cell[3]}`.trimEnd();
	const fixes = checks.filter(row => row.status !== 'ok').map(row => `fix: ${row.area} ${row.check}: ${oneLine(row.fix ?? 'see the detail above')}`);
	const failed = checks.filter(row => row.status === 'fail').length;
	const warned = checks.filter(row => row.status === 'warn').length;
	const summary = failed === 0 && warned === 0
		? `all ${checks.length} checks passed`
		: `${failed} failed, ${warned} warning${warned === 1 ? '' : 's'}, ${checks.length - failed - warned} ok`;
	return [line(header), ...cells.map(cell => line(cell)), ...(fixes.length > 0 ? ['', ...fixes] : []), '', summary, ''].join('\n');
};

/**
 * What a build reports while it runs: host phases (run by exobuild on the host) and agent
 * phases (reported by the agent, see src/agent/contract.ts), in one ordered list.
 */
import type {AgentEvent} from '../agent/contract.js';

export const buildPhases = [
	{name: 'reap-orphans', title: 'Reap sandboxes left by killed runs', host: true},
	{name: 'builder-image', title: 'Builder image', host: true},
	{name: 'nodes', title: 'Ask the nodes', host: true},
	{name: 'sandbox-start', title: 'Start sandbox', host: true},
	{name: 'binfmt', title: 'Register and prove emulators', host: false},
	{name: 'engine-start', title: 'Start build engine', host: false},
	{name: 'platform-check', title: 'Check platforms', host: false},
	{name: 'base-images', title: 'Load base images', host: false},
	{name: 'build', title: 'Build', host: false},
	{name: 'export', title: 'Export OCI layout', host: false},
	{name: 'teardown', title: 'Tear down sandbox', host: true},
	{name: 'merge', title: 'Merge the nodes\' results', host: true},
	{name: 'archive', title: 'Write the output', host: true},
	{name: 'load', title: 'Load into the image store', host: true},
	{name: 'push', title: 'Push to the registry', host: true},
] as const;

export type BuildPhase = (typeof buildPhases)[number]['name'];
export type HostPhase = Extract<(typeof buildPhases)[number], {host: true}>['name'];

export type ProgressEvent =
	| {readonly kind: 'host-phase'; readonly phase: HostPhase; readonly state: 'start' | 'end'; readonly ms?: number; readonly detail?: string}
	| {readonly kind: 'agent'; readonly event: AgentEvent}
	| {readonly kind: 'agent-stderr'; readonly line: string}
	/** A build step read from the engine's output (src/progress/steps.ts). */
	| {readonly kind: 'step'; readonly id: number; readonly name: string; readonly platform?: string; readonly state: 'start' | 'cached' | 'done'; readonly cached: boolean; readonly ms?: number}
	| {readonly kind: 'warning'; readonly message: string};

export interface BuildReporter {
	report(event: ProgressEvent): void;
	/** Called once at the end; the reporter flushes and stops rendering. */
	finish(outcome: {ok: boolean}): Promise<void>;
}

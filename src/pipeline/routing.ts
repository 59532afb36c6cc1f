/**
 * Routing (issue 12): which platforms of a build go to which remote BuildKit node
 * (src/nodes/, docs/scale-out.md) and which are built in the local sandbox. A platform goes to
 * the node `--node NAME[=P,P]` names for it, else to the first node of nodes.json that serves it
 * natively (its stored platforms), else it is built locally; as buildx gives each platform to
 * the node of a builder that lists it (docker/buildx v0.19 build/driver.go resolveDrivers).
 * Before any build starts every node in use is asked (src/nodes/probe.ts, bounded): one that
 * does not answer fails the build with its name and address (exit 2), or with `--fallback local`
 * has its platforms built locally (one warning).
 */
import {UserError} from '../errors.js';
import {findNode, unknownNode, type NodeRecord, type NodesDocument} from '../nodes/store.js';
import type {NodeProbe, NodeTarget} from '../nodes/probe.js';
import type {Platform} from '../platforms/parse.js';
import type {BuildRequest} from '../request/build-request.js';
import {parseAnnotations} from '../oci/annotations.js';

/** The platforms one node builds. */
export interface NodePart {
	readonly node: NodeRecord;
	readonly platforms: readonly Platform[];
}

export interface RoutePlan {
	/** Built in the local sandbox, in the order of --platform. */
	readonly local: readonly Platform[];
	/** One part per node in use, in nodes.json order. */
	readonly nodes: readonly NodePart[];
}

/** Which node builds each platform. Pure; throws a UserError (exit 2) for a --node that names no node or none of its platforms. */
export const planRoutes = (request: BuildRequest, document: NodesDocument): RoutePlan => {
	const owner = new Map<string, NodeRecord>();
	for (const choice of request.routing?.nodes ?? []) {
		const node = findNode(document, choice.name);
		if (node === undefined) {
			throw unknownNode(choice.name, document);
		}

		const platforms = choice.platforms ?? request.platforms.filter(platform => node.platforms.includes(platform.id));
		if (platforms.length === 0) {
			throw new UserError(`--node ${node.name}: it serves none of the platforms asked (it serves ${node.platforms.join(', ')})`, {
				hint: `give the platforms: --node ${node.name}=PLATFORM[,PLATFORM], or drop --node ${node.name}`,
			});
		}

		for (const platform of platforms) {
			// An explicit NAME=P wins over a NAME that takes its stored platforms.
			if (choice.platforms !== undefined || !owner.has(platform.id)) {
				owner.set(platform.id, node);
			}
		}
	}

	for (const platform of request.platforms) {
		if (!owner.has(platform.id)) {
			const node = document.nodes.find(candidate => candidate.platforms.includes(platform.id));
			if (node !== undefined) {
				owner.set(platform.id, node);
			}
		}
	}

	return {
		local: request.platforms.filter(platform => !owner.has(platform.id)),
		nodes: document.nodes
			.map(node => ({node, platforms: request.platforms.filter(platform => owner.get(platform.id) === node)}))
			.filter(part => part.platforms.length > 0),
	};
};

export const nodeTarget = (node: NodeRecord): NodeTarget => ({
	name: node.name, address: node.address, ...(node.tls === undefined ? {} : {tls: node.tls}), ...(node.sshKnownHosts === undefined ? {} : {sshKnownHosts: node.sshKnownHosts}),
});

/**
 * Asks every node of `plan` at the same time; returns the plan with the platforms of nodes that
 * do not answer moved to the local part (fallback local, each with a warning), or throws
 * E_NODE_DOWN (exit 2) naming the first such node and its address. A node that answers but does
 * not list a platform it was given fails the same way.
 */
export const checkNodes = async (plan: RoutePlan, options: {
	readonly fallback: 'none' | 'local';
	readonly probe: (node: NodeTarget) => Promise<NodeProbe>;
	readonly warn: (message: string) => void;
	/** The order of the merged result (--platform). */
	readonly order: readonly Platform[];
}): Promise<RoutePlan> => {
	const probes = await Promise.all(plan.nodes.map(async part => options.probe(nodeTarget(part.node))));
	const kept: NodePart[] = [];
	const fallen: Platform[] = [];
	for (const [index, part] of plan.nodes.entries()) {
		const probe = probes[index]!;
		const {node} = part;
		if (!probe.answered) {
			if (options.fallback === 'local') {
				options.warn(`node ${node.name} (${node.address}) does not answer (${probe.reason}): ${part.platforms.map(platform => platform.id).join(', ')} built in the local sandbox (--fallback local)`);
				fallen.push(...part.platforms);
				continue;
			}

			throw new UserError(`node ${node.name} (${node.address}) does not answer: ${probe.reason}`, {
				code: 'E_NODE_DOWN',
				hint: `start buildkitd there (check it with \`exobuild node inspect ${node.name}\`), or add --fallback local to build its platforms (${part.platforms.map(platform => platform.id).join(', ')}) in the local sandbox`,
			});
		}

		const missing = part.platforms.filter(platform => !probe.workerPlatforms.includes(platform.id));
		if (missing.length > 0) {
			throw new UserError(`node ${node.name} (${node.address}) does not build ${missing.map(platform => platform.id).join(', ')} (its workers: ${probe.workerPlatforms.join(', ') || 'none'})`, {
				code: 'E_NODE_DOWN',
				hint: `give those platforms to another node (--node NAME=PLATFORM), or fix the node's record: exobuild node rm ${node.name}, then node add`,
			});
		}

		kept.push(part);
	}

	const local = new Set([...plan.local, ...fallen].map(platform => platform.id));
	return {local: options.order.filter(platform => local.has(platform.id)), nodes: kept};
};

/** What a routed build cannot do (exit 2, before anything starts). */
export const refuseRouted = (request: BuildRequest, engine: string, plan: RoutePlan): void => {
	if (plan.nodes.length === 0) {
		return;
	}

	const names = plan.nodes.map(part => part.node.name).join(', ');
	if (engine !== 'buildkit') {
		throw new UserError(`the nodes (${names}) build with BuildKit, and this build's engine is ${engine}: a build routed to nodes uses BuildKit here too`, {
			hint: 'drop --engine buildah (or use a builder image with BuildKit), or build without nodes: --node is needed for none, and `exobuild node rm NAME` removes a node',
		});
	}

};

/**
 * The annotations each part's solve applies: the manifests' own. The index and its descriptors'
 * are the merged index's (src/oci/merge.ts applies them); BuildKit refuses index annotations on a
 * single-platform export, which a part often is ("index annotations not supported for single
 * platform export", exporter/containerimage/writer.go, moby/buildkit v0.32.2).
 */
export const manifestAnnotations = (pairs: ReadonlyArray<readonly [string, string]>): Array<readonly [string, string]> =>
	parseAnnotations(pairs).filter(annotation => annotation.type === 'manifest')
		.map(annotation => [annotation.platform === undefined ? annotation.key : `manifest[${annotation.platform}]:${annotation.key}`, annotation.value] as const);

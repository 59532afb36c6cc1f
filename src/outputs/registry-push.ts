/**
 * `--push` / `-o type=image,push=true` / `type=registry`: the sandbox's OCI layout pushed to a
 * registry with the OCI distribution API (blobs by monolithic upload, then manifests, the index
 * last, by tag), using the credentials of the user's docker config ($DOCKER_CONFIG/config.json,
 * else ~/.docker/config.json: `auths` entries with `auth` or `username`/`password`). Basic and
 * Bearer token challenges are answered. localhost and 127.0.0.1 (and EXOBUILD_INSECURE_REGISTRIES)
 * are spoken to over plain HTTP, everything else over HTTPS.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type {Method} from 'got';

/** got and its HTTP/2 helpers, loaded when something is pushed (not at every build's start-up). */
const loadGot = async (): Promise<typeof import('got').default> => (await import('got')).default;
import {z} from 'zod';
import {UserError} from '../errors.js';
import {verifyLayout} from '../oci/archive.js';
import {readJsonBlob} from '../oci/blobs.js';
import {blobPath, indexKind, readBlob, readIndexJson, readManifest} from '../oci/layout.js';
import {isIndexMediaType, type Descriptor} from '../oci/schema.js';
import {outputErrorCode} from './images.js';

export interface ImageReference {
	/** Registry host (and port) as the API is spoken to, e.g. registry-1.docker.io or 127.0.0.1:5000. */
	readonly registry: string;
	/** The key of the registry in docker's config.json. */
	readonly configKey: string;
	readonly repository: string;
	readonly tag: string;
}

const pushError = (message: string, hint: string): UserError => new UserError(message, {hint, exitCode: 1, code: outputErrorCode});

/** docker's reading of a reference: `app` → docker.io/library/app:latest. */
export const parseImageReference = (reference: string): ImageReference => {
	const match = /^(?:([a-zA-Z0-9.-]+(?::\d+)?|\[[\da-fA-F:]+\](?::\d+)?)\/)?([a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::([\w][\w.-]{0,127}))?$/.exec(reference);
	if (match === null) {
		throw new UserError(`cannot push to "${reference}": not an image reference`, {hint: 'e.g. -t registry.example.com/team/app:1', code: 'E_USAGE'});
	}

	let [, host, repository, tag] = match;
	// A first part without a dot, a port or "localhost" is a Docker Hub namespace, not a host.
	if (host !== undefined && !host.includes('.') && !host.includes(':') && host !== 'localhost') {
		repository = `${host}/${repository!}`;
		host = undefined;
	}

	if (host === undefined || host === 'docker.io') {
		return {registry: 'registry-1.docker.io', configKey: 'https://index.docker.io/v1/', repository: repository!.includes('/') ? repository! : `library/${repository!}`, tag: tag ?? 'latest'};
	}

	return {registry: host, configKey: host, repository: repository!, tag: tag ?? 'latest'};
};

const dockerConfig = z.object({
	auths: z.record(z.string(), z.object({auth: z.string().optional(), username: z.string().optional(), password: z.string().optional()}).loose()).optional(),
	credsStore: z.string().optional(),
	credHelpers: z.record(z.string(), z.string()).optional(),
}).loose();

/** user:password for a registry from the docker config, if it has them. */
export const registryCredentials = async (reference: ImageReference, env: NodeJS.ProcessEnv = process.env): Promise<{username: string; password: string} | undefined> => {
	const file = path.join(env['DOCKER_CONFIG'] ?? path.join(os.homedir(), '.docker'), 'config.json');
	let text: string;
	try {
		text = await fs.readFile(file, 'utf8');
	} catch {
		return undefined;
	}

	const parsed = dockerConfig.safeParse(JSON.parse(text));
	if (!parsed.success) {
		throw new UserError(`${file} is not a docker config`, {hint: 'fix or move it; exobuild reads its "auths" for --push', code: 'E_USAGE'});
	}

	const keys = [reference.configKey, `https://${reference.configKey}`, `http://${reference.configKey}`, ...(reference.registry === 'registry-1.docker.io' ? ['docker.io', 'index.docker.io'] : [])];
	const entry = keys.map(key => parsed.data.auths?.[key]).find(value => value !== undefined);
	if (entry?.auth !== undefined) {
		const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
		const colon = decoded.indexOf(':');
		return {username: decoded.slice(0, colon), password: decoded.slice(colon + 1)};
	}

	if (entry?.username !== undefined && entry.password !== undefined) {
		return {username: entry.username, password: entry.password};
	}

	const helper = parsed.data.credHelpers?.[reference.configKey] ?? parsed.data.credsStore;
	if (entry === undefined && helper !== undefined) {
		throw new UserError(`the credentials for ${reference.configKey} are in the docker credential helper "${helper}", which exobuild does not call`, {
			hint: `put them in ${file} under "auths" (docker login with no credsStore), or push the OCI archive with skopeo`,
			code: 'E_USAGE',
		});
	}

	return undefined;
};

/** http://HOST for localhost, 127.0.0.1, [::1] and EXOBUILD_INSECURE_REGISTRIES; https://HOST otherwise. */
const registryOrigin = (reference: ImageReference, env: NodeJS.ProcessEnv): string => {
	const insecure = ['localhost', '127.0.0.1', '[::1]', ...(env['EXOBUILD_INSECURE_REGISTRIES'] ?? '').split(',').map(host => host.trim()).filter(Boolean)];
	const hostname = reference.registry.replace(/:\d+$/, '');
	return `${insecure.includes(reference.registry) || insecure.includes(hostname) ? 'http' : 'https'}://${reference.registry}`;
};

/** One registry session: a base URL and whatever Authorization the registry asked for. */
class RegistryClient {
	readonly #base: string;
	readonly #reference: ImageReference;
	readonly #credentials: {username: string; password: string} | undefined;
	#authorization: string | undefined;

	constructor(reference: ImageReference, credentials: {username: string; password: string} | undefined, env: NodeJS.ProcessEnv) {
		this.#base = `${registryOrigin(reference, env)}/v2/${reference.repository}`;
		this.#reference = reference;
		this.#credentials = credentials;
	}

	async request(method: Method, url: string, options: {headers?: Record<string, string>; body?: Buffer | NodeJS.ReadableStream} = {}): Promise<{statusCode: number; headers: Record<string, string | string[] | undefined>; body: string}> {
		for (let attempt = 0; ; attempt++) {
			const got = await loadGot();
			const response = await got(url.startsWith('http') ? url : `${this.#base}${url}`, {
				method,
				headers: {...options.headers, ...(this.#authorization === undefined ? {} : {authorization: this.#authorization})},
				...(options.body === undefined ? {} : {body: options.body as Buffer}),
				throwHttpErrors: false,
				followRedirect: true,
				retry: {limit: 2, methods: ['GET', 'HEAD', 'PUT']},
			}).catch((error: unknown) => {
				throw pushError(`cannot reach ${this.#reference.registry}: ${(error as Error).message}`, 'check the registry address and the network');
			});
			if (response.statusCode !== 401 || attempt > 0) {
				return {statusCode: response.statusCode, headers: response.headers, body: response.body};
			}

			await this.#answer(String(response.headers['www-authenticate'] ?? ''));
		}
	}

	async #answer(challenge: string): Promise<void> {
		const basic = this.#credentials === undefined ? undefined : `Basic ${Buffer.from(`${this.#credentials.username}:${this.#credentials.password}`).toString('base64')}`;
		if (/^basic/i.test(challenge)) {
			if (basic === undefined) {
				throw pushError(`${this.#reference.registry} wants a login`, `docker login ${this.#reference.registry} (exobuild reads the "auths" of your docker config)`);
			}

			this.#authorization = basic;
			return;
		}

		const fields = Object.fromEntries([...challenge.replace(/^bearer\s+/i, '').matchAll(/(\w+)="([^"]*)"/g)].map(([, key, value]) => [key!, value!]));
		if (!/^bearer/i.test(challenge) || fields['realm'] === undefined) {
			throw pushError(`${this.#reference.registry} refused the push (401, challenge "${challenge}")`, 'check your login for this registry');
		}

		const got = await loadGot();
		const token = await got(fields['realm'], {
			searchParams: {...(fields['service'] === undefined ? {} : {service: fields['service']}), scope: `repository:${this.#reference.repository}:pull,push`},
			headers: basic === undefined ? {} : {authorization: basic},
			throwHttpErrors: false,
		});
		const parsed = z.object({token: z.string().optional(), access_token: z.string().optional()}).safeParse(JSON.parse(token.body || '{}'));
		const value = parsed.success ? parsed.data.token ?? parsed.data.access_token : undefined;
		if (token.statusCode !== 200 || value === undefined) {
			throw pushError(`${this.#reference.registry} gave no token for pushing to ${this.#reference.repository} (HTTP ${token.statusCode})`, `docker login ${this.#reference.registry}, and check you may push to ${this.#reference.repository}`);
		}

		this.#authorization = `Bearer ${value}`;
	}
}

const expectStatus = (what: string, response: {statusCode: number; body: string}, ok: readonly number[]): void => {
	if (!ok.includes(response.statusCode)) {
		throw pushError(`${what} failed: HTTP ${response.statusCode} ${response.body.slice(0, 200).replaceAll(/\s+/g, ' ')}`, 'check your login and the repository name');
	}
};

/** Pushes the image (or image index) at the top of `layoutDir` to `target`. Returns the pushed digest. */
export const pushLayout = async (layoutDir: string, target: string, env: NodeJS.ProcessEnv = process.env): Promise<string> => {
	const reference = parseImageReference(target);
	const client = new RegistryClient(reference, await registryCredentials(reference, env), env);
	const pushed = new Set<string>();
	// Every blob is a regular file inside the layout with its descriptor's size and digest, and the
	// nesting is within bounds, before anything is sent (the reads below rely on it).
	await verifyLayout(layoutDir);

	const pushBlob = async (descriptor: Descriptor): Promise<void> => {
		if (pushed.has(descriptor.digest)) {
			return;
		}

		const head = await client.request('HEAD', `/blobs/${descriptor.digest}`);
		if (head.statusCode !== 200) {
			const start = await client.request('POST', '/blobs/uploads/');
			expectStatus(`starting the upload of ${descriptor.digest} to ${target}`, start, [202]);
			// The upload URL: absolute, or a path on the registry.
			const upload = new URL(String(start.headers['location'] ?? ''), registryOrigin(reference, env));
			upload.searchParams.set('digest', descriptor.digest);
			const put = await client.request('PUT', upload.toString(), {
				headers: {'content-type': 'application/octet-stream', 'content-length': String(descriptor.size)},
				body: await fs.readFile(blobPath(layoutDir, descriptor.digest)),
			});
			expectStatus(`uploading ${descriptor.digest} to ${target}`, put, [201, 204]);
		}

		pushed.add(descriptor.digest);
	};

	const pushManifest = async (descriptor: Descriptor, tag: string): Promise<void> => {
		const body = await readBlob(layoutDir, descriptor);
		if (isIndexMediaType(descriptor.mediaType)) {
			for (const child of (await readJsonBlob(layoutDir, descriptor, undefined, indexKind)).manifests) {
				await pushManifest(child, child.digest);
			}
		} else {
			const manifest = await readManifest(layoutDir, descriptor);
			for (const blob of [manifest.config, ...manifest.layers]) {
				await pushBlob(blob);
			}
		}

		const put = await client.request('PUT', `/manifests/${tag}`, {headers: {'content-type': descriptor.mediaType}, body});
		expectStatus(`pushing the manifest ${descriptor.digest} to ${target}`, put, [201, 204]);
	};

	const [top] = (await readIndexJson(layoutDir)).manifests;
	if (top === undefined) {
		throw pushError('nothing to push: the build wrote an empty layout', 'run with --progress plain to see the engine\'s output');
	}

	await pushManifest(top, reference.tag);
	return top.digest;
};


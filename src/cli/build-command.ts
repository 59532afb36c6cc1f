import process from 'node:process';
import {Option, type Command} from 'commander';
import {defaultHangTimeout, toBuildRequest, type RawBuildOptions} from './build-flags/options.js';
import {cacheBuilderStore, runBuild} from '../pipeline/run-build.js';
import {writeResultFiles} from '../pipeline/deliver-outputs.js';
import {writesToStdout} from '../outputs/destination.js';
import {interruptedBy, UserError} from '../errors.js';
import {runExitCleanups} from '../runs/exit-cleanups.js';
import {createReporter} from '../progress/create-reporter.js';
import {createDriver, defaultDriver} from '../sandboxes/index.js';
import {collect} from './main.js';
import {watchStopSignals} from './stop-signals.js';

export const registerBuildCommand = (program: Command): void => {
	program
		.command('build')
		.description('Build an image from a Dockerfile for one or more platforms')
		.argument('[CONTEXT]', 'build context folder')
		.addOption(new Option('--platform <P>', 'target platform(s): os/arch[/variant], comma list, repeatable (default: this machine\'s)').argParser(collect).default([]))
		.addOption(new Option('-f, --file <FILE>', 'Dockerfile (default: CONTEXT/Dockerfile)'))
		.addOption(new Option('-t, --tag <NAME>', 'name:tag for the image, repeatable').argParser(collect).default([]))
		.addOption(new Option('--build-arg <K=V|K>', 'build-time variable, repeatable; K alone takes K from the environment').argParser(collect).default([]))
		.addOption(new Option('--target <STAGE>', 'build up to this stage'))
		.addOption(new Option('--no-cache', 'do not use cached layers'))
		.addOption(new Option('--cache-from <type=local,src=DIR>', 'import the engine\'s cache from a folder (default: this project\'s cache in exobuild\'s cache dir)').argParser(collect).default([]))
		.addOption(new Option('--cache-to <type=local,dest=DIR>', 'export the engine\'s cache to a folder (default: this project\'s cache)').argParser(collect).default([]))
		.addOption(new Option('--build-context <NAME=oci-layout://DIR[@sha256:D]|NAME=DIR>', 'a named context: an OCI image layout (satisfies FROM NAME without a registry) or a local folder (COPY --from=NAME), repeatable').argParser(collect).default([]))
		.addOption(new Option('--no-cache-filter <STAGE[,STAGE]>', 'do not use the cache for these stages (BuildKit)').argParser(collect).default([]))
		.addOption(new Option('--pull', 'always pull referenced images (bases from OCI layouts are always read fresh)'))
		.addOption(new Option('--label <K=V>', 'image label, repeatable').argParser(collect).default([]))
		.addOption(new Option('--annotation <K=V>', 'manifest annotation, repeatable').argParser(collect).default([]))
		.addOption(new Option('--network <MODE>', 'network of RUN steps: default | none | host'))
		.addOption(new Option('--add-host <HOST:IP>', 'add a line to /etc/hosts of RUN steps, repeatable').argParser(collect).default([]))
		.addOption(new Option('--secret <id=ID[,src=FILE|,env=VAR]>', 'a secret for RUN --mount=type=secret, repeatable (never in argv, logs or the image)').argParser(collect).default([]))
		.addOption(new Option('--ssh <default|ID=PATH>', 'an ssh-agent socket or key for RUN --mount=type=ssh, repeatable').argParser(collect).default([]))
		.addOption(new Option('--shm-size <SIZE>', 'size of /dev/shm in RUN steps, e.g. 128m'))
		.addOption(new Option('--ulimit <TYPE=SOFT[:HARD]>', 'resource limit of RUN steps, repeatable').argParser(collect).default([]))
		.addOption(new Option('--sbom <true|false|K=V,...>', 'SBOM attestation (BuildKit)'))
		.addOption(new Option('--provenance <true|false|mode=min|max>', 'provenance attestation (BuildKit)'))
		.addOption(new Option('-o, --output <OUTPUT>', 'type=oci|docker|local|tar[,dest=FILE|DIR|-][,name=NAME][,tar=false]; -o DIR (local), -o - (tar to stdout)').argParser(collect).default([]))
		.addOption(new Option('--progress <MODE>', 'auto | plain | tty | quiet | rawjson (BuildKit\'s JSON, for tools)').default('auto'))
		.addOption(new Option('-q, --quiet', 'no progress; print only the image digest'))
		.addOption(new Option('--metadata-file <FILE>', 'write the result\'s metadata (buildx\'s keys: containerimage.digest, .descriptor, .config.digest, image.name) as JSON'))
		.addOption(new Option('--iidfile <FILE>', 'write the image id (the digest of the image, or of the index for several platforms)'))
		.addOption(new Option('--engine <ENGINE>', 'auto | buildkit | buildah (auto: buildkit where the builder image has it)').default('auto'))
		.addOption(new Option('--driver <DRIVER>', 'sandbox driver: linux-userns | apple-container').default(defaultDriver()))
		.addOption(new Option('--hang-timeout <DURATION>', 'stop a step that prints nothing and uses no CPU this long, reporting a likely emulator hang (0: never)').default(defaultHangTimeout))
		.addOption(new Option('--node <NAME[=P,P]>', 'build these platforms (default: the ones it serves) on node NAME (`exobuild node ls`), repeatable; without it each platform a node serves goes to that node').argParser(collect).default([]))
		.addOption(new Option('--fallback <local>', 'local: build the platforms of a node that does not answer in the local sandbox (default: fail before building)'))
		.addOption(new Option('--push', 'push the image to the registry of each --tag (credentials from the docker config)'))
		.addOption(new Option('--load', 'import the result into the driver\'s image store under each -t name (apple-container: container image load)'))
		.addOption(new Option('--cpus <N>', 'CPUs of the sandbox VM (apple-container; default: all, up to 8)'))
		.addOption(new Option('--memory <SIZE>', 'memory of the sandbox VM, e.g. 8G (apple-container; default: half the host\'s, 2G to 8G)'))
		.addOption(new Option('--virtualization', 'nested virtualization in the VM (apple-container; M3 or later, macOS 15+, a KVM kernel; QEMU user emulation does not need it)'))
		.addOption(new Option('--rosetta', 'Rosetta for linux/amd64 in the VM (apple-container on Apple silicon)'))
		.action(async (context: string | undefined, raw: RawBuildOptions, command: Command) => {
			const debug = (command.optsWithGlobals() as {debug?: boolean}).debug === true;
			const warnings: string[] = [];
			const request = toBuildRequest(context, raw, {cwd: process.cwd(), env: process.env, warn: message => warnings.push(message)});
			const reporter = await createReporter(request.progress, process.stderr, {debug});
			for (const message of warnings) {
				reporter.report({kind: 'warning', message});
			}

			const stop = watchStopSignals('build');
			let ok = false;
			try {
				const driver = createDriver(request.driver, request.driverOptions);
				const result = await runBuild(request, {driver, builders: cacheBuilderStore, reporter, signal: stop.signal, debug});
				if (stop.signal.aborted) {
					throw stop.signal.reason; // a signal during the last step: no result files, and the signal's exit code
				}

				ok = true;
				await reporter.finish({ok});
				await writeResultFiles(request, result);
				// The digest line, unless stdout already carries the archive or a result file.
				if (![request.output?.dest, request.iidFile, request.metadataFile].some(dest => dest !== undefined && writesToStdout(dest))) {
					process.stdout.write(`${result.digest}\n`);
				}
			} catch (error) {
				await reporter.finish({ok});
				const caught = stop.caught();
				if (caught !== undefined) {
					await runExitCleanups();
					throw interruptedBy(caught, 'build', error);
				}

				throw error;
			} finally {
				stop.end();
			}
		});
};

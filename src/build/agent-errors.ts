import type {ErrorCode} from '../agent-events/contract.js';

const hints: Record<ErrorCode, string> = {
	E_ENGINE_UNSUPPORTED: 'choose another engine with --engine (BuildKit where the builder image has it), or drop the option',
	E_HANG: 'under QEMU this is usually an emulator bug (e.g. Go >= 1.23 programs, QEMU issue 2738); try another QEMU (builder image) or, if the step only waits, raise --hang-timeout',
	E_AGENT_USAGE: 'exobuild and its builder image disagree about the agent\'s arguments; run `exobuild builder build --force`',
	E_BINFMT_MOUNT: 'the sandbox could not mount its own binfmt_misc: on Linux this needs kernel 6.7 or later; in Apple\'s container >= 1.2.0 /proc/sys is read-only (with 1.2.1 or later, EXOBUILD_APPLE_WRITABLE_PROC_SYS=1 lifts it; see docs/macos.md)',
	E_EMULATOR_MISSING: 'the builder image lacks that emulator; run `exobuild builder build --force`',
	E_BINFMT_REGISTER: 'the emulator could not be registered in the sandbox; run with --progress plain for details',
	E_HANDLER_PROOF: 'the emulator was registered but a test binary did not run under it; the emulator may be broken for this architecture',
	E_ENGINE_MISSING: 'the builder image does not have that engine; choose another with --engine',
	E_ENGINE_START: 'the build engine did not start; run with --progress plain to see its output',
	E_PLATFORM_UNSUPPORTED: 'the engine cannot run that platform even with emulation; check the platform list with --progress plain',
	E_BASE_IMAGE: 'a --build-context image could not be loaded; check that the layout serves every requested platform',
	E_BUILD_FAILED: 'the Dockerfile build failed: the failing step and its output are shown above (use --progress plain for all of it)',
	E_EXPORT_FAILED: 'the built image could not be exported; check free disk space',
	E_INTERRUPTED: 'the build was interrupted',
	E_INTERNAL: 'this is a bug in exobuild\'s agent; run with --progress plain and report the output',
};

export const hintFor = (code: ErrorCode): string => hints[code];

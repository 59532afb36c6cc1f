/**
 * mergeLayouts on what real BuildKit exports: the real buildkitd and buildctl of ../shared/upstream
 * (skipped, with the reason, where absent) in a private user namespace build one platform each
 * (one with a provenance attestation, as a node asked for it would), the two OCI layouts are merged
 * and delivered through writeOutput, and the archive reads back with each platform's own file.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {after, test} from 'node:test';
import {blobPath, inspectArchive, mergeLayouts, producedLayout, readIndexJson, type ImageIndex} from '../../src/oci/index.js';
import {writeOutput} from '../../src/outputs/index.js';
import {readExportedImage} from '../../src/pipeline/deliver-outputs.js';
import {runInNamespaces} from '../../src/sandboxes/linux-userns/namespaces.js';
import {repoRoot} from '../e2e/helpers.js';
import {extractUpstream, upstreamSkip} from '../fixtures/upstream.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'exobuild-merge-bk-'));
after(() => fs.rmSync(work, {recursive: true, force: true}));

/** One buildkitd; one buildctl build per platform, each to its own OCI layout folder; the daemon stopped before the script ends. */
const script = `set -eu
mount -t proc proc /proc
state=$1 context=$2 first=$3 second=$4
addr="unix://$state/buildkitd.sock"
buildkitd --addr "$addr" --root "$state/root" --oci-worker=true --containerd-worker=false --rootless >"$state/daemon.log" 2>&1 &
daemon=$!
tries=0
until buildctl --addr "$addr" debug workers >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -gt 300 ]; then echo 'buildkitd did not answer' >&2; tail -n 20 "$state/daemon.log" >&2; exit 1; fi
  sleep 0.2
done
build() {
  buildctl --addr "$addr" build --frontend dockerfile.v0 --local "context=$context" --local "dockerfile=$context" --progress plain "$@"
}
build --opt platform=linux/ppc64le --opt attest:provenance=mode=min --output "type=oci,tar=false,dest=$first"
build --opt platform=linux/s390x --output "type=oci,tar=false,dest=$second"
kill "$daemon"
wait "$daemon" || true
`;

test('real BuildKit: two one-platform exports (one with an attestation) merge into one index that the outputs deliver per platform', {skip: upstreamSkip('buildkit'), timeout: 300_000}, async () => {
	const binDir = await extractUpstream('buildkit', path.join(work, 'buildkit'));
	const context = path.join(work, 'context');
	fs.mkdirSync(context);
	// No RUN: nothing to emulate; each platform gets its own file through a stage named by its platform.
	fs.writeFileSync(path.join(context, 'Dockerfile'), [
		'FROM scratch AS base-linux-ppc64le', 'COPY ppc64le.txt /arch.txt',
		'FROM scratch AS base-linux-s390x', 'COPY s390x.txt /arch.txt',
		'ARG TARGETOS', 'ARG TARGETARCH', 'FROM base-${TARGETOS}-${TARGETARCH}', '',
	].join('\n'));
	fs.writeFileSync(path.join(context, 'ppc64le.txt'), 'built for ppc64le\n');
	fs.writeFileSync(path.join(context, 's390x.txt'), 'built for s390x\n');
	const state = path.join(work, 'state');
	const [ppcLayout, s390xLayout] = [path.join(work, 'ppc64le-layout'), path.join(work, 's390x-layout')];
	fs.mkdirSync(state);
	const stderr: string[] = [];
	const exit = await runInNamespaces([
		'/bin/sh', '-c', `PATH='${binDir}:${path.join(repoRoot, 'test', 'fixtures', 'failing-runc')}':/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n${script}`,
		'sh', state, context, ppcLayout, s390xLayout,
	], {onStderrLine: line => stderr.push(line)});
	assert.equal(exit.exitCode, 0, stderr.slice(-30).join('\n'));

	// What BuildKit wrote: the ppc64le export is an index of the image and its attestation.
	const ppcIndex = JSON.parse(fs.readFileSync(blobPath(ppcLayout, (await readIndexJson(ppcLayout)).manifests[0]!.digest), 'utf8')) as ImageIndex;
	const ppcImage = ppcIndex.manifests.find(descriptor => descriptor.platform?.architecture === 'ppc64le')!;
	const ppcAttestation = ppcIndex.manifests.find(descriptor => descriptor.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest');
	assert.ok(ppcAttestation !== undefined, 'BuildKit wrote a provenance attestation');

	const dest = path.join(work, 'out', 'oci-layout');
	fs.mkdirSync(path.dirname(dest));
	const merged = await mergeLayouts([producedLayout(s390xLayout, 'node z15'), producedLayout(ppcLayout, 'local sandbox')], dest, {
		platforms: ['linux/s390x', 'linux/ppc64le'], annotations: [['index:org.opencontainers.image.title', 'merged']],
	});
	const index = JSON.parse(fs.readFileSync(blobPath(dest, merged.top.digest), 'utf8')) as ImageIndex;
	assert.deepEqual(index.annotations, {'org.opencontainers.image.title': 'merged'});
	assert.deepEqual(index.manifests.map(descriptor => descriptor.platform?.architecture), ['s390x', 'ppc64le', 'unknown']);
	assert.equal(index.manifests[1]!.digest, ppcImage.digest);
	assert.equal(index.manifests[2]!.digest, ppcAttestation.digest);
	assert.equal(index.manifests[2]!.annotations?.['vnd.docker.reference.digest'], ppcImage.digest);

	const exported = await readExportedImage(path.dirname(dest));
	const archive = path.join(work, 'out', 'image.tar');
	await writeOutput(exported.layout, {type: 'oci', dest: archive}, {tags: ['example/merged:1'], platforms: ['linux/s390x', 'linux/ppc64le']});
	const inspected = await inspectArchive(archive);
	assert.equal(inspected.topDigest, merged.top.digest);
	assert.deepEqual(inspected.images.map(image => image.platform), ['linux/s390x', 'linux/ppc64le']);
	for (const image of inspected.images) {
		assert.equal((await image.readFile('/arch.txt'))?.toString(), `built for ${image.platform.split('/')[1]!}\n`);
	}
});

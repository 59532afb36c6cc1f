/** Build steps read from buildah's and BuildKit's output: names, cached marks, times. */
import assert from 'node:assert/strict';
import {test} from 'node:test';
import {StepTracker} from '../../src/progress/steps.js';

test('buildah: steps per platform, stage numbers in multi-stage builds, "Using cache" marks a cached step', () => {
	let now = 0;
	const tracker = new StepTracker({engine: 'buildah', now: () => now});
	const feed = (platform: string, line: string): string[] => tracker.onLine(platform, line).map(({step, state}) => `${state} ${step.name}`);
	assert.deepEqual(feed('linux/ppc64le', '[1/2] STEP 1/3: FROM busybox AS work'), ['start [linux/ppc64le stage 1 1/3] FROM busybox AS work']);
	now = 100;
	assert.deepEqual(feed('linux/ppc64le', '[1/2] STEP 2/3: RUN uname -m > /m'), ['done [linux/ppc64le stage 1 1/3] FROM busybox AS work', 'start [linux/ppc64le stage 1 2/3] RUN uname -m > /m']);
	assert.deepEqual(feed('linux/ppc64le', '--> Using cache 4c1f0e'), ['cached [linux/ppc64le stage 1 2/3] RUN uname -m > /m']);
	assert.deepEqual(feed('linux/ppc64le', 'hello from the step'), []);
	now = 350;
	assert.deepEqual(feed('linux/ppc64le', 'COMMIT exobuild-out-linux-ppc64le'), ['done [linux/ppc64le stage 1 2/3] RUN uname -m > /m']);
	assert.deepEqual(feed('linux/s390x', 'STEP 1/2: FROM busybox'), ['start [linux/s390x 1/2] FROM busybox']);
	assert.deepEqual(tracker.end().map(({step}) => step.name), ['[linux/s390x 1/2] FROM busybox']);
	assert.deepEqual(tracker.steps.map(step => [step.cached, step.ms]), [[false, 100], [true, 250], [false, 0]]);
});

test('BuildKit plain progress: vertices by number, CACHED and DONE', () => {
	const tracker = new StepTracker({engine: 'buildkit', now: () => 0});
	const states = (line: string): string[] => tracker.onLine(undefined, line).map(({step, state}) => `${state} ${step.name} ${step.platform ?? '-'}`);
	assert.deepEqual(states('#5 [linux/ppc64le 2/4] RUN make'), ['start [linux/ppc64le 2/4] RUN make linux/ppc64le']);
	assert.deepEqual(states('#5 0.312 compiling'), []);
	assert.deepEqual(states('#5 DONE 1.5s'), ['done [linux/ppc64le 2/4] RUN make linux/ppc64le']);
	assert.deepEqual(states('#6 [linux/s390x 2/4] RUN make'), ['start [linux/s390x 2/4] RUN make linux/s390x']);
	assert.deepEqual(states('#6 CACHED'), ['cached [linux/s390x 2/4] RUN make linux/s390x', 'done [linux/s390x 2/4] RUN make linux/s390x']);
	assert.deepEqual(states('#6 [linux/s390x 2/4] RUN make'), [], 'a vertex re-sent is the same step');
	assert.deepEqual(tracker.steps.map(step => [step.cached, step.ms]), [[false, 1500], [true, 0]]);
});

test('each engine reads only its own grammar; with no engine given, both are read', () => {
	const buildkit = new StepTracker({engine: 'buildkit', now: () => 0});
	assert.deepEqual(buildkit.onLine('linux/s390x', 'STEP 1/2: FROM busybox'), [], 'BuildKit does not take a buildah line for a step');
	const buildah = new StepTracker({engine: 'buildah', now: () => 0});
	assert.deepEqual(buildah.onLine(undefined, '#5 [linux/ppc64le 2/4] RUN make'), [], 'buildah does not take a BuildKit vertex for a step');
	const either = new StepTracker({now: () => 0});
	assert.deepEqual(either.onLine('linux/s390x', 'STEP 1/2: FROM busybox').map(({state}) => state), ['start']);
	assert.deepEqual(either.onLine(undefined, '#5 [linux/ppc64le 2/4] RUN make').map(({state}) => state), ['start']);
	assert.deepEqual(either.end().map(({step}) => step.name), ['[linux/s390x 1/2] FROM busybox'], 'end closes the open buildah step; BuildKit ends its own');
	assert.equal(either.steps.length, 2);
});

test('lines that only mark a step are known, so that a reporter prints each step once', () => {
	const buildkit = new StepTracker({engine: 'buildkit'});
	for (const line of ['#5 [linux/ppc64le 2/4] RUN make', '#5 CACHED', '#5 DONE 1.5s']) {
		assert.equal(buildkit.marksStep(line), true, line);
	}

	for (const line of ['#5 0.312 compiling', '#5 ERROR: process "/bin/sh -c make" did not complete successfully', 'STEP 1/2: FROM busybox']) {
		assert.equal(buildkit.marksStep(line), false, line);
	}

	const buildah = new StepTracker({engine: 'buildah'});
	assert.equal(buildah.marksStep('[1/2] STEP 2/3: RUN uname -m > /m'), true);
	assert.equal(buildah.marksStep('--> Using cache 4c1f0e'), true);
	assert.equal(buildah.marksStep('COMMIT exobuild-out-linux-ppc64le'), false);
	assert.equal(buildah.marksStep('#5 CACHED'), false);
});

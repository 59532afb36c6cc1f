#!/bin/sh
# The test command: installs what is needed, then runs the fast tests (`npm test`) and the
# end-to-end tests that build real images under emulation (`npm run test:e2e`).
set -eu
cd "$(dirname "$0")/.."
sh .ci/install-deps.sh
npm test
npm run test:security
npm run test:e2e

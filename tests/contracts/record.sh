#!/bin/sh
# Regenerates the recorded engine/runtime contracts, podman-4.3-runc.log and
# containerd-1.6-runc.log, by running the engine command sequences of
# tests/tests/contract.rs with runtime-recorder in front of runc (needs root, podman,
# conmon, containerd, ctr, runc: tools/setup installs them). Review the diff: a changed
# contract means the engines or runc changed how the runtime is called.
set -eu
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
WARD_CONTRACT_RECORD=1 cargo test -p ward-e2e --test contract -- \
    --ignored --exact record_runc_contracts --nocapture
echo "record.sh: wrote tests/contracts/podman-4.3-runc.log and tests/contracts/containerd-1.6-runc.log"

#!/usr/bin/env bash
# Runs every farmem-bench experiment once, writing JSON (and PNG charts) under results/.
# Kernel-swap modes need root (they create a zram device and a memory cgroup, and remove both).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p farmem-bench
B="${CARGO_TARGET_DIR:-target}/release/farmem-bench"
mkdir -p results/transport results/deref results/containers results/paging
$B transport --matrix --seconds 2 --json results/transport/transport.json
$B deref --json results/deref/deref.json
$B containers --json results/containers/containers.json
$B paging --json results/paging/paging.json
$B taxi --rows 4000000 --local-mem 10%,25%,50%,100% --out results/taxi
$B web --requests 100000 --local-mem 25%,50% --out results/web
$B demo --out results/demo

#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root) and runs the collector or its test suite.
#   bash scripts/dev.sh run    build, then watch this node's kubelet (or run the demo sandbox without one)
#   bash scripts/dev.sh test   build, lint, and run every test (BPF tests need root)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
APT_PACKAGES=(clang-19 llvm-19 clang-format libelf-dev zlib1g-dev pkg-config make)
# Real peers of the telemetry tests: Prometheus, and Python for the OTLP receiver.
TEST_APT_PACKAGES=(prometheus python3 python3-venv)
# The OTLP receiver (tests/otlp_receiver.py) runs on the official protobuf definitions;
# rotel (a Rust OTLP collector) is the fast black-hole receiver of benches/resources.rs.
TEST_PIP_PACKAGES=(opentelemetry-proto==1.45.2 grpcio==1.85.1 protobuf==7.36.2 rotel==0.0.1a15)

apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	fi
}

setup() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "dev.sh: run as root (BPF programs, mounts and cgroups need it)" >&2
		exit 1
	fi
	apt_install "${APT_PACKAGES[@]}"
	if ! command -v cargo >/dev/null; then
		echo "dev.sh: cargo not found; install a Rust toolchain (1.89 or newer) first" >&2
		exit 1
	fi
	# The programs attach to tracepoints (tracefs); bpffs is mounted for tools such as bpftool.
	mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
	mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	if [ ! -r /sys/kernel/btf/vmlinux ]; then
		echo "dev.sh: this kernel has no BTF (/sys/kernel/btf/vmlinux); CO-RE programs cannot load" >&2
		exit 1
	fi
}

case "$mode" in
run)
	setup
	cargo build --release --locked
	bin=target/release/config-access-collector
	root=${CAC_KUBELET_ROOT:-/var/lib/kubelet}
	if [ -d "$root/pods" ]; then
		exec "$bin" run --config config/config.yaml --kubelet-root "$root"
	else
		echo "dev.sh: no kubelet at $root: running the built-in demo sandbox" >&2
		exec "$bin" demo
	fi
	;;
test)
	setup
	apt_install "${TEST_APT_PACKAGES[@]}"
	venv=target/pyvenv
	if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import grpc, opentelemetry.proto' 2>/dev/null; then
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q "${TEST_PIP_PACKAGES[@]}"
	fi
	export CAC_TEST_PYTHON=$PWD/$venv/bin/python
	export CI=${CI:-true}
	cargo fmt --all -- --check
	clang-format --dry-run --Werror bpf/*.c bpf/*.h
	cargo clippy --locked --all-targets -- -D warnings
	cargo build --release --locked
	log=$(mktemp)
	cargo test --locked -- --test-threads=2 2>&1 | tee "$log"
	awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s; exit (f > 0) }' "$log"
	if grep -q '^SKIPPED' "$log"; then
		grep '^SKIPPED' "$log"
	fi
	rm -f "$log"
	;;
*)
	echo "usage: $0 run|test" >&2
	exit 2
	;;
esac

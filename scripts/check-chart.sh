#!/usr/bin/env bash
# Offline checks of the Helm chart, the Dockerfile and the shell scripts
# (run by `bash scripts/dev.sh test`, which installs the tools first):
#   * yamllint on the chart's own YAML;
#   * in every value set (the defaults and charts/config-access-collector/ci/*.yaml):
#     helm lint --strict, helm template for each Kubernetes version below,
#     yamllint of the rendered manifests, and kubernetes-validate --strict of
#     every manifest against that version (the ServiceMonitor and the
#     PrometheusRule, prometheus-operator CRDs, are the only kinds allowed to
#     go unvalidated; tests/alerts.rs checks the rules with promtool);
#   * every charts/bad-values/*.yaml is rejected by helm lint and by helm
#     template, with the message its `# expect:` line names;
#   * the validator itself rejects a manifest with an unknown field;
#   * hadolint on the Dockerfile, shellcheck on scripts/*.sh and .ci/run.
# Tools: CAC_HELM (default target/tools/helm/helm) and CAC_TOOLS_BIN, the
# directory holding kubernetes-validate, yamllint, hadolint and shellcheck
# (default target/pyvenv/bin).
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/config-access-collector
# Kubernetes versions the manifests are validated against: the oldest and
# newest schemas kubernetes-validate bundles that the chart supports, and one
# between (securityContext.appArmorProfile exists from 1.30 on).
KUBE_VERSIONS=(1.29.0 1.33.0 1.37.0)
helm=${CAC_HELM:-target/tools/helm/helm}
bin=${CAC_TOOLS_BIN:-target/pyvenv/bin}

failures=0
fail() {
	echo "check-chart: FAIL: $*" >&2
	failures=$((failures + 1))
}
step() { echo "check-chart: $*"; }

for tool in "$helm" "$bin/kubernetes-validate" "$bin/yamllint" "$bin/hadolint" "$bin/shellcheck"; do
	if [ ! -x "$tool" ]; then
		echo "check-chart: $tool is missing; run bash scripts/dev.sh test (it installs the tools)" >&2
		exit 1
	fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME=$work/helm/cache HELM_CONFIG_HOME=$work/helm/config HELM_DATA_HOME=$work/helm/data
step "$("$helm" version --template 'helm {{.Version}}'), kubernetes-validate $("$bin/kubernetes-validate" --version), $("$bin/yamllint" --version), $("$bin/hadolint" --version), shellcheck $("$bin/shellcheck" --version | sed -n 's/^version: //p')"

# The chart's own YAML: strict. Rendered manifests: layout is helm's business
# (toYaml does not indent nested sequences), so only syntax, keys and values.
chart_yamllint='{extends: default, rules: {line-length: {max: 120}, document-start: disable}}'
rendered_yamllint='{extends: default, rules: {line-length: disable, document-start: disable, indentation: {indent-sequences: whatever}, comments: {min-spaces-from-content: 1}, comments-indentation: disable, truthy: {check-keys: false}}}'

step "yamllint: $chart/Chart.yaml, values.yaml, ci/*.yaml"
"$bin/yamllint" --strict -d "$chart_yamllint" "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml ||
	fail "yamllint of the chart's YAML"

value_sets=(default "$chart"/ci/*.yaml)
for set in "${value_sets[@]}"; do
	args=()
	name=default
	if [ "$set" != default ]; then
		args=(-f "$set")
		name=$(basename "$set" .yaml)
	fi
	step "helm lint --strict ($name)"
	"$helm" lint --strict "$chart" "${args[@]}" >"$work/lint.log" 2>&1 || {
		cat "$work/lint.log" >&2
		fail "helm lint --strict with $name"
	}
	for kv in "${KUBE_VERSIONS[@]}"; do
		out=$work/$name-$kv.yaml
		if ! "$helm" template cac "$chart" --namespace cac-system --kube-version "$kv" "${args[@]}" >"$out" 2>"$work/template.log"; then
			cat "$work/template.log" >&2
			fail "helm template with $name for Kubernetes $kv"
			continue
		fi
		"$bin/yamllint" --strict -d "$rendered_yamllint" "$out" || fail "yamllint of the manifests rendered with $name for $kv"
		if ! "$bin/kubernetes-validate" --strict --quiet -k "$kv" "$out" >"$work/validate.log" 2>&1; then
			cat "$work/validate.log" >&2
			fail "kubernetes-validate --strict -k $kv with $name"
		fi
		# A kind without a bundled schema is only a warning: allow the CRDs, nothing else.
		if grep -Ev "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1 " "$work/validate.log" | grep -q .; then
			cat "$work/validate.log" >&2
			fail "kubernetes-validate -k $kv with $name: unexpected output (a kind left unvalidated?)"
		fi
		kinds=$(sed -n 's/^kind: //p' "$out" | sort | tr '\n' ' ')
		step "  $name, Kubernetes $kv: valid ($kinds)"
	done
done

step "bad values are rejected"
for bad in charts/bad-values/*.yaml; do
	expect=$(sed -n 's/^# expect: //p' "$bad" | head -n 1)
	if [ -z "$expect" ]; then
		fail "$bad has no '# expect: <regex>' line"
		continue
	fi
	rejected=yes
	for cmd in lint template; do
		if [ "$cmd" = lint ]; then
			"$helm" lint --strict "$chart" -f "$bad" >"$work/bad.log" 2>&1 && rc=0 || rc=$?
		else
			"$helm" template cac "$chart" -f "$bad" >"$work/bad.log" 2>&1 && rc=0 || rc=$?
		fi
		if [ "$rc" -eq 0 ]; then
			rejected=no
			fail "helm $cmd accepted $bad"
		elif ! grep -Eq -- "$expect" "$work/bad.log"; then
			rejected=no
			cat "$work/bad.log" >&2
			fail "helm $cmd rejected $bad without the expected message /$expect/"
		fi
	done
	if [ "$rejected" = yes ]; then
		step "  $(basename "$bad"): rejected by lint and template (/$expect/)"
	fi
done

step "the validator rejects an unknown field"
sed 's/^\( *\)hostPID: true$/\1hostPID: true\n\1hostPIDs: true/' "$work/default-${KUBE_VERSIONS[0]}.yaml" >"$work/unknown-field.yaml"
grep -q 'hostPIDs: true' "$work/unknown-field.yaml" || fail "could not inject an unknown field into the DaemonSet"
if "$bin/kubernetes-validate" --strict --quiet -k "${KUBE_VERSIONS[0]}" "$work/unknown-field.yaml" >"$work/validate.log" 2>&1 ||
	! grep -q "'hostPIDs' was unexpected" "$work/validate.log"; then
	cat "$work/validate.log" >&2
	fail "kubernetes-validate --strict accepted a DaemonSet with an unknown field"
fi

step "hadolint Dockerfile"
"$bin/hadolint" --no-color --config .hadolint.yaml Dockerfile || fail "hadolint Dockerfile"

step "shellcheck scripts/*.sh .ci/run"
"$bin/shellcheck" scripts/*.sh .ci/run || fail "shellcheck"

if [ "$failures" -gt 0 ]; then
	echo "check-chart: $failures check(s) failed" >&2
	exit 1
fi
step "all checks passed"

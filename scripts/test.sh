#!/usr/bin/env bash
# Runs the whole test suite. When this machine has no Vulkan driver, installs
# Mesa's software drivers from Debian's packages first (lavapipe for Vulkan,
# llvmpipe over EGL for OpenGL ES), so that the GPU tests run on a real
# adapter; REQUIRE_GPU=1 then turns a missing adapter into a test failure.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgles2)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "scripts/test.sh: installing ${missing[*]} for the GPU tests" >&2
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null; then
        sudo=(sudo)
    else
        echo "scripts/test.sh: run as root, or install ${missing[*]} by hand" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

export REQUIRE_GPU=1
# Mesa's EGL complains on every adapter enumeration when this is unset.
if [[ -z ${XDG_RUNTIME_DIR:-} ]]; then
    export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/byzagg-runtime-$(id -u)"
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi
export RUST_BACKTRACE=1
cargo fmt --check
cargo test --locked --no-fail-fast -- --test-threads 2

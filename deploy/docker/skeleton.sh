#!/usr/bin/env bash
# Writes a copy of the Cargo workspace that holds only what decides its dependencies: the root
# Cargo.toml, Cargo.lock, .cargo/config.toml and every member's Cargo.toml, with an empty stub
# for each target source file. deploy/Dockerfile builds that skeleton first, so the layer with
# the compiled dependencies is reused for as long as no manifest and no lockfile changes
# (the same idea as cargo-chef, without installing it). deploy/check-packaging.sh checks that
# the skeleton still loads with `cargo metadata --locked`.
#
# Usage: deploy/docker/skeleton.sh OUT_DIR   (run from the workspace root)
set -euo pipefail
out=${1:?usage: skeleton.sh OUT_DIR}
mkdir -p "$out"

cp Cargo.toml Cargo.lock "$out/"
if [ -d .cargo ]; then
  mkdir -p "$out/.cargo"
  find .cargo -maxdepth 1 -type f -name 'config*' -exec cp {} "$out/.cargo/" \;
fi

stub() { # stub FILE: an empty library root, or a `main` for anything else
  mkdir -p "$(dirname "$1")"
  case "$1" in
    */lib.rs) : >"$1" ;;
    *) echo 'fn main() {}' >"$1" ;;
  esac
}

# Every package manifest below the root (not in target/ or hidden directories).
find . -mindepth 2 -name Cargo.toml -not -path '*/target/*' -not -path './.*' | sort |
  while read -r manifest; do
    dir=$(dirname "$manifest")
    mkdir -p "$out/$dir"
    cp "$manifest" "$out/$dir/"
    # Targets found by Cargo's conventions...
    for f in src/lib.rs src/main.rs build.rs; do
      [ -f "$dir/$f" ] && stub "$out/$dir/$f"
    done
    if [ -d "$dir/src/bin" ]; then
      find "$dir/src/bin" -name '*.rs' | while read -r f; do stub "$out/$f"; done
    fi
    # ...and those named by a `path = "…rs"` in the manifest ([lib], [[bin]], [[test]], …).
    sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' "$manifest" |
      while read -r f; do stub "$out/$dir/$f"; done
    # A build script named in [package] (`build = "…"`).
    sed -n 's/^[[:space:]]*build[[:space:]]*=[[:space:]]*"\([^"]*\.rs\)".*/\1/p' "$manifest" |
      while read -r f; do stub "$out/$dir/$f"; done
  done

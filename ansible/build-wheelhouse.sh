#!/bin/sh
# Build the wheelhouse the box installs from: the skillspot wheel plus every dependency as a
# wheel for the box's Python (Debian 12: CPython 3.11, x86_64), whatever Python the
# controller has. The box then runs pip with --no-index: it never reaches PyPI.
#
#   ansible/build-wheelhouse.sh [OUT_TAR]      (default: dist/wheelhouse.tar)
#
# One tarball, so the playbook copies one file (not fifty) to each box. Reproducible: the
# wheel's timestamps come from the last commit and the tarball is sorted with fixed owners and
# times, and OUT_TAR is replaced only when its bytes differ, so a rerun on the same code
# changes nothing (and the playbook reports changed=0).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/dist/wheelhouse.tar}
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 315532800)
export SOURCE_DATE_EPOCH
# Build from a clean copy of the tracked files: a stale build/ in the work tree never leaks in.
mkdir "$tmp/src" "$tmp/wheels"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$tmp/src"
"$py" -m pip wheel -q --no-deps --wheel-dir "$tmp/wheels" "$tmp/src" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; exit 1; }
"$py" -m pip download -q --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_36_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --dest "$tmp/wheels" "$tmp"/wheels/skillspot-*.whl >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner --mode=0644 \
    -C "$tmp/wheels" -cf "$tmp/wheelhouse.tar" .
if cmp -s "$tmp/wheelhouse.tar" "$out"; then
    echo "wheelhouse unchanged: $out"
else
    cp "$tmp/wheelhouse.tar" "$out.new" && mv "$out.new" "$out"
    echo "wheelhouse changed: $out"
fi
echo "$(ls "$tmp/wheels" | wc -l) wheels, $(du -h "$out" | cut -f1)"

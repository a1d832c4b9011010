#!/bin/sh
# Build the wheelhouse the box installs from: the skillspot wheel plus every dependency as a
# wheel for the box's Python (Debian 12: CPython 3.11, x86_64), whatever Python the
# controller has. The box then runs pip with --no-index: it never reaches PyPI.
#
#   ansible/build-wheelhouse.sh [OUT_DIR]      (default: dist/wheelhouse)
#
# Reproducible: the wheel's timestamps come from the last commit, and OUT_DIR is only
# touched where a file really differs, so a rerun on the same code changes nothing (and the
# playbook's copy task reports changed=0). Prints "wheelhouse changed" when it did change.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/dist/wheelhouse}
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
mkdir -p "$out"
changed=0
for f in "$tmp"/wheels/*.whl; do
    name=$(basename "$f")
    if ! cmp -s "$f" "$out/$name"; then cp "$f" "$out/$name"; changed=1; fi
done
for f in "$out"/*.whl; do
    [ -e "$tmp/wheels/$(basename "$f")" ] || { rm -f "$f"; changed=1; }
done
[ "$changed" = 1 ] && echo "wheelhouse changed: $out" || echo "wheelhouse unchanged: $out"
echo "$(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1)"

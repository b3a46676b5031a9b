#!/usr/bin/env bash
# The version matrix of the light runtime (docs/runtime.md, "Library versions").
#
# Kaggle and Colab images lag the newest releases and cannot be upgraded offline, so
# the runtime promises to work on the versions pyproject declares. Each row is a file
# .ci/compat/ROW.txt: its first line names the Python (`# python: 3.10`), the rest
# pins huggingface_hub, transformers, timm, torch and torchvision. For every row this
# makes a fresh venv with that Python, installs the runtime alone (`pip install -e .`,
# no extras) with the pins, and runs tests/compat: tiny models saved by those very
# versions, loaded from a read-only bundle by unmodified code, as an unprivileged
# user, under strict mode, in both import orders; and `bundle doctor`.
# The newest versions are the main test run's own venv (.ci/run).
#
#   bash .ci/compat.sh                 # every row
#   bash .ci/compat.sh minimum         # one row
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local ver="$1" root="${PYENV_ROOT:-$HOME/.pyenv}" candidate
  for candidate in "python$ver" "$root"/versions/"$ver".*/bin/"python$ver" \
                   "/usr/local/bin/python$ver" "/usr/bin/python$ver"; do
    if [ -x "$(command -v "$candidate" 2>/dev/null || true)" ] && "$candidate" -c 'import venv' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

rows=("$@")
if [ "${#rows[@]}" -eq 0 ]; then
  for f in .ci/compat/*.txt; do rows+=("$(basename "$f" .txt)"); done
fi

work="$(mktemp -d /tmp/ob-compat.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failed=()
for row in "${rows[@]}"; do
  pins=".ci/compat/$row.txt"
  ver="$(sed -n 's/^# python: *//p' "$pins" | head -n 1)"
  start=$SECONDS
  echo "== compat row $row (Python $ver): $(grep -v '^#' "$pins" | tr '\n' ' ')"
  if ! python="$(find_python "$ver")"; then
    echo "compat row $row: no Python $ver on this machine" >&2
    failed+=("$row")
    continue
  fi
  "$python" -m venv "$work/$row"
  "$work/$row/bin/python" -m pip install -q -e . -r "$pins" pytest pytest-timeout
  set +e
  "$work/$row/bin/python" -m pytest -p no:cacheprovider -q tests/compat
  rc=$?
  set -e
  echo "== compat row $row: exit $rc in $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || failed+=("$row")
  rm -rf "${work:?}/$row"
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "compat rows failed: ${failed[*]}" >&2
  exit 1
fi

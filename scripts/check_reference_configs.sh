#!/usr/bin/env bash
# Validates the reference Python framework's configs (RAD lab's collocation-benchmark) with
# `colobench validate` and prints a Markdown table (file, loads/rejected, message) and the
# counts. See docs/porting.md.
#   DIR: a checkout (or export) of the reference: its pipeline_configs/ and evaluation/**/configs/
#        YAML files are checked; a DIR with neither has every YAML under it checked.
#   COLOBENCH: the binary (default: build/colobench next to this script).
# Usage: scripts/check_reference_configs.sh DIR
# Exit status: 0 when every file was checked (loaded or rejected), 2 on a usage error.
set -euo pipefail
if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 DIR (a checkout of the reference framework)" >&2
    exit 2
fi
dir=${1%/}
bin=${COLOBENCH:-$(cd "$(dirname "$0")/.." && pwd)/build/colobench}
if [ ! -x "$bin" ]; then
    echo "$0: no colobench binary at $bin (build it, or set COLOBENCH)" >&2
    exit 2
fi

files=$(cd "$dir" && {
    [ -d pipeline_configs ] && find pipeline_configs -type f \( -name '*.yml' -o -name '*.yaml' \)
    [ -d evaluation ] && find evaluation -type f -path '*/configs/*' \( -name '*.yml' -o -name '*.yaml' \)
    true
} | LC_ALL=C sort)
[ -n "$files" ] || files=$(cd "$dir" && find . -type f \( -name '*.yml' -o -name '*.yaml' \) |
                           sed 's|^\./||' | LC_ALL=C sort)

loads=0
rejected=0
echo "| file | result | message |"
echo "|---|---|---|"
while IFS= read -r f; do
    [ -n "$f" ] || continue
    # Validate from inside DIR so messages name the file as the table does.
    if out=$(cd "$dir" && "$bin" validate "$f" 2>&1 >/dev/null); then
        result=loads
        loads=$((loads + 1))
    else
        result=rejected
        rejected=$((rejected + 1))
    fi
    # First line of what colobench said (notes for a config that loads), without the prefixes.
    msg=$(printf '%s\n' "$out" | head -n 1 | sed -e 's/^colobench: //' -e "s|^$f:||" \
          -e 's/^ //' -e 's/|/\\|/g')
    echo "| $f | $result | $msg |"
done <<< "$files"
echo
echo "$((loads + rejected)) files: $loads load, $rejected rejected"

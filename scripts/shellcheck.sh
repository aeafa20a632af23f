#!/usr/bin/env bash
# `make lint`'s shell half: shellcheck over every shell script git knows
# (tracked, or new and not ignored), found by name (*.sh) or by a sh/bash
# shebang, so a script added later without a .sh name is checked too.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts=()
while IFS= read -r -d '' f; do
  # ls-files -c still lists a tracked file deleted in the working tree.
  [ -f "$f" ] || continue
  case "$f" in
    *.sh) scripts+=("$f") ;;
    *)
      first=$(head -n 1 -- "$f" 2>/dev/null | tr -d '\0') || true
      if [[ $first =~ ^'#!'.*[/[:space:]](ba)?sh([[:space:]]|$) ]]; then
        scripts+=("$f")
      fi
      ;;
  esac
done < <(git ls-files -z -co --exclude-standard)

if [ ${#scripts[@]} -eq 0 ]; then
  echo "shellcheck: no shell scripts found" >&2
  exit 1
fi
# -x follows the files a script sources (bootstrap/lib.sh), so the
# functions and variables they define are known.
shellcheck -x "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"

#!/usr/bin/env bash
# Lint and type-check the core and the nodes: ruff lint, ruff format check, mypy (settings in pyproject.toml).
# Prints each check's findings, then one count line per check and a summary line:
#   lint: ruff check 220 findings | ruff format 90 files to reformat | mypy 120 errors
# Report-only by default (exit 0 whatever the counts; CI runs it so). ZERASE_LINT_STRICT=1 makes any finding, or a
# missing tool, fail (exit 1). PYTHON picks the interpreter (default: python, i.e. the active venv; the tools come
# with `pip install -e ".[test]"`). LINT_PATHS overrides what is checked (default: zerase_core nodes).
set -uo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"
read -r -a paths <<< "${LINT_PATHS:-zerase_core nodes}"
strict="${ZERASE_LINT_STRICT:-0}"
failed=0
summary=()

run() {   # run NAME COMMAND...: the command's output, indented, and its exit status in $status
  echo "== $1"
  shift
  out="$("$@" 2>&1)"
  status=$?
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/   /'
}

if ! "$py" -m ruff --version > /dev/null 2>&1; then
  summary+=("ruff not installed"); failed=1
else
  run "ruff check ${paths[*]}" "$py" -m ruff check --no-fix --output-format concise "${paths[@]}"
  n=$(printf '%s\n' "$out" | grep -cE '^[^ ]+:[0-9]+:[0-9]+: ')
  [ "$status" -gt 1 ] && { summary+=("ruff check crashed (exit $status)"); failed=1; } \
    || summary+=("ruff check $n findings")
  [ "$n" -gt 0 ] && failed=1

  run "ruff format --check ${paths[*]}" "$py" -m ruff format --check --output-format concise "${paths[@]}"
  n=$(printf '%s\n' "$out" | grep -c ': unformatted: ')
  [ "$status" -gt 1 ] && { summary+=("ruff format crashed (exit $status)"); failed=1; } \
    || summary+=("ruff format $n files to reformat")
  [ "$n" -gt 0 ] && failed=1
fi

if ! "$py" -m mypy --version > /dev/null 2>&1; then
  summary+=("mypy not installed"); failed=1
else
  # mypy reads [tool.mypy] (files = zerase_core, nodes); LINT_PATHS narrows it
  if [ -n "${LINT_PATHS:-}" ]; then
    run "mypy ${paths[*]}" "$py" -m mypy "${paths[@]}"
  else
    run "mypy" "$py" -m mypy
  fi
  n=$(printf '%s\n' "$out" | grep -c ': error: ')
  [ "$status" -gt 1 ] && { summary+=("mypy crashed (exit $status)"); failed=1; } || summary+=("mypy $n errors")
  [ "$n" -gt 0 ] && failed=1
fi

line="lint: ${summary[0]}"
for s in "${summary[@]:1}"; do line="$line | $s"; done
echo "$line"
if [ "$failed" = 1 ]; then
  if [ "$strict" = 1 ]; then
    echo "lint: failing (ZERASE_LINT_STRICT=1)"
    exit 1
  fi
  echo "lint: report-only (set ZERASE_LINT_STRICT=1 to fail on findings)"
fi
exit 0

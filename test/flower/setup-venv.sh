#!/usr/bin/env bash
# Creates the Flower venv for tests and the demo: <repo>/.venv-flwr (or $SEPAL_FLWR_VENV) with
# test/flower/requirements.txt installed. Idempotent: a stamp file holds the sha256 of the
# requirements it was built from; a matching stamp means nothing to do, a different one means
# the venv is rebuilt from scratch. Prints one line on success; errors go to stderr, exit 1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SEPAL_FLWR_VENV:-$repo/.venv-flwr}"
requirements="$here/requirements.txt"
stamp="$venv/.sepal-requirements.sha256"
python="${SEPAL_PYTHON:-python3}"

die() {
  echo "setup-venv: $*" >&2
  exit 1
}

command -v "$python" >/dev/null 2>&1 \
  || die "$python not found: install Python 3.11+ with venv support (Debian: apt-get install python3 python3-venv)"
[ -f "$requirements" ] || die "missing $requirements"

# One interpreter start: version check, venv support, and the requirements' sha256.
check='
import hashlib, importlib.util, sys
if sys.version_info < (3, 11):
    sys.exit("Python %d.%d is too old: the pinned numpy needs Python 3.11+" % sys.version_info[:2])
if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
    sys.exit("python3 lacks the venv/ensurepip modules (Debian: apt-get install python3-venv)")
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())
'
want="$("$python" -c "$check" "$requirements" 2>&1)" || die "$want"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "flower venv up to date: $venv (requirements ${want:0:12})"
  exit 0
fi

# Two test workers may get here at once: one builds, the other waits and then finds the stamp.
mkdir -p "$(dirname "$venv")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$venv.lock"
  flock 9
  if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "flower venv up to date: $venv (requirements ${want:0:12})"
    exit 0
  fi
fi

if [ -e "$venv" ]; then
  # Only ever delete something that is a venv (ours, stale); never an unrelated directory.
  [ -f "$venv/pyvenv.cfg" ] || die "$venv exists and is not a venv; move it away"
  rm -rf "$venv"
fi

"$python" -m venv "$venv" >&2 \
  || die "$python -m venv $venv failed (Debian: apt-get install python3-venv)"
log="$venv/.sepal-pip-install.log"
if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
  -r "$requirements" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "pip install -r $requirements failed (full log: $log)"
fi
[ -x "$venv/bin/flower-superlink" ] || die "flwr installed but $venv/bin/flower-superlink is missing"

echo "$want" >"$stamp"
echo "flower venv installed: $venv ($("$venv/bin/python" -c 'import flwr; print("flwr", flwr.__version__)'), requirements ${want:0:12})"

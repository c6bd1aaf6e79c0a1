#!/usr/bin/env bash
# Create the virtual environment, installing Debian's venv support first if it is missing.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found; install Python 3.11 or newer (apt-get install python3)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: replpool needs Python 3.11 or newer; $python is $("$python" -V 2>&1)." >&2
    echo "       Run with PYTHON=/path/to/python3.11 make test" >&2
    exit 1
fi
[ -x "$venv/bin/python" ] && exit 0

if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        ver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
        echo "installing python$ver-venv with apt-get" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python$ver-venv" ||
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
        "$python" -m venv "$venv"
    else
        echo "error: '$python -m venv' failed; install your distribution's venv package" >&2
        echo "       (Debian/Ubuntu: apt-get install python3-venv) and run make again" >&2
        exit 1
    fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools

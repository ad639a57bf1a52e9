#!/bin/sh
# Install triton-kernel and the chosen backends into a fresh virtual environment, from wheels
# built out of a source checkout. The container image RUNs exactly this script, and
# tests/test_deploy_image.py runs it too, so what the image installs is what the tests serve.
#
#   deploy/install.sh SOURCE_DIR VENV_DIR BACKENDS
#
# BACKENDS: "all", "none", or a comma-separated list of onnx, torch, openvino, fil, python.
# pip may fetch third-party dependencies; constraints.txt pins them as the project's tests do
# (torch==2.13.0 is the CPU build).
set -eu

if [ "$#" -ne 3 ]; then
    echo "usage: $0 SOURCE_DIR VENV_DIR BACKENDS (all | none | onnx,torch,openvino,fil,python)" >&2
    exit 2
fi
src=$1
venv=$2
backends=$3
python=${PYTHON:-python3}

if [ "$backends" = all ]; then
    backends=onnx,torch,openvino,fil,python
elif [ "$backends" = none ]; then
    backends=
fi

plugins=
for name in $(echo "$backends" | tr ',' ' '); do
    case "$name" in
        onnx | torch | openvino | fil | python) plugins="$plugins $src/plugins/triton-backend-$name" ;;
        *)
            echo "$0: unknown backend '$name' (expected onnx, torch, openvino, fil, python)" >&2
            exit 2
            ;;
    esac
done

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT

"$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
# Wheels, not editable installs: the image holds no source tree.
# shellcheck disable=SC2086  # $plugins is a list of folders without spaces
$pip wheel --quiet --no-deps --wheel-dir "$wheels" "$src" $plugins
# shellcheck disable=SC2046  # one argument per wheel file
$pip install --quiet --no-cache-dir -c "$src/constraints.txt" $(ls "$wheels"/*.whl)
"$venv/bin/kernel" backends

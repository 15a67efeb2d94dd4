# Sourced (not run) by the scripts that need pinned PyPI tools: installs them with
# `pip install --target` into a private directory, so neither a virtualenv nor a change to
# the system's Python is needed (Debian's Python refuses a plain `pip install`: PEP 668).
# tests/kubernetes.rs looks for kubectl in the same place. CLOCK_SERVER_PYTOOLS moves it.
PYTOOLS=${CLOCK_SERVER_PYTOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/clock-server/pytools}

# pytools_install NAME REQUIREMENT...: installs the requirements once into $PYTOOLS/NAME
# (executables in $PYTOOLS/NAME/bin; modules importable with PYTHONPATH=$PYTOOLS/NAME).
pytools_install() {
    pytools_dir=$PYTOOLS/$1
    shift
    [ -e "$pytools_dir/.complete" ] && return 0
    echo "installing $* (PyPI) into $pytools_dir"
    rm -rf "$pytools_dir"
    mkdir -p "$pytools_dir"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --target "$pytools_dir" "$@"
    touch "$pytools_dir/.complete"
}

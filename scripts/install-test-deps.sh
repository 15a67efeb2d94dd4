#!/bin/sh
# Installs what the tests need when it is missing: Mosquitto and redis-server (the tests
# start their own on free loopback ports; the packaged services are not used) and openssl.
# Debian/Ubuntu; uses sudo when not root.
set -eu
need=""
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need="$need mosquitto"
command -v mosquitto_sub >/dev/null 2>&1 || need="$need mosquitto-clients"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
[ -n "$need" ] || exit 0
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
echo "installing test dependencies:$need"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $need

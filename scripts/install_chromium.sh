#!/usr/bin/env bash
# Installs the distribution's headless-capable Chromium (Debian package `chromium`) for the leaderboard's browser
# test, when /usr/bin/chromium is missing. Idempotent: does nothing when it is already there. Needs root (or sudo).
set -euo pipefail
CHROMIUM=${MMEB_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    echo "chromium present: $CHROMIUM"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_chromium.sh: $CHROMIUM is missing and this user is not root; run as root: apt-get install -y chromium" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
"$CHROMIUM" --version

#!/usr/bin/env bash
# Headless Chromium for the report and MLflow UI tests (tests/test_report.py), installed only where it is
# missing and this machine can install it: apt-get, as root or with passwordless sudo (CI images). Anywhere
# else it says how to install it and exits 0: the browser tests are then skipped, the others still run.
set -euo pipefail
for name in chromium chromium-browser; do
    if command -v "$name" >/dev/null; then
        exit 0
    fi
done
if command -v apt-get >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    fi
fi
if [ -z "${SUDO+set}" ]; then
    echo "install_browser.sh: no chromium on PATH and no way to install it here (needs apt-get as root or" \
         "passwordless sudo): the browser tests will be skipped; install Chromium (Debian/Ubuntu:" \
         "sudo apt-get install chromium) to run them"
    exit 0
fi
$SUDO apt-get update -q
# Debian's package is `chromium`; Ubuntu's `chromium-browser` (a snap wrapper) where `chromium` is unknown.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium-browser fonts-dejavu-core

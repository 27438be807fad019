#!/usr/bin/env bash
# Headless Chromium for the report and MLflow UI tests (tests/test_report.py): Debian's `chromium` package.
# Run as root (CI images) or with sudo; a no-op when chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null; then
    exit 0
fi
SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core

#!/usr/bin/env bash
# Debian's prometheus package gives the real server and promtool the tests use.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install Debian's prometheus package (apt-get install prometheus)" >&2; exit 1; }
    SUDO=sudo
fi
install() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus; }
install || { $SUDO apt-get update -qq && install; }

#!/usr/bin/env bash
# Debian's prometheus and prometheus-alertmanager packages give the real server, promtool and
# Alertmanager the tests use.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
    && command -v prometheus-alertmanager >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install Debian's prometheus and prometheus-alertmanager packages (apt-get install prometheus prometheus-alertmanager)" >&2
        exit 1
    }
    SUDO=sudo
fi
install() {
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        prometheus prometheus-alertmanager
}
install || { $SUDO apt-get update -qq && install; }

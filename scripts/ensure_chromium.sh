#!/usr/bin/env bash
# Installs Debian's chromium for the browser test if it is missing. Needs root (CI and the dev
# machines run as root). Without a browser the review-page test fails; it never skips.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_chromium: /usr/bin/chromium is missing; install Debian's 'chromium' package (needs root)." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version

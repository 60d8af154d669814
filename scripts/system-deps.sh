#!/usr/bin/env bash
# Install the Debian packages the test suite needs, when missing and when we are root.
# Without root, say what is missing and carry on (tests needing it will say so too).
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# WordNet 3.0 (ImageNet's class ids are its noun synsets): the photo bundle's broader terms.
[ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
# The browser test of /docs and /redoc: Playwright drives Debian's Chromium (no browser download).
[ -x /usr/bin/chromium ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "warning: missing system packages (${need[*]}); install them with apt-get as root" >&2
fi

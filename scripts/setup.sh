#!/usr/bin/env bash
# Installs what sensorpipe needs and is missing, and nothing else; safe to run again.
#   scripts/setup.sh demo   Debian packages for the demo, the Python venv, the npm packages
#   scripts/setup.sh test   the same, plus Chromium and the test tools
#   scripts/setup.sh demo pi   the demo's, plus the Pi extras (a real DHT sensor: scripts/demo --sensor)
# Runs as root, or as a user who may sudo (only apt-get is run through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-demo}
extras=${2:-}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root for: $* (run as root or install sudo)" >&2; exit 1
  fi
}

packages=(mosquitto mosquitto-clients influxdb influxdb-client python3-venv)
# The reports' PDF: WeasyPrint lays text out with Pango, in a font fontconfig finds.
packages+=(libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)
# systemd for systemd-analyze (checks the service unit), openssl for the TLS listener test,
# redis-server for the tests with several bridges, faketime for a publisher whose clock is ahead.
# poppler-utils for pdftotext (the tests read the reports' PDFs back).
[ "$purpose" = test ] && packages+=(chromium docker-compose systemd openssl redis-server faketime poppler-utils)
# gpiod and sysv_ipc build from source where PyPI has no wheel for this machine.
[ "$extras" = pi ] && packages+=(python3-dev gcc)
# Raspberry Pi OS may already have its own build under the older name: use that one.
if dpkg-query -W -f='${Status}' chromium-browser 2>/dev/null | grep -q "install ok installed"; then
  packages=("${packages[@]/chromium}")
fi
command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# A Python that is not Debian's (pyenv, say) brings its own venv module.
if [[ " ${missing[*]} " == *" python3-venv "* ]] && python3 -c "import ensurepip, venv" 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
read -r -a missing <<< "${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# nginx for the reverse-proxy example's test: Debian's package unpacked into .cache/nginx,
# not installed, so no system service starts and nothing listens on port 80.
if [ "$purpose" = test ] && [ ! -x .cache/nginx/usr/sbin/nginx ]; then
  echo "setup: nginx (unpacked into .cache/nginx for the tests)"
  rm -rf .cache/nginx .cache/nginx-deb && mkdir -p .cache/nginx-deb
  if ! (cd .cache/nginx-deb && apt-get download -qq nginx 2>/dev/null); then
    as_root apt-get update -qq
    (cd .cache/nginx-deb && apt-get download -qq nginx 2>/dev/null)
  fi
  dpkg-deb -x .cache/nginx-deb/nginx_*.deb .cache/nginx
  rm -rf .cache/nginx-deb
fi

lock=requirements.lock
[ "$purpose" = test ] && lock=requirements-dev.lock
stamp=.venv/.installed-$(cat requirements.lock "$lock" | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "setup: Python packages from $lock into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$lock"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ "$extras" = pi ]; then
  pi_stamp=.venv/.installed-pi-$(sha256sum requirements-pi.lock | cut -c1-16)
  if [ ! -e "$pi_stamp" ]; then
    echo "setup: the Pi extras from requirements-pi.lock into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -r requirements-pi.lock
    rm -f .venv/.installed-pi-*
    touch "$pi_stamp"
  fi
fi

npm_stamp=webui/node_modules/.installed-$(sha256sum webui/package-lock.json | cut -c1-16)
if [ ! -e "$npm_stamp" ]; then
  echo "setup: front-end packages from webui/package-lock.json"
  (cd webui && npm ci --no-audit --no-fund --loglevel=error)
  touch "$npm_stamp"
fi

#!/usr/bin/env bash
# Install the sensorpipe publisher as a systemd service on a Raspberry Pi (Raspberry Pi OS).
#
#   sudo scripts/install-pi.sh --device greenhouse --broker mqtt://greenhouse:SECRET@192.168.1.10:1883 \
#       [--sensor dht22] [--pin D4] [--interval 2] [--location "Greenhouse"] [--ha-discovery]
#   sudo scripts/install-pi.sh --remove [--purge]
#
# What it does, and only this:
# - installs python3-venv and the build tools the GPIO packages need (apt);
# - creates the system user `sensorpipe` in group `gpio` (no login, no home of its own);
# - copies this checkout to /opt/sensorpipe/src and makes a venv in /opt/sensorpipe/venv with
#   the publisher and the Pi extras, pinned by requirements.lock and requirements-pi.lock;
# - writes /etc/sensorpipe/publisher.env (every setting listed with its meaning; readable by
#   root and the service only, as it may hold the broker password) if it is new or settings
#   were given; an existing file is kept as publisher.env.bak when replaced;
# - installs and starts sensorpipe-publisher.service (restarts on failure; the outbox lives
#   in /var/lib/sensorpipe).
# --remove stops and removes the service and /opt/sensorpipe; settings and the outbox stay
# unless --purge is given too.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
unit=sensorpipe-publisher.service
settings=()
remove=0
purge=0

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || { echo "install-pi: $1 needs a value" >&2; exit 2; }; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --device) need_value "$@"; settings+=("SENSORPIPE_DEVICE=$2"); shift 2 ;;
    --broker) need_value "$@"; settings+=("SENSORPIPE_MQTT_URL=$2"); shift 2 ;;
    --sensor) need_value "$@"; settings+=("SENSORPIPE_SENSOR=$2"); shift 2 ;;
    --pin) need_value "$@"; settings+=("SENSORPIPE_PIN=$2"); shift 2 ;;
    --interval) need_value "$@"; settings+=("SENSORPIPE_INTERVAL=$2"); shift 2 ;;
    --location) need_value "$@"; settings+=("SENSORPIPE_LOCATION=$2"); shift 2 ;;
    --topic-prefix) need_value "$@"; settings+=("SENSORPIPE_TOPIC_PREFIX=$2"); shift 2 ;;
    --ha-discovery) settings+=("SENSORPIPE_HA_DISCOVERY=1"); shift ;;
    --remove) remove=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage ;;
    *) echo "install-pi: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "install-pi: run it with sudo" >&2; exit 1; }

if [ "$remove" -eq 1 ]; then
  systemctl disable --now "$unit" 2>/dev/null || true
  rm -f "/etc/systemd/system/$unit"
  systemctl daemon-reload
  rm -rf /opt/sensorpipe
  if [ "$purge" -eq 1 ]; then
    rm -rf /etc/sensorpipe /var/lib/sensorpipe
    userdel sensorpipe 2>/dev/null || true
    echo "install-pi: removed the service, its settings, its outbox and its user"
  else
    echo "install-pi: removed the service; kept /etc/sensorpipe (settings) and /var/lib/sensorpipe (outbox)"
  fi
  exit 0
fi

echo "install-pi: Debian packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev gcc >/dev/null

getent group gpio >/dev/null || groupadd --system gpio
if ! id sensorpipe >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/sensorpipe --shell /usr/sbin/nologin \
    --groups gpio sensorpipe
fi
usermod -a -G gpio sensorpipe

echo "install-pi: the publisher into /opt/sensorpipe"
mkdir -p /opt/sensorpipe
rm -rf /opt/sensorpipe/src
# The checkout without its local state (venv, node_modules, demo data).
tar -C "$repo" --exclude=.venv --exclude=.git --exclude=node_modules --exclude=.demo -cf - . \
  | (mkdir -p /opt/sensorpipe/src && tar -C /opt/sensorpipe/src -xf -)
[ -x /opt/sensorpipe/venv/bin/python ] || python3 -m venv /opt/sensorpipe/venv
/opt/sensorpipe/venv/bin/pip install -q --upgrade pip
/opt/sensorpipe/venv/bin/pip install -q -c "$repo/requirements.lock" -c "$repo/requirements-pi.lock" \
  "/opt/sensorpipe/src[pi]"

mkdir -p /etc/sensorpipe
env_file=/etc/sensorpipe/publisher.env
if [ ! -e "$env_file" ] || [ "${#settings[@]}" -gt 0 ]; then
  [ -e "$env_file" ] && cp -p "$env_file" "$env_file.bak"
  # Made unreadable to others from the start: it may hold the broker password.
  (umask 077; /opt/sensorpipe/venv/bin/python -m publisher.envfile "${settings[@]}" > "$env_file.new")
  mv "$env_file.new" "$env_file"
fi
chown root:sensorpipe "$env_file"
chmod 0640 "$env_file"

# Check the settings as the service will see them, before starting it: one clear line if wrong.
if ! (set -a; . "$env_file"; set +a; /opt/sensorpipe/venv/bin/python -c '
import os, sys
from common.settings import SettingsError
from publisher.settings import load_settings
try:
    load_settings([], os.environ)
except SettingsError as exc:
    sys.exit(f"install-pi: bad setting in '"$env_file"': {exc}")
'); then
  exit 2
fi

install -m 0644 "$repo/publisher/systemd/$unit" "/etc/systemd/system/$unit"
systemctl daemon-reload
systemctl enable "$unit" >/dev/null
systemctl restart "$unit"
echo "install-pi: sensorpipe-publisher is running; settings in $env_file"
echo "  its log:     journalctl -u $unit -f"
echo "  after edits: sudo systemctl restart $unit"

#!/usr/bin/env bash
# Install sensorpipe as systemd services on a Raspberry Pi (Raspberry Pi OS bookworm) or any
# Debian 12 host. Two ways:
#
# The Pi is the server: broker, InfluxDB, bridge with the dashboard, and this Pi's sensor.
#   sudo scripts/install-pi.sh --server [--sensor dht22|dht11|dht-kernel|ds18b20|bme280|sht4x|simulated|none]
#       [--pin D4] [--onewire-id 28-...] [--sensors "dht22,pin=D4 ds18b20,name=freezer"]
#       [--calibration "temperature=-0.4"] [--device NAME] [--location TEXT] [--interval 2] [--password PW] [--retention 400d]
#       [--listen 0.0.0.0] [--web-port 5000] [--mqtt-port 1883] [--influx-port 8086]
#   It ends by printing the dashboard's address (http://<hostname>.local:5000/) and password,
#   and how to add a second Pi as a publisher to this broker.
#
# The Pi is a publisher to a broker elsewhere (for example the server above):
#   sudo scripts/install-pi.sh --device greenhouse --broker mqtt://greenhouse:SECRET@192.168.1.10:1883 \
#       [--sensor dht22] [--pin D4] [--interval 2] [--location "Greenhouse"] [--ha-discovery]
#
#   sudo scripts/install-pi.sh --remove [--purge]
#
# What it does, and only this:
# - checks the options, the ports and any Mosquitto or InfluxDB configuration already there
#   before it changes anything: a wrong option is one line and exit status 2;
# - installs the Debian packages it needs and lacks: python3-venv (and python3-dev, gcc for
#   the GPIO packages of a DHT sensor); with --server also mosquitto and influxdb (Debian's);
# - creates the system user `sensorpipe` in groups `gpio` and `i2c` (no login, no home of its own);
# - copies this checkout to /opt/sensorpipe/src and makes a venv in /opt/sensorpipe/venv,
#   pinned by requirements.lock (and requirements-pi.lock for a DHT, BME280 or SHT4x), with the
#   dashboard's front-end files (from this checkout's webui/node_modules, or npm);
# - publisher only: writes /etc/sensorpipe/publisher.env (every setting listed with its
#   meaning; readable by root and the service only) if it is new or settings were given,
#   keeping the old one as publisher.env.bak;
# - --server: writes Mosquitto's sensorpipe.conf (the shipped, secured config: no anonymous
#   clients, an ACL, persistence), the bridge's and this Pi's broker accounts,
#   /etc/default/influxdb (InfluxDB on 127.0.0.1 only), /etc/sensorpipe/bridge.env (with a
#   generated dashboard password, or --password) and publisher.env: scripts/install_server.py;
# - installs, enables and (re)starts the services (restart on failure, start at boot).
# Run again, it changes only what changed, and restarts only what that concerns.
# --no-systemctl: all of the above but talking to systemd (for a container or a test).
# --remove stops and removes the services, /opt/sensorpipe and the broker and InfluxDB
# configuration it wrote; the settings (/etc/sensorpipe), the outbox and alerts' state
# (/var/lib/sensorpipe), the user who owns them and InfluxDB's database stay unless --purge
# is given too (which removes all but the database, and says how to drop that).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
# Debian's own Python, whatever else is on PATH (pyenv, a venv): the services run as their
# own user, who could not read a Python in someone's home.
python=/usr/bin/python3
unit=sensorpipe-publisher.service
settings=()
server_args=()
server=0
remove=0
purge=0
systemctl=1
sensor=""
sensors=""
device=""

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
need_value() { [ "$#" -ge 2 ] && [ -n "$2" ] || { echo "install-pi: $1 needs a value" >&2; exit 2; }; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --device) need_value "$@"; device=$2; settings+=("SENSORPIPE_DEVICE=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --broker) need_value "$@"; settings+=("SENSORPIPE_MQTT_URL=$2"); shift 2 ;;
    --sensor) need_value "$@"; sensor=$2; settings+=("SENSORPIPE_SENSOR=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --pin) need_value "$@"; settings+=("SENSORPIPE_PIN=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --onewire-id) need_value "$@"; settings+=("SENSORPIPE_ONEWIRE_ID=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --sensors) need_value "$@"; sensors=$2; settings+=("SENSORPIPE_SENSORS=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --calibration) need_value "$@"; settings+=("SENSORPIPE_CALIBRATION=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --interval) need_value "$@"; settings+=("SENSORPIPE_INTERVAL=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --location) need_value "$@"; settings+=("SENSORPIPE_LOCATION=$2"); server_args+=("$1" "$2"); shift 2 ;;
    --topic-prefix) need_value "$@"; settings+=("SENSORPIPE_TOPIC_PREFIX=$2"); shift 2 ;;
    --ha-discovery) settings+=("SENSORPIPE_HA_DISCOVERY=1"); shift ;;
    --server) server=1; shift ;;
    --password|--retention|--listen|--web-port|--mqtt-port|--influx-port)
      need_value "$@"; server_args+=("$1" "$2"); shift 2 ;;
    --no-systemctl) systemctl=0; server_args+=("$1"); shift ;;
    --remove) remove=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage ;;
    *) echo "install-pi: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "install-pi: run it with sudo" >&2; exit 1; }
if [ "$server" -eq 0 ] && [ "$remove" -eq 0 ] && [ "$sensor" = none ]; then
  echo "install-pi: --sensor none is for --server (a publisher without a sensor has nothing to send)" >&2; exit 2
fi
[ -z "$sensor" ] && [ "$server" -eq 1 ] && sensor=dht22
# The drivers that need the Pi extras (Blinka and a chip library; the GPIO ones need a
# compiler where gpiod has no wheel); ds18b20 and dht-kernel are read through the kernel.
extras=""
if [ -n "$sensors" ]; then drivers=$(for entry in $sensors; do echo "${entry%%,*}"; done); else drivers=${sensor:-dht22}; fi
for driver in $drivers; do case "$driver" in dht22|dht11|bme280|sht4x) extras="pi" ;; esac; done
pi_extras=$extras
# The dashboard's reports render PDFs with WeasyPrint.
[ "$server" -eq 1 ] && extras="${extras:+$extras,}pdf"
[ -n "$extras" ] && extras="[$extras]"
with_systemd() { if [ "$systemctl" -eq 1 ]; then systemctl "$@"; fi; }

if [ "$remove" -eq 1 ]; then
  with_systemd disable --now "$unit" 2>/dev/null || true
  rm -f "/etc/systemd/system/$unit"
  # The server's part (bridge unit, broker and InfluxDB configuration), if it was installed.
  "$python" "$repo/scripts/install_server.py" remove "${server_args[@]}"
  with_systemd daemon-reload
  rm -rf /opt/sensorpipe
  if [ "$purge" -eq 1 ]; then
    rm -rf /etc/sensorpipe /var/lib/sensorpipe
    userdel sensorpipe 2>/dev/null || true
    echo "install-pi: removed the services, their settings, the outbox, the alerts' state and the user sensorpipe"
  else
    echo "install-pi: removed the services; kept /etc/sensorpipe (settings), /var/lib/sensorpipe (outbox, alerts)"
    echo "  and the user sensorpipe who owns them (--purge removes them too)"
  fi
  if [ -d /var/lib/influxdb/data/sensors ]; then
    echo "  InfluxDB's database 'sensors' stays: influx -execute 'DROP DATABASE sensors' removes it"
  fi
  echo "  the Debian packages (mosquitto, influxdb, python3-venv) stay installed"
  exit 0
fi

# --- Checks: nothing is changed before they pass ------------------------------------------
if [ "$server" -eq 1 ]; then
  "$python" "$repo/scripts/install_server.py" check "${server_args[@]}"
elif ! (cd "$repo" && "$python" -c '
import sys
from common.settings import SettingsError
from publisher.settings import load_settings
values = dict(arg.split("=", 1) for arg in sys.argv[1:])
try:
    load_settings([], values)
except SettingsError as exc:
    sys.exit(f"install-pi: {exc}")
' "${settings[@]}"); then
  exit 2
fi

# --- Debian packages ----------------------------------------------------------------------
packages=(python3-venv)
[ -n "$pi_extras" ] && packages+=(python3-dev gcc)
# With the dashboard: Pango and a font for the reports' PDF (WeasyPrint).
[ "$server" -eq 1 ] && packages+=(mosquitto influxdb libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)
vendor=(uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css socket.io-client/dist/socket.io.min.js)
have_vendor=1
for file in "${vendor[@]}"; do [ -f "$repo/webui/node_modules/$file" ] || have_vendor=0; done
[ "$server" -eq 1 ] && [ "$have_vendor" -eq 0 ] && ! command -v npm >/dev/null && packages+=(nodejs npm)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-pi: Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$server" -eq 1 ] && [ "$systemctl" -eq 1 ]; then
  # Debian starts a package's service when installing it: both are reconfigured below.
  systemctl stop mosquitto influxdb 2>/dev/null || true
fi

# gpio for a DHT's pin, i2c for /dev/i2c-1 (Raspberry Pi OS has both; a plain Debian may not).
for group in gpio i2c; do getent group "$group" >/dev/null || groupadd --system "$group"; done
if ! id sensorpipe >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /var/lib/sensorpipe --shell /usr/sbin/nologin \
    --groups gpio,i2c sensorpipe
fi
for group in gpio i2c; do id -nG sensorpipe | tr ' ' '\n' | grep -qx "$group" || usermod -a -G "$group" sensorpipe; done

# --- The code and its venv, again only when the checkout changed ---------------------------
excludes=(--exclude=.venv --exclude=.git --exclude=node_modules --exclude=.demo --exclude=.cache
  --exclude=__pycache__ --exclude=test-artifacts --exclude=./.env --exclude=./mosquitto/passwd
  --exclude=./mosquitto/acl)
stamp=$( (tar -C "$repo" "${excludes[@]}" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . \
  && echo "extras=$extras server=$server") | sha256sum | cut -c1-32)
code_changed=0
if [ "$(cat /opt/sensorpipe/.installed 2>/dev/null)" != "$stamp" ]; then
  code_changed=1
  echo "install-pi: sensorpipe into /opt/sensorpipe"
  mkdir -p /opt/sensorpipe
  rm -rf /opt/sensorpipe/src /opt/sensorpipe/.installed
  mkdir -p /opt/sensorpipe/src
  tar -C "$repo" "${excludes[@]}" -cf - . | tar -C /opt/sensorpipe/src -xf -
  if [ "$server" -eq 1 ]; then
    # The dashboard serves these itself (no CDN); pyproject.toml packs them into the venv.
    if [ "$have_vendor" -eq 1 ]; then
      for file in "${vendor[@]}"; do install -D -m 0644 "$repo/webui/node_modules/$file" "/opt/sensorpipe/src/webui/node_modules/$file"; done
    else
      (cd /opt/sensorpipe/src/webui && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
    fi
  fi
  [ -x /opt/sensorpipe/venv/bin/python ] || "$python" -m venv /opt/sensorpipe/venv
  /opt/sensorpipe/venv/bin/pip install -q --disable-pip-version-check --upgrade pip
  constraints=(-c "$repo/requirements.lock")
  [ -n "$pi_extras" ] && constraints+=(-c "$repo/requirements-pi.lock")
  /opt/sensorpipe/venv/bin/pip install -q --disable-pip-version-check "${constraints[@]}" "/opt/sensorpipe/src$extras"
  if [ "$server" -eq 1 ]; then
    /opt/sensorpipe/venv/bin/python -c 'from webui.pages import check_vendor_files; check_vendor_files()'
  fi
  echo "$stamp" > /opt/sensorpipe/.installed
fi

mkdir -p /etc/sensorpipe
if [ "$server" -eq 1 ]; then
  changed=()
  [ "$code_changed" -eq 1 ] && changed=(--code-changed)
  exec /opt/sensorpipe/venv/bin/python /opt/sensorpipe/src/scripts/install_server.py apply "${server_args[@]}" "${changed[@]}"
fi

# --- The publisher alone ------------------------------------------------------------------
env_file=/etc/sensorpipe/publisher.env
if [ ! -e "$env_file" ] || [ "${#settings[@]}" -gt 0 ]; then
  [ -e "$env_file" ] && cp -p "$env_file" "$env_file.bak"
  # Made unreadable to others from the start: it may hold the broker password.
  (umask 077; /opt/sensorpipe/venv/bin/python -m publisher.envfile "${settings[@]}" > "$env_file.new")
  mv "$env_file.new" "$env_file"
fi
chown root:sensorpipe "$env_file"
chmod 0640 "$env_file"

install -m 0644 "$repo/publisher/systemd/$unit" "/etc/systemd/system/$unit"
if [ "$systemctl" -eq 0 ]; then
  echo "install-pi: --no-systemctl: installed, not started; settings in $env_file"
  exit 0
fi
systemctl daemon-reload
systemctl enable "$unit" >/dev/null
systemctl restart "$unit"
echo "install-pi: sensorpipe-publisher is running; settings in $env_file"
echo "  its log:     journalctl -u $unit -f"
echo "  after edits: sudo systemctl restart $unit"

#!/usr/bin/env bash
# The publisher's install on an emulated Raspberry Pi 4: a Debian bookworm arm64 root built by
# debootstrap, run with qemu-user-static and proot (no binfmt_misc, no root privileges for
# the emulation itself; apt-get needs root to install those three on the host).
#
#   scripts/emulated-pi.sh [--root DIR] [--rebuild]
#
# 1. builds the root in DIR (default .cache/pi-root; kept for the next run, --rebuild makes it
#    anew): debootstrap's two stages from this machine's Debian mirror;
# 2. installs what install-pi.sh needs inside (python3-venv, python3-dev, gcc) and copies
#    this checkout in;
# 3. runs `scripts/install-pi.sh --device pi-emu --sensors "dht22 bme280,name=outside
#    sht4x,name=inside" --no-systemctl` inside as root (proot's fake root): the user,
#    /opt/sensorpipe, `pip install ".[pi]"` pinned by the lock files, resolved for aarch64
#    (every driver's library: DHT, BME280, SHT4x), the settings file and the unit;
# 4. with a Raspberry Pi 4's device tree faked (model and compatible, as Blinka reads them):
#    `import board` and the three chip libraries say which board Blinka found;
# 5. runs the installed publisher as its unit does, with those sensors and no GPIO chip (none
#    is emulated): it must stop with one line and exit status 1, not a traceback;
# 6. runs it with the two drivers the kernel reads (ds18b20, dht-kernel) on fake sysfs trees
#    and no broker: it must take its readings into the outbox and stop cleanly on SIGTERM.
# Prints how long each step took. Not part of the test suite (minutes, not seconds):
# docs/benchmarks.md has a run's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=$repo/.cache/pi-root
rebuild=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --root) root=$(realpath -m "$2"); shift 2 ;;
    --rebuild) rebuild=1; shift ;;
    *) echo "emulated-pi: unknown option $1" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for package in qemu-user-static proot debootstrap; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "emulated-pi: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step_started=0
step() { step_started=$EPOCHREALTIME; echo "== $1"; }
took() { awk -v a="$step_started" -v b="$EPOCHREALTIME" 'BEGIN { printf "   took %.0f s\n", b - a }'; }
# The emulated machine: aarch64 through qemu, root through proot, the host's /proc and /dev.
inside() {
  proot -q qemu-aarch64-static -r "$root" -b /proc -b /dev -b /sys -b "$fake_tree:/proc/device-tree" \
    -w / -0 /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}

mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
[ "$rebuild" -eq 1 ] && rm -rf "$root"
# A Raspberry Pi 4 Model B's device tree, as much of it as Blinka reads.
fake_tree=$(mktemp -d)
trap 'rm -rf "$fake_tree"' EXIT
printf 'Raspberry Pi 4 Model B Rev 1.4\0' > "$fake_tree/model"
printf 'raspberrypi,4-model-b\0brcm,bcm2711\0' > "$fake_tree/compatible"

if [ ! -e "$root/.built" ]; then
  step "debootstrap bookworm arm64 into $root (from $mirror)"
  rm -rf "$root" && mkdir -p "$root"
  debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$root" "$mirror" >/dev/null
  proot -q qemu-aarch64-static -r "$root" -b /proc -b /dev -b /sys -w / -0 \
    /usr/bin/env DEBOOTSTRAP_DIR=/debootstrap /bin/sh /debootstrap/debootstrap --second-stage >/dev/null
  touch "$root/.built"
  took
fi

step "Debian packages inside: python3-venv python3-dev gcc (what install-pi.sh needs for a DHT sensor)"
# minbase has no archive keys: apt installs from the lists debootstrap fetched, warning.
inside apt-get install -y -qq --allow-unauthenticated python3-venv python3-dev gcc ca-certificates >/dev/null 2>&1
# pip reaches the package registry with this machine's CA bundle (FACTS).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
inside uname -m
inside /usr/bin/python3 -VV
took

step "this checkout into the emulated Pi"
rm -rf "$root/root/sensorpipe" && mkdir -p "$root/root/sensorpipe"
tar -C "$repo" --exclude=.venv --exclude=.git --exclude=node_modules --exclude=.demo --exclude=.cache \
  --exclude=__pycache__ --exclude=test-artifacts -cf - . | tar -C "$root/root/sensorpipe" -xf -
took

sensors="dht22,pin=D4 bme280,name=outside sht4x,name=inside"
step "install-pi.sh --device pi-emu --sensors \"$sensors\" --no-systemctl (pip install \".[pi]\" for aarch64)"
rm -f "$root/opt/sensorpipe/.installed"
inside /bin/bash /root/sensorpipe/scripts/install-pi.sh --device pi-emu --sensors "$sensors" \
  --broker mqtt://pi-emu:secret@127.0.0.1:1883 --no-systemctl
inside /opt/sensorpipe/venv/bin/pip list --format=freeze 2>/dev/null \
  | grep -iE "^(adafruit-blinka|adafruit-circuitpython-(dht|bme280|sht4x)|gpiod)=="
took

step "Blinka on a Raspberry Pi 4 model string"
inside /usr/bin/env BLINKA_SKIP_DEPENDENCY_CHECK=1 /opt/sensorpipe/venv/bin/python -c '
import adafruit_platformdetect, board, adafruit_dht, adafruit_bme280.basic, adafruit_sht4x
detector = adafruit_platformdetect.Detector()
print("board:", detector.board.id, "chip:", detector.chip.id, "board.D4:", board.D4)
'
took

step "the installed publisher with those sensors and no GPIO chip"
set +e
output=$(inside /bin/sh -c 'set -a; . /etc/sensorpipe/publisher.env; set +a;
  BLINKA_SKIP_DEPENDENCY_CHECK=1 STATE_DIRECTORY=/var/lib/sensorpipe exec /opt/sensorpipe/venv/bin/python -m publisher' 2>&1)
code=$?
set -e
echo "$output" | sed 's/^/   /'
took
if [ "$code" -ne 1 ] || echo "$output" | grep -q "Traceback"; then
  echo "emulated-pi: FAILED: expected one line and exit status 1, got status $code" >&2
  exit 1
fi

step "the installed publisher with ds18b20 and dht-kernel on fake sysfs trees, no broker"
rm -rf "$root/tmp/sys" && mkdir -p "$root/tmp/sys/w1/28-0316a2794b00" "$root/tmp/sys/iio/iio:device0"
printf '72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n' \
  > "$root/tmp/sys/w1/28-0316a2794b00/w1_slave"
printf 'dht11@4\n' > "$root/tmp/sys/iio/iio:device0/name"
printf '21400\n' > "$root/tmp/sys/iio/iio:device0/in_temp_input"
printf '45100\n' > "$root/tmp/sys/iio/iio:device0/in_humidityrelative_input"
set +e
kernel_output=$(inside /usr/bin/env STATE_DIRECTORY=/tmp /usr/bin/timeout -s TERM 40 /opt/sensorpipe/venv/bin/python \
  -m publisher --device pi-kernel --sensors "dht-kernel ds18b20,name=freezer" --interval 2 --count 3 \
  --w1-devices /tmp/sys/w1 --iio-devices /tmp/sys/iio --mqtt-url mqtt://127.0.0.1:9 2>&1)
set -e
echo "$kernel_output" | grep -E "sensor every|took [0-9]+ readings" | sed 's/^/   /'
took
if ! echo "$kernel_output" | grep -q "took 3 readings this run; 3 wait in the outbox" \
  || echo "$kernel_output" | grep -q "Traceback"; then
  echo "emulated-pi: FAILED: the kernel-read sensors did not give their 3 readings" >&2
  echo "$kernel_output" | tail -5 >&2
  exit 1
fi
echo "emulated-pi: passed (the publisher's exit status with the chip sensors: $code)"
echo "reproduce: scripts/emulated-pi.sh --rebuild"

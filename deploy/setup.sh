#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine (run as root) or a developer's box:
#   1. the Debian packages the project needs (only those missing are installed);
#   2. a virtual environment in .venv with the package installed in editable mode.
# Re-running it when nothing changed takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.setup-stamp

# Debian packages, by the command that proves each one is present.
declare -A APT_FOR_COMMAND=([prosody]=prosody)
# The cloud broker at scale (broker_bridge.ejabberd runs a private cluster of it).
APT_FOR_COMMAND[ejabberdctl]=ejabberd

# bench/lab's calibration: bytes of an MQTT publish, against Debian's mosquitto.
APT_FOR_COMMAND[mosquitto]=mosquitto

# bench/netlab: namespaces, tbf, nftables loss, outages and counters; the delayer needs PyPI's
# NetfilterQueue, which compiles against libnetfilter-queue (no command: checked by a file).
APT_FOR_COMMAND+=([ip]=iproute2 [nft]=nftables [iptables]=iptables [ethtool]=ethtool
                  [conntrack]=conntrack)
declare -A APT_FOR_FILE=([/usr/include/libnetfilter_queue/libnetfilter_queue.h]=libnetfilter-queue-dev
                         [/usr/share/build-essential/list]=build-essential
                         [/usr/bin/python3-config]=python3-dev)

log() { printf 'setup: %s\n' "$*"; }

# The Debian packages start system-wide servers (Prosody on port 5222; ejabberd with epmd and
# ports 5222/5269/5280). The project only ever runs its own (csms broker, broker_bridge.prosody,
# broker_bridge.ejabberd), so stop and disable the system ones; every step may fail harmlessly
# (containers have no systemd and often no running init scripts).
quiet_system_service() {  # SERVICE LABEL
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$1.service" >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$1" ]; then
        "/etc/init.d/$1" stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d "$1" disable >/dev/null 2>&1 || true
        fi
    fi
    log "system $2 service stopped and disabled (the project runs its own)"
}

need_apt=()
for cmd in "${!APT_FOR_COMMAND[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || need_apt+=("${APT_FOR_COMMAND[$cmd]}")
done
for file in "${!APT_FOR_FILE[@]}"; do
    [ -e "$file" ] || need_apt+=("${APT_FOR_FILE[$file]}")
done
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need_apt+=("python3-venv")
fi
if ((${#need_apt[@]})); then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing system packages: ${need_apt[*]}"
        log "install them with your package manager (as root: apt-get install -y ${need_apt[*]}) and run 'make setup' again"
        exit 1
    fi
    log "installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    if [[ " ${need_apt[*]} " == *" prosody "* ]]; then
        quiet_system_service prosody Prosody
    fi
    if [[ " ${need_apt[*]} " == *" mosquitto "* ]]; then
        quiet_system_service mosquitto Mosquitto
    fi
    if [[ " ${need_apt[*]} " == *" ejabberd "* ]]; then
        quiet_system_service ejabberd ejabberd
        # The system node's epmd (Erlang's name daemon, listening on every interface) outlives
        # it; our nodes use none. Stop it unless some Erlang node still relies on it.
        if command -v epmd >/dev/null 2>&1 && ! epmd -names 2>/dev/null | grep -q '^name '; then
            epmd -kill >/dev/null 2>&1 || true
        fi
    fi
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"setup: Python >= 3.11 is required, {sys.executable} is {sys.version.split()[0]}; "
             "set PYTHON=/path/to/python3.11 and run 'make setup' again")
PY

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall when the project's shape changes: pyproject.toml, or the set of packages (an
# editable install records package directories as they were when it ran).
fingerprint=$( { cat pyproject.toml; find keypath object_model broker_bridge actors bench \
    -name __init__.py 2>/dev/null | sort; } | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$fingerprint" ]; then
    log "installing the package and its test dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[test,lab]'
    echo "$fingerprint" > "$STAMP"
fi
log "ready ($("$VENV/bin/python" --version))"

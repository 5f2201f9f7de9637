#!/usr/bin/env bash
# Install the real TLS servers used by the interop tests (tests/support/realservers.py):
# nginx (nginx-light if the release has it), haproxy, stunnel4, openssl (s_server) and socat;
# and the database servers of the driver tests: redis-server (tests/support/redisserver.py)
# and postgresql (tests/support/postgresserver.py runs initdb and postgres itself).
#
# Idempotent and non-interactive: packages already installed are skipped, `apt-get update`
# runs only when a wanted package has no install candidate or a download fails (stale lists),
# and no service is started: Debian's postinst scripts would start nginx/haproxy/stunnel on
# ports 80 etc. through invoke-rc.d, so a temporary /usr/sbin/policy-rc.d answering 101
# ("action forbidden") blocks that.  The tests run every server in the foreground themselves;
# systemd is never used.  postgresql's postinst would also create (not start) a "main"
# cluster in /var/lib/postgresql: a drop-in create_main_cluster = false skips that.
#
# Usage: scripts/install-servers.sh        (as root, or with sudo available)
set -euo pipefail

started=$(date +%s.%N)
log() { printf 'install-servers: %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        log "not root: re-running under sudo"
        exec sudo -- "$0" "$@"
    fi
    log "must run as root (apt-get install needs it)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

has_candidate() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $candidate && $candidate != "(none)" ]]
}

versions() {
    log "versions:"
    /usr/sbin/nginx -v 2>&1 | sed 's/^/  /'
    # sed reads to the end: head -n1 would let haproxy die of SIGPIPE (fatal with pipefail)
    /usr/sbin/haproxy -v 2>&1 | sed -n '1s/^/  /p'
    stunnel4 -version 2>&1 | grep -m1 -i '^stunnel' | sed 's/^/  /' || true
    openssl version | sed 's/^/  /'
    socat -V 2>/dev/null | grep -m1 'socat version' | sed 's/^/  /' || true
    redis-server --version | sed 's/^/  /'
    for postgres in /usr/lib/postgresql/*/bin/postgres; do
        "$postgres" --version | sed 's/^/  /'
    done
}

updated=0
apt_update() {
    if [[ $updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -q
        updated=1
    fi
}

# nginx: any of the Debian flavours provides /usr/sbin/nginx.  nginx-light is the smallest
# (bookworm); later releases dropped it, so fall back to plain nginx.
nginx_pkg=""
for p in nginx-light nginx nginx-core nginx-full nginx-extras; do
    if is_installed "$p"; then nginx_pkg=$p; break; fi
done

wanted=(haproxy stunnel4 openssl socat redis-server postgresql)
missing=()
skipped=()
for p in "${wanted[@]}"; do
    if is_installed "$p"; then skipped+=("$p"); else missing+=("$p"); fi
done
if [[ -n $nginx_pkg ]]; then
    skipped+=("$nginx_pkg")
fi

if [[ ${#missing[@]} -eq 0 && -n $nginx_pkg ]]; then
    log "already installed: ${skipped[*]}"
    versions
    log "nothing to do ($(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $started}") s)"
    exit 0
fi

# Decide on the nginx package and make sure every missing package has a candidate; a fresh
# machine (or a container image with its lists removed) needs `apt-get update` first.
need_update=0
if [[ -z $nginx_pkg ]]; then
    if has_candidate nginx-light; then
        nginx_pkg=nginx-light
    elif has_candidate nginx; then
        nginx_pkg=nginx
    else
        need_update=1
    fi
fi
for p in "${missing[@]}"; do
    has_candidate "$p" || need_update=1
done
if [[ $need_update -eq 1 ]]; then
    apt_update
    if [[ -z $nginx_pkg ]]; then
        if has_candidate nginx-light; then nginx_pkg=nginx-light; else nginx_pkg=nginx; fi
    fi
fi
if ! is_installed "$nginx_pkg"; then
    missing+=("$nginx_pkg")
fi

# Block service start-up during the install.  Keep an existing policy-rc.d (Docker images
# ship one) and remove ours afterwards, even if the install fails.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from aiotlspool scripts/install-servers.sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
    log "created temporary $policy (exit 101) to block service auto-start"
else
    log "keeping existing $policy"
fi

# No "main" cluster from postgresql-NN's postinst (the tests run initdb in a temporary
# directory).  The drop-in directory is read through createcluster.conf's include_dir; kept
# afterwards, so that a later postgresql upgrade creates none either.
cc_dropin=/etc/postgresql-common/createcluster.d/aiotlspool-no-main-cluster.conf
if [[ ! -e $cc_dropin ]]; then
    mkdir -p "${cc_dropin%/*}"
    {
        echo "# from aiotlspool scripts/install-servers.sh: the tests run their own clusters"
        echo "create_main_cluster = false"
    } >"$cc_dropin"
fi

log "installing: ${missing[*]}"
[[ ${#skipped[@]} -gt 0 ]] && log "already installed: ${skipped[*]}"
if ! apt-get install "${APT_OPTS[@]}" "${missing[@]}"; then
    # The usual cause is a stale package list (404 on a superseded .deb): refresh once.
    if [[ $updated -eq 1 ]]; then
        exit 1
    fi
    log "install failed; refreshing package lists and retrying"
    apt_update
    apt-get install "${APT_OPTS[@]}" "${missing[@]}"
fi

versions
log "done in $(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $started}") s"

#!/usr/bin/env bash
# Builds the appc ACE validator (v0.8.11, Debian's golang-github-appc-spec-dev) offline, in
# GOPATH mode, and lays out its two images ready to pack:
#
#   OUTDIR/ace-validator-main/{manifest,rootfs/ace-validator,rootfs/opt/acvalidator/}
#   OUTDIR/ace-validator-sidekick/{manifest,rootfs/ace-validator,rootfs/opt/acvalidator/}
#
# As upstream's ace/build_aci does, both images carry the same static binary at
# /ace-validator; the mode (main, sidekick, prestart, poststop) is its first argument, given by
# each manifest's exec and event handlers. Every file gets mtime 0 and fixed modes, and the
# binary is built with -trimpath and an empty build ID, so the image IDs are stable.
#
# Cached: the binary is kept under build/.cache/ace/ (or $ACE_CACHE_DIR), keyed by a hash of
# the inputs (Go and spec package versions, the sources, this script, the manifests); a run
# whose inputs did not change copies it and compiles nothing. Safe to run concurrently.
#
# Usage: build/ace/build.sh OUTDIR
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 64
fi
start=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
outdir=$1
cache=${ACE_CACHE_DIR:-$here/../.cache/ace}
gocode=/usr/share/gocode
spec=$gocode/src/github.com/appc/spec
packages=(golang-go golang-github-appc-spec-dev)
names=(ace-validator-main ace-validator-sidekick)

log() { echo "ace-build: $*" >&2; }

# --- 1. Debian packages -----------------------------------------------------------------------
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        log "missing Debian packages: ${missing[*]} (run as root to install them)"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -f "$spec/ace/validator.go" ] || { log "no ACE source at $spec/ace"; exit 1; }

# --- 2. Input fingerprint ---------------------------------------------------------------------
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
exec 9>"$cache/lock"
flock 9

export GO111MODULE=off GOFLAGS= GOPROXY=off GOENV=off GOTOOLCHAIN=local GOWORK=off
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
export GOCACHE=$cache/gocache
export GOPATH=$cache/gopath:$gocode
mkdir -p "$cache/gopath"

fingerprint=$(
    {
        go version
        dpkg-query -W -f='${Package} ${Version}\n' "${packages[@]}"
        # the validator's package and everything it imports (GOPATH resolves them in gocode)
        go list -deps -f '{{if not .Standard}}{{.Dir}}{{end}}' github.com/appc/spec/ace |
            while read -r d; do [ -n "$d" ] && find "$d" -maxdepth 1 -name '*.go' -type f; done |
            LC_ALL=C sort | xargs sha256sum
        (cd "$here" && sha256sum build.sh ./*.manifest.json)  # relative: one key per content
    } | sha256sum | cut -c1-32
)
bin=$cache/ace-validator-$fingerprint

# --- 3. Compile (only when the inputs changed) ------------------------------------------------
if [ -x "$bin" ]; then
    log "cached binary $bin"
else
    log "compiling github.com/appc/spec/ace ($(go version | cut -d' ' -f3))"
    go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' \
        -o "$bin.tmp" github.com/appc/spec/ace
    mv -f "$bin.tmp" "$bin"
    # keep only the current binary
    find "$cache" -maxdepth 1 -name 'ace-validator-*' ! -name "ace-validator-$fingerprint" \
        -type f -delete
fi

# --- 4. Image layouts ---------------------------------------------------------------------------
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
stamp=$outdir/.ace-validator.stamp
up_to_date=0
if [ "$(cat "$stamp" 2>/dev/null)" = "$fingerprint" ]; then
    up_to_date=1
    for n in "${names[@]}"; do
        [ -f "$outdir/$n/manifest" ] && [ -x "$outdir/$n/rootfs/ace-validator" ] || up_to_date=0
    done
fi
if [ $up_to_date -eq 1 ]; then
    log "layouts in $outdir are up to date ($((SECONDS - start)) s)"
    exit 0
fi

stage=$(mktemp -d "$outdir/.ace-build.XXXXXX")
trap 'rm -rf "$stage"' EXIT
for n in "${names[@]}"; do
    d=$stage/$n
    mkdir -p "$d/rootfs/opt/acvalidator"
    install -m 0755 "$bin" "$d/rootfs/ace-validator"
    install -m 0644 "$here/$n.manifest.json" "$d/manifest"
    chmod 0755 "$d" "$d/rootfs" "$d/rootfs/opt" "$d/rootfs/opt/acvalidator"
    find "$d" -exec touch -h -d @0 {} +
done
rm -f "$stamp"
for n in "${names[@]}"; do
    rm -rf "${outdir:?}/$n"
    mv "$stage/$n" "$outdir/$n"
done
echo "$fingerprint" >"$stamp"
log "wrote ${names[*]} in $outdir ($((SECONDS - start)) s)"

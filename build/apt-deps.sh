#!/usr/bin/env bash
# Installs the Debian packages that the tests and builds need, only those still missing,
# so that a warm machine pays nothing and a fresh one (CI) gets everything.
set -euo pipefail

packages=(
    appc-spec        # actool: the differential test of manifest validation
    zstd             # zstd-compressed images (an extension of the spec)
    xz-utils bzip2 gzip tar
    debootstrap      # bench/import.py builds a Debian minbase rootfs
    golang-go golang-github-appc-spec-dev   # the appc ACE validator, built offline
    gcc libc6-dev musl-tools   # kurma-podinit, the pods' tiny C init (musl: 50 KiB PSS)
    util-linux libseccomp2   # unshare/nsenter in the tests; libseccomp behind pyseccomp
    busybox-static   # the tiny rootfs of the runtime's tests (static: no libraries to copy)
    crun runc        # bench/peers.py: the OCI runtimes Kurma's pod start is compared with
    qemu-system-x86  # the VM tests and make boot: Debian's kernel under qemu (TCG)
    kmod             # depmod: modules.dep for the unpacked VM kernel (build/kernel.py)
    e2fsprogs dosfstools   # ext4/vfat images: the init's disk label tests, the OEM disk
    squashfs-tools   # mksquashfs: the initrd carries /usr as a squashfs (build/initrd.py)
    umoci            # the reference OCI unpacker: differential test of layer application
    docker-registry skopeo   # tests/registry: a real distribution registry, and pushes to it
    podman           # pulls by a peer (same registries.conf/certs.d conventions as kurma's)
    containernetworking-plugins   # kurma.network: the CNI plugins pods are attached with
    iptables         # portmap/firewall plugins (nft backend); the network tests read rules
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "apt-deps: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "apt-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

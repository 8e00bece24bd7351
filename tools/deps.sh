#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# deps.sh - install the Debian 12 packages kderp needs, only if missing.
# Quiet when nothing is missing. Needs root (or sudo) when something is.
set -eu

pkgs=(
	make gcc clang llvm pkg-config
	libbpf-dev bpftool libelf-dev zlib1g-dev
	libsodium-dev libssl-dev openssl libjansson-dev libhttp-parser-dev libwslay-dev
	libnl-3-dev libnl-route-3-dev
	clang-format clang-tidy cppcheck libclang-rt-14-dev
	iproute2 procps psmisc python3 curl ca-certificates
	qemu-system-x86 busybox-static cpio kmod xz-utils zstd
	gnuplot-nox
)
# Extra packages a caller may ask for (e.g. make bench).
pkgs+=("$@")

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

# bpffs is needed by the BPF state plane and its tests.
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
	mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi

[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null

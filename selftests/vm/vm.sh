#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# vm.sh - run kderp's guest selftests under Debian kernels in qemu.
#
# Usage: vm.sh [SERIES|ABI ...]      (default: $KERNELS, else 6.1)
#
#   SERIES  "6.1" or "6.12": the newest linux-image of that series apt knows
#   ABI     "6.1.0-50" or "6.12.117+deb12": exactly that linux-image-ABI-amd64
#
# For each kernel: download the Debian package (apt-get download, cached in
# $KDERP_OUTPUT/vm/kernels/), extract it (dpkg-deb -x), build an initramfs
# (busybox-static, bash, the openssl CLI, a few GNU tools, the test programs
# and kderp's binaries, each with the shared libraries ldd lists, and the kTLS
# modules with their dependencies), boot it with qemu (KVM if a probe boot
# works, else TCG) and run the tests listed in selftests/vm/guest-tests. A guest that does not
# power off within VM_TIMEOUT seconds is killed and reported as a failure.
#
# Output is KTAP: per kernel one "boot" line and one line per guest test, the
# guest's own KTAP nested (indented) above each line. Exit status: 0 pass,
# 1 fail, 4 everything skipped.
#
# Environment:
#   KDERP_OUTPUT     build output directory (required; set by the Makefile)
#   KERNELS          kernels to test when none are given (default "6.1")
#   VM_TESTS         only run guest tests whose name contains one of these words
#   VM_ACCEL         kvm or tcg (default: probe KVM once, cache the verdict)
#   VM_TIMEOUT       seconds per guest boot, all tests included (default 300)
#   VM_TEST_TIMEOUT  seconds per guest test (default 150)
#   VM_KERNEL_CACHE  where kernels are kept (default $KDERP_OUTPUT/vm/kernels;
#                    vm.mk points SAN builds at the normal build's cache)
#   VM_MEM, VM_SMP   guest memory in MiB (default 1024) and CPUs (default 2)
#   VM_MODULES       modules to insmod, in order, dependencies added
#                    (default "gf128mul ghash-generic ctr gcm tls")
#   VM_EXTRA_TOOLS   more host commands to copy into the guest's /usr/bin
#   VM_PVH=0         boot the bzImage even where a PVH vmlinux could be used
#   QEMU             the qemu binary (default qemu-system-x86_64)
#   VM_SHELL=1       boot the first kernel with a shell on this terminal
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

: "${KDERP_OUTPUT:?KDERP_OUTPUT must point at the build output (make sets it)}"
out=$(cd "$KDERP_OUTPUT" && pwd) || exit 1
vmdir=$out/vm
kdir=${VM_KERNEL_CACHE:-$vmdir/kernels}
timeout_vm=${VM_TIMEOUT:-300}
timeout_test=${VM_TEST_TIMEOUT:-150}
mem=${VM_MEM:-1024}
smp=${VM_SMP:-2}
modules=${VM_MODULES:-gf128mul ghash-generic ctr gcm tls}
qemu=${QEMU:-qemu-system-x86_64}
host_tools="date timeout stat mktemp sort seq head tail wc cut tr sed grep awk ip ss"

n=0
npass=0
nfail=0
nskip=0

ktap() { # ktap ok|fail|skip NAME [COMMENT]
	n=$((n + 1))
	case "$1" in
	ok)
		npass=$((npass + 1))
		echo "ok $n $2${3:+ $3}"
		;;
	fail)
		nfail=$((nfail + 1))
		echo "not ok $n $2${3:+ # $3}"
		;;
	skip)
		nskip=$((nskip + 1))
		echo "ok $n $2 # SKIP ${3:-}"
		;;
	esac
}

note() { echo "# $*"; }

finish() {
	echo "1..$n"
	[ "$nfail" -gt 0 ] && exit 1
	[ "$n" -gt 0 ] && [ "$nskip" -eq "$n" ] && exit 4
	exit 0
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --- kernels ------------------------------------------------------------------

# pkg_for SPEC: the linux-image package name for a series or an exact ABI.
pkg_for() {
	local spec=$1 re
	if [[ "$spec" =~ ^[0-9]+\.[0-9]+$ ]]; then
		re="^linux-image-${spec//./\\.}(\\.0-[0-9]+|\\.[0-9]+\\+deb[0-9]+)-amd64\$"
		apt-cache search --names-only "$re" 2>/dev/null | awk '{ print $1 }' |
			grep -E "$re" | sort -V | tail -n 1
	else
		echo "linux-image-$spec-amd64"
	fi
}

# cached_for SPEC: the newest kernel of SPEC already in the cache (offline use).
cached_for() {
	local spec=$1
	[ -d "$kdir" ] || return 0
	find "$kdir" -mindepth 1 -maxdepth 1 -type d -name "linux-image-$spec[.-]*" \
		-exec test -f {}/.complete \; -print 2>/dev/null | sort -V | tail -n 1
}

# fetch_kernel SPEC: prints the extracted package directory, or nothing.
fetch_kernel() {
	local spec=$1 pkg dir tmp deb
	pkg=$(pkg_for "$spec")
	if [ -z "$pkg" ]; then
		cached_for "$spec"
		return 0
	fi
	dir=$kdir/$pkg
	if [ -f "$dir/.complete" ]; then
		echo "$dir"
		return 0
	fi
	mkdir -p "$kdir"
	tmp=$(mktemp -d "$kdir/.fetch.XXXXXX")
	if ! (cd "$tmp" && timeout 300 apt-get -q -o APT::Sandbox::User="$(id -un)" download \
		"$pkg") >"$tmp/apt.log" 2>&1; then
		sed 's/^/# apt: /' "$tmp/apt.log" >&2
		rm -rf "$tmp"
		cached_for "$spec"
		return 0
	fi
	deb=$(ls "$tmp"/*.deb 2>/dev/null | head -n 1)
	if [ -z "$deb" ] || ! dpkg-deb -x "$deb" "$tmp/x"; then
		rm -rf "$tmp"
		return 0
	fi
	dpkg-deb -f "$deb" Version >"$tmp/x/.version"
	rm -rf "$dir"
	mv "$tmp/x" "$dir"
	touch "$dir/.complete"
	rm -rf "$tmp"
	# A newer ABI of a series replaces the older ones in the cache (~400 MB each).
	if [[ "$spec" =~ ^[0-9]+\.[0-9]+$ ]]; then
		find "$kdir" -mindepth 1 -maxdepth 1 -type d -name "linux-image-$spec[.-]*" \
			! -path "$dir" -exec rm -rf {} + 2>/dev/null
	fi
	echo "$dir"
}

# boot_image PKGDIR VMLINUZ: the image to give qemu's -kernel. With
# CONFIG_PVH the uncompressed vmlinux (an ELF with a PVH entry note) boots
# directly, which under TCG saves the ~5-7 s the bzImage spends decompressing
# an xz kernel. It is extracted once and cached; on any trouble the bzImage.
boot_image() {
	local pkgdir=$1 vmlinuz=$2 elf=$1/.vmlinux-pvh off tool
	if [ "${VM_PVH:-1}" = 0 ] || ! grep -qs '^CONFIG_PVH=y' "$pkgdir"/boot/config-*; then
		echo "$vmlinuz"
		return
	fi
	if [ ! -s "$elf" ]; then
		for tool in "xz -dc" "zstd -dcq"; do
			command -v "${tool%% *}" >/dev/null || continue
			case "$tool" in
			xz*) magic='\xfd7zXZ\x00' ;;
			*) magic='\x28\xb5\x2f\xfd' ;;
			esac
			for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" 2>/dev/null |
				cut -d: -f1 | head -n 4); do
				tail -c +$((off + 1)) "$vmlinuz" | $tool >"$elf.tmp" 2>/dev/null
				if is_elf "$elf.tmp" && [ "$(stat -c %s "$elf.tmp")" -gt 4000000 ]; then
					mv "$elf.tmp" "$elf"
					break 2
				fi
			done
		done
		rm -f "$elf.tmp"
	fi
	if [ -s "$elf" ]; then echo "$elf"; else echo "$vmlinuz"; fi
}

# --- initramfs -----------------------------------------------------------------

stage=

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

# add_libs FILE: copy the shared libraries FILE needs into the stage.
add_libs() {
	local lib dst
	is_elf "$1" || return 0
	ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
		while read -r lib; do
			case "$lib" in
			*/ld-linux*) dst=$stage/lib64/$(basename "$lib") ;;
			*) dst=$stage/lib/x86_64-linux-gnu/$(basename "$lib") ;;
			esac
			[ -e "$dst" ] || cp -L "$lib" "$dst"
		done
}

# add_file SRC DST: copy SRC to DST inside the stage, with its libraries.
add_file() {
	mkdir -p "$(dirname "$stage/$2")"
	rm -f "$stage/$2"
	cp -L "$1" "$stage/$2" || return 1
	add_libs "$1"
}

# build_rootfs CPIO: the kernel-independent part of the initramfs.
build_rootfs() {
	local cpio=$1 bb f name cmd word rel
	stage=$vmdir/rootfs
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,lib/x86_64-linux-gnu,lib64,etc/kderp} \
		"$stage"/{proc,sys,dev,tmp,run,kderp/.output} || return 1
	mkdir -p "$stage/usr/lib" && ln -s ../../lib/x86_64-linux-gnu "$stage/usr/lib/x86_64-linux-gnu"

	bb=$(command -v busybox) || { note "busybox not found"; return 1; }
	add_file "$bb" bin/busybox || return 1
	for f in $("$bb" --list-full); do
		[ -e "$stage/$f" ] || [ -L "$stage/$f" ] || ln -s /bin/busybox "$stage/$f"
	done
	add_file "$(command -v bash)" bin/bash || return 1
	ln -sf /bin/bash "$stage/usr/bin/bash"
	# Host tools whose GNU behaviour shell tests rely on (date +%N, timeout's
	# exit 124, grep -P, iproute2's ip netns) replace the busybox applets.
	for f in openssl $host_tools ${VM_EXTRA_TOOLS:-}; do
		cmd=$(command -v "$f") || continue
		rm -f "$stage"/{bin,sbin,usr/bin,usr/sbin}/"$f"
		add_file "$cmd" "usr/bin/$f" || return 1
	done
	# The openssl CLI reads OPENSSLDIR/openssl.cnf (Debian: /usr/lib/ssl -> /etc/ssl).
	f=$(openssl version -d 2>/dev/null | sed -n 's/^OPENSSLDIR: "\(.*\)"$/\1/p')
	[ -n "$f" ] && [ -f "$f/openssl.cnf" ] && add_file "$f/openssl.cnf" "${f#/}/openssl.cnf"

	printf 'root:x:0:0:root:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
		>"$stage/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
	printf '127.0.0.1 localhost derp1.test derp2.test\n::1 localhost ip6-localhost\n' \
		>"$stage/etc/hosts"
	printf 'passwd: files\ngroup: files\nhosts: files\n' >"$stage/etc/nsswitch.conf"
	cp "$here/init" "$stage/init" && chmod 755 "$stage/init"

	# The repository's test scripts, and every top-level executable of the build.
	(cd "$root" && find selftests -name '*.sh' -type f) | while read -r f; do
		mkdir -p "$stage/kderp/$(dirname "$f")"
		cp "$root/$f" "$stage/kderp/$f"
	done
	find "$out" -maxdepth 1 -type f -perm -u+x | while read -r f; do
		add_file "$f" "kderp/.output/$(basename "$f")"
	done

	# The guest test list, filtered; every file it names goes in too.
	: >"$stage/etc/kderp/tests"
	while read -r name cmd; do
		case "$name" in '' | '#'*) continue ;; esac
		if [ -n "${VM_TESTS:-}" ]; then
			local keep=0 w
			for w in $VM_TESTS; do [[ "$name" == *"$w"* ]] && keep=1; done
			[ "$keep" = 1 ] || continue
		fi
		cmd=${cmd//\$OUT/.output}
		for word in $cmd; do
			rel=$word
			case "$rel" in
			.output/*) f=$out/${rel#.output/} ;;
			*) f=$root/$rel ;;
			esac
			[ -f "$f" ] || continue
			add_file "$f" "kderp/$rel" || return 1
		done
		echo "$name $cmd" >>"$stage/etc/kderp/tests"
	done <"$here/guest-tests"

	(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
		cpio -o -H newc --null --quiet -R 0:0 | gzip -1) >"$cpio"
}

# add_module TREE NAME: stage NAME.ko (decompressed) after its dependencies.
add_module() {
	local tree=$1 name=$2 f dep a b
	[[ " $mods_seen " == *" $name "* ]] && return 0
	mods_seen="$mods_seen $name"
	a=${name//-/_}
	b=${name//_/-}
	f=$(find "$tree/kernel" -type f \( -name "$name.ko*" -o -name "$a.ko*" -o -name "$b.ko*" \) |
		head -n 1)
	if [ -z "$f" ]; then
		if grep -qE "/($name|$a|$b)\\.ko\$" "$tree/modules.builtin" 2>/dev/null; then
			mods_note="$mods_note $name(builtin)"
		else
			mods_note="$mods_note $name(absent)"
		fi
		return 0
	fi
	local plain=$stage/lib/modules/kderp/$name.ko
	case "$f" in
	*.ko.xz) xz -dc "$f" >"$plain" ;;
	*.ko.zst) zstd -qdc "$f" >"$plain" ;;
	*.ko.gz) gzip -dc "$f" >"$plain" ;;
	*) cp "$f" "$plain" ;;
	esac || return 1
	for dep in $(modinfo -F depends "$plain" 2>/dev/null | tr ',' ' '); do
		add_module "$tree" "$dep" || return 1
	done
	echo "$name" >>"$stage/etc/kderp/modules"
}

# build_modules KDIR CPIO: the kernel-specific part (modules and their order).
build_modules() {
	local pkgdir=$1 cpio=$2 tree m
	tree=$(find "$pkgdir/lib/modules" "$pkgdir/usr/lib/modules" -mindepth 1 -maxdepth 1 \
		-type d 2>/dev/null | head -n 1)
	[ -n "$tree" ] || { note "no module tree in $pkgdir"; return 1; }
	stage=$vmdir/modfs
	rm -rf "$stage"
	mkdir -p "$stage/lib/modules/kderp" "$stage/etc/kderp"
	: >"$stage/etc/kderp/modules"
	mods_seen=
	mods_note=
	for m in $modules; do
		add_module "$tree" "$m" || return 1
	done
	note "modules: $(tr '\n' ' ' <"$stage/etc/kderp/modules")${mods_note:+;$mods_note}"
	(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
		cpio -o -H newc --null --quiet -R 0:0 | gzip -1) >"$cpio"
}

# --- qemu ----------------------------------------------------------------------

# qemu_args ACCEL KERNEL INITRD CONSOLE-LOG RESULTS-LOG: sets the array QARGS.
qemu_args() {
	QARGS=(-accel "$1" -m "$mem" -smp "$smp" -display none -monitor none -no-reboot
		-nic none -kernel "$2" -initrd "$3" -serial "file:$4" -serial "file:$5")
	[ "$1" = kvm ] && QARGS+=(-cpu host)
}

# pick_accel KERNEL: kvm only if a trivial boot under KVM finishes in 20 s.
pick_accel() {
	local vmlinuz=$1 key cache=$vmdir/accel probe=$vmdir/probe.cpio.gz pst=$vmdir/probefs
	if [ -n "${VM_ACCEL:-}" ]; then
		echo "$VM_ACCEL"
		return
	fi
	if [ ! -w /dev/kvm ] || [ ! -r /dev/kvm ]; then
		echo tcg
		return
	fi
	key="$(uname -r) $($qemu --version | head -n 1)"
	if [ -f "$cache" ] && [ "$(sed -n 2p "$cache")" = "$key" ]; then
		sed -n 1p "$cache"
		return
	fi
	rm -rf "$pst"
	mkdir -p "$pst/bin" "$pst/proc"
	cp "$(command -v busybox)" "$pst/bin/busybox"
	printf '%s\n' '#!/bin/busybox sh' '/bin/busybox echo KDERP-VM-PROBE-OK >/dev/ttyS1' \
		'/bin/busybox poweroff -f' >"$pst/init"
	chmod 755 "$pst/init"
	(cd "$pst" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$probe"
	local accel=tcg
	qemu_args kvm "$vmlinuz" "$probe" /dev/null "$vmdir/probe.out"
	timeout -k 2 20 "$qemu" "${QARGS[@]}" -append "console=ttyS0 quiet panic=-1" \
		</dev/null >/dev/null 2>&1 9>&-
	grep -q KDERP-VM-PROBE-OK "$vmdir/probe.out" 2>/dev/null && accel=kvm
	printf '%s\n%s\n' "$accel" "$key" >"$cache"
	rm -rf "$pst" "$probe" "$vmdir/probe.out"
	echo "$accel"
}

# report KERNEL-NAME RESULTS-FILE QEMU-RC: KTAP lines for the guest tests.
report() {
	local kname=$1 res=$2 qrc=$3 name cmd section rc secs p f s
	while read -r name cmd; do
		case "$name" in '' | '#'*) continue ;; esac
		if ! grep -q "^KDERP-VM-BEGIN $name\$" "$res"; then
			ktap fail "$kname/$name" "never started (guest died or timed out)"
			continue
		fi
		section=$(awk -v n="$name" '
			$0 == "KDERP-VM-BEGIN " n { on = 1; next }
			on && index($0, "KDERP-VM-END " n " ") == 1 { print; exit }
			on { print }' "$res")
		echo "$section" | grep -v '^KDERP-VM-END ' | sed 's/^/    /'
		if ! echo "$section" | grep -q '^KDERP-VM-END '; then
			ktap fail "$kname/$name" "no end marker (guest died or timed out)"
			continue
		fi
		rc=$(echo "$section" | sed -n 's/^KDERP-VM-END .* rc=\([0-9]*\).*/\1/p')
		secs=$(echo "$section" | sed -n 's/^KDERP-VM-END .* secs=\([0-9]*\).*/\1/p')
		p=$(echo "$section" | grep -cE '^ok [0-9]+')
		s=$(echo "$section" | grep -cE '^ok [0-9]+ .*# *SKIP')
		f=$(echo "$section" | grep -cE '^not ok [0-9]+')
		if [ "$rc" = 4 ] && [ "$f" -eq 0 ] && [ "$p" -eq "$s" ]; then
			ktap skip "$kname/$name" "all $s cases skipped in the guest"
		elif [ "$rc" != 0 ] && [ "$rc" != 4 ]; then
			ktap fail "$kname/$name" "exit=$rc, $f of $((p + f)) cases failed (${secs}s)"
		elif [ "$f" -gt 0 ] || [ $((p + f)) -eq 0 ]; then
			ktap fail "$kname/$name" "$f failed, $p passed (${secs}s)"
		else
			ktap ok "$kname/$name" "($((p - s)) passed, $s skipped, ${secs}s)"
		fi
	done <"$vmdir/rootfs/etc/kderp/tests"
}

# run_kernel SPEC
run_kernel() {
	local spec=$1 t0 pkgdir vmlinuz image kname initrd console res accel qrc t_fetch t_ird t_boot f
	t0=$(now)
	pkgdir=$(fetch_kernel "$spec")
	if [ -z "$pkgdir" ]; then
		ktap skip "$spec/boot" "no Debian linux-image for $spec (apt-get download failed, none cached)"
		return
	fi
	t_fetch=$(since "$t0")
	vmlinuz=$(ls "$pkgdir"/boot/vmlinuz-* 2>/dev/null | head -n 1)
	kname=${vmlinuz##*/vmlinuz-}
	kname=${kname%-amd64}
	note "kernel $spec: $(basename "$pkgdir") $(cat "$pkgdir/.version" 2>/dev/null)" \
		"(fetch ${t_fetch}s)"
	if [ -z "$vmlinuz" ]; then
		ktap fail "$kname/boot" "no vmlinuz in $(basename "$pkgdir")"
		return
	fi

	t0=$(now)
	initrd=$vmdir/initrd-$kname.cpio.gz
	if ! build_modules "$pkgdir" "$vmdir/modules-$kname.cpio.gz"; then
		ktap fail "$kname/boot" "could not stage the kernel modules"
		return
	fi
	cat "$vmdir/rootfs.cpio.gz" "$vmdir/modules-$kname.cpio.gz" >"$initrd"
	t_ird=$(since "$t0")

	accel=$(pick_accel "$vmlinuz")
	image=$(boot_image "$pkgdir" "$vmlinuz")
	console=$vmdir/console-$kname.log
	res=$vmdir/results-$kname.log
	rm -f "$console" "$res"
	t0=$(now)
	qemu_args "$accel" "$image" "$initrd" "$console" "$res"
	# In the background so a signal to this script can stop the guest; fd 9
	# (the lock) is not inherited, so a stray guest cannot hold it.
	timeout -k 5 "$timeout_vm" "$qemu" "${QARGS[@]}" \
		-append "console=ttyS0 quiet panic=-1 kderp.timeout=$timeout_test" \
		</dev/null >"$vmdir/qemu-$kname.log" 2>&1 9>&- &
	qemu_pid=$!
	wait "$qemu_pid"
	qrc=$?
	qemu_pid=
	t_boot=$(since "$t0")
	touch "$res" "$console"
	# The guest's ttys turn \n into \r\n.
	for f in "$res" "$console"; do
		tr -d '\r' <"$f" >"$f.tmp" && mv "$f.tmp" "$f"
	done
	local kind="PVH vmlinux"
	[ "$image" = "$vmlinuz" ] && kind=bzImage
	note "qemu $accel, $kind: ${t_boot}s boot+tests" \
		"(initramfs ${t_ird}s, $(du -k "$initrd" | cut -f1) KiB), rc=$qrc"
	grep -a -e '^KDERP-VM-BOOT' -e '^KDERP-VM-DONE' "$res" | sed 's/^/# /'
	grep -a '^KDERP-VM-MODULE' "$res" | grep -v 'rc=0' | sed 's/^/# insmod failed: /'

	f=$(grep -ac 'WARNING:' "$console")
	[ "$f" -gt 0 ] && note "kernel console has $f WARNING lines, see $console"
	local why=
	if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
		why="guest killed after ${timeout_vm}s (hung)"
	elif [ "$qrc" -ne 0 ]; then
		why="qemu exit $qrc: $(tail -n 1 "$vmdir/qemu-$kname.log")"
	elif ! grep -qa '^KDERP-VM-DONE' "$res"; then
		why="guest did not finish its test list"
	elif grep -qaE 'Kernel panic|BUG: |Oops|general protection fault|KASAN|refcount_t: ' \
		"$console"; then
		why="kernel reported a bug, see $console"
	fi
	if [ -n "$why" ]; then
		sed 's/^/# console: /' "$console" | tail -n 30
		ktap fail "$kname/boot" "$why"
	else
		ktap ok "$kname/boot" "($accel, ${t_boot}s)"
	fi
	report "$kname" "$res" "$qrc"
}

qemu_pid=
stop_guest() {
	[ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
	qemu_pid=
}

# --- main ----------------------------------------------------------------------

main() {
	local specs=("$@") k t0
	[ ${#specs[@]} -eq 0 ] && read -r -a specs <<<"${KERNELS:-6.1}"
	echo "TAP version 13"
	if ! command -v "$qemu" >/dev/null 2>&1; then
		ktap skip vm "$qemu not installed (tools/deps.sh installs qemu-system-x86)"
		finish
	fi
	for t in busybox cpio apt-get dpkg-deb modinfo; do
		if ! command -v "$t" >/dev/null 2>&1; then
			ktap skip vm "$t not installed"
			finish
		fi
	done
	mkdir -p "$vmdir" "$kdir"
	trap 'stop_guest; exit 1' INT TERM HUP
	# One run at a time per kernel cache (shared by the normal and SAN builds).
	exec 9>"$kdir/.lock"
	if ! flock -w 900 9; then
		ktap fail vm "another vm.sh holds $kdir/.lock"
		finish
	fi

	t0=$(now)
	if ! build_rootfs "$vmdir/rootfs.cpio.gz"; then
		ktap fail vm "could not build the initramfs"
		finish
	fi
	note "initramfs base: $(du -k "$vmdir/rootfs.cpio.gz" | cut -f1) KiB in $(since "$t0")s;" \
		"guest tests: $(awk '{ printf "%s ", $1 }' "$vmdir/rootfs/etc/kderp/tests")"

	if [ "${VM_SHELL:-0}" = 1 ]; then
		local pkgdir vmlinuz kname
		pkgdir=$(fetch_kernel "${specs[0]}")
		[ -n "$pkgdir" ] || { echo "no kernel for ${specs[0]}" >&2; exit 1; }
		vmlinuz=$(ls "$pkgdir"/boot/vmlinuz-* | head -n 1)
		kname=${vmlinuz##*/vmlinuz-}
		build_modules "$pkgdir" "$vmdir/modules-$kname.cpio.gz" || exit 1
		cat "$vmdir/rootfs.cpio.gz" "$vmdir/modules-$kname.cpio.gz" >"$vmdir/initrd-shell.cpio.gz"
		exec "$qemu" -accel "$(pick_accel "$vmlinuz")" -m "$mem" -smp "$smp" -nographic \
			-no-reboot -nic none -kernel "$vmlinuz" -initrd "$vmdir/initrd-shell.cpio.gz" \
			-serial mon:stdio -serial "file:$vmdir/results-shell.log" \
			-append "console=ttyS0 panic=-1 kderp.shell=1" 9>&-
	fi

	for k in "${specs[@]}"; do
		run_kernel "$k"
	done
	finish
}

main "$@"

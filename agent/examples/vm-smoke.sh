#!/bin/bash
# Boots the static ward-agent as /init of a throwaway initramfs in QEMU (TCG), with vsock
# through vhost-device-vsock and a busybox rootfs shared over 9p, and runs the vm_smoke
# example against it. Needs root, qemu-system-x86, busybox-static, vhost-device-vsock and
# a guest kernel (build/guest/vmlinux, from tools/build-guest-kernel).
#
# usage: agent/examples/vm-smoke.sh [extra kernel command line words]
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
kernel=${KERNEL:-$top/build/guest/vmlinux}
work=$(mktemp -d /tmp/ward-vm-smoke.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "console log kept in $work/console.log"
}
trap cleanup EXIT

cd "$top"
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q -p ward-agent --release \
    --target x86_64-unknown-linux-gnu
cargo build -q -p ward-agent --example vm_smoke
python3 tools/build-initrd --agent target/x86_64-unknown-linux-gnu/release/ward-agent \
    --out "$work/initrd.img"

# The busybox rootfs the smoke test expects: applets, root and an "app" user (1000).
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,proc,sys,dev,tmp,etc,root,home/app}
cp /bin/busybox "$rootfs/bin/busybox"
for applet in sh echo sleep cat id hostname tr ls true grep mount head wc ps kill touch; do
    ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"
chown 1000:1000 "$rootfs/home/app"

vhost-device-vsock --guest-cid 3 --socket "$work/vhost.sock" --uds-path "$work/vsock.sock" \
    >"$work/vhost-device-vsock.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/vhost.sock" ] && break; sleep 0.05; done

started=$(date +%s%N)
qemu-system-x86_64 -accel tcg -machine q35,memory-backend=mem -m 256 -no-reboot \
    -object memory-backend-memfd,id=mem,size=256M,share=on \
    -kernel "$kernel" -initrd "$work/initrd.img" -append "console=ttyS0 panic=-1 $*" \
    -chardev socket,id=c,path="$work/vhost.sock" -device vhost-user-vsock-pci,chardev=c \
    -fsdev local,id=r,path="$rootfs",security_model=passthrough \
    -device virtio-9p-pci,fsdev=r,mount_tag=rootfs0 \
    -serial file:"$work/console.log" -display none -monitor none >"$work/qemu.log" 2>&1 &
pids+=($!)

target/debug/examples/vm_smoke "$work/vsock.sock" rootfs0
echo "total: $(( ($(date +%s%N) - started) / 1000000 )) ms from QEMU start"

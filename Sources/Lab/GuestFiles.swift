/// The text files placed into the guest's initramfs, and the C source of the guest's `flocktest`.
///
/// They live in the library (not in a resource folder) because `suture lab fetch` builds the
/// initramfs from an installed binary, far from the source tree.
enum GuestFiles {
    /// Printed by /init once the shell is about to start; `SerialConsole.waitForReady` parses it.
    static let readyMarker = "SUTURE-READY"
    /// The virtio console port that carries bulk data (kallsyms) to a host file.
    static let bulkPortName = "suture.bulk"
    static let nfsReadyMarker = "SUTURE-NFS-READY"

    /// PID 1. The shell it ends in is PID 1 too (setsid succeeds for init), so `exit` in the guest
    /// panics it and QEMU (`panic=-1 -no-reboot`) exits: the VM never lingers without a shell.
    static let initScript = """
        #!/bin/busybox sh
        # Suture lab guest init (PID 1): mount the basics, announce readiness, become the console shell.
        /bin/busybox --install -s /bin
        export PATH=/sbin:/bin
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        mount -t devtmpfs devtmpfs /dev
        mount -t tmpfs tmpfs /tmp
        mount -t tmpfs tmpfs /run
        ip link set lo up
        # A program drives this console. Without echo busybox's shell reads plain lines: no line
        # editor, no cursor-position queries, no redraws at 80 columns, commands up to 4095 bytes.
        stty -echo
        echo "\(readyMarker) uptime=$(cut -d' ' -f1 /proc/uptime) boot_id=$(cat /proc/sys/kernel/random/boot_id)"
        export PS1='# '
        exec setsid cttyhack sh

        """

    /// `/suture/nfs-setup`: the guest serves a tmpfs over NFSv3 to itself.
    static let nfsSetupScript = """
        #!/bin/sh
        # Serve /export (a tmpfs) over NFSv3 and mount it on /mnt/nfs; /mnt/local is a tmpfs to compare with.
        fail() { echo "SUTURE-NFS-FAILED: $*"; exit 1; }
        while read m; do
          [ -d /sys/module/$m ] || insmod /lib/suture/modules/$m.ko || fail "insmod $m"
        done < /lib/suture/nfs-modules
        mkdir -p /run/rpcbind /var/lib/nfs/v4recovery /export /mnt/nfs /mnt/local
        grep -q ' /export ' /proc/mounts || mount -t tmpfs export /export || fail "mount /export"
        grep -q ' /mnt/local ' /proc/mounts || mount -t tmpfs local /mnt/local || fail "mount /mnt/local"
        grep -q ' /proc/fs/nfsd ' /proc/mounts || mount -t nfsd nfsd /proc/fs/nfsd || fail "mount nfsd"
        rpcbind || fail rpcbind
        exportfs -ra || fail exportfs
        rpc.mountd || fail rpc.mountd
        rpc.nfsd 2 || fail rpc.nfsd
        # nolock: flock() on NFSv3 is then handled in the client (local_lock=all) by nfs_flock, the
        # function the seed patch edits, without rpc.statd and NLM. Retry while nfsd starts listening.
        i=0
        until mount -t nfs -o nolock,vers=3 127.0.0.1:/export /mnt/nfs 2>/tmp/nfs-mount.err; do
          i=$((i+1)); [ $i -ge 25 ] && { cat /tmp/nfs-mount.err; fail "mount -t nfs 127.0.0.1:/export"; }
          usleep 200000
        done
        grep ' /mnt/nfs nfs ' /proc/mounts || fail "no NFS mount on /mnt/nfs"
        echo "\(nfsReadyMarker)"

        """

    /// `/suture/bulk-port`: prints the device node of the bulk port, loading virtio drivers on first use.
    static let bulkPortScript = """
        #!/bin/sh
        # Print /dev/vportNpM of the virtio console port named \(bulkPortName); load its drivers on first use.
        if [ ! -d /sys/class/virtio-ports ]; then
          while read m; do
            [ -d /sys/module/$m ] || insmod /lib/suture/modules/$m.ko || exit 1
          done < /lib/suture/bulk-modules
        fi
        i=0
        while [ $i -lt 100 ]; do
          for p in /sys/class/virtio-ports/*; do
            [ "$(cat $p/name 2>/dev/null)" = \(bulkPortName) ] && [ -e /dev/${p##*/} ] && { echo /dev/${p##*/}; exit 0; }
          done
          usleep 20000
          i=$((i+1))
        done
        echo "no virtio port named \(bulkPortName)" >&2
        exit 1

        """

    /// `flocktest FILE`: one exclusive, non-blocking flock(2), reported on one line.
    static let flocktestSource = """
        /* flocktest FILE: take an exclusive, non-blocking flock(2) on FILE (created if missing).
         * Prints "flock: OK" and exits 0, or "flock: <strerror> (errno N)" and exits 1;
         * exits 2 when FILE cannot be opened. Static, so it runs in the busybox guest. */
        #include <errno.h>
        #include <fcntl.h>
        #include <stdio.h>
        #include <string.h>
        #include <sys/file.h>
        #include <unistd.h>

        int main(int argc, char **argv)
        {
            if (argc != 2) {
                fprintf(stderr, "usage: flocktest FILE\\n");
                return 2;
            }
            int fd = open(argv[1], O_RDWR | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0) {
                int err = errno;
                printf("open: %s (errno %d)\\n", strerror(err), err);
                return 2;
            }
            if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
                int err = errno;
                printf("flock: %s (errno %d)\\n", strerror(err), err);
                close(fd);
                return 1;
            }
            printf("flock: OK\\n");
            flock(fd, LOCK_UN);
            close(fd);
            return 0;
        }

        """

    static let passwd = """
        root:x:0:0:root:/:/bin/sh
        _rpc:x:100:65534::/run/rpcbind:/bin/false
        statd:x:101:65534::/var/lib/nfs:/bin/false
        nobody:x:65534:65534::/:/bin/false

        """

    static let group = """
        root:x:0:
        nogroup:x:65534:

        """

    static let exports = "/export 127.0.0.1(rw,no_root_squash,insecure,no_subtree_check,fsid=1)\n"
}

import Foundation
import TestSupport

/// A tiny static C client of /dev/suture's ioctls, compiled by gcc at test time against the same
/// ABI header the module includes, and carried into the guest: it exercises the module below
/// Suture's own code (the module's refusals must stand without any user-space check).
enum KmodClient {
    static var headerFolder: String { Fixtures.repoRoot.appendingPathComponent("Sources/CShim/include").path }

    /// `kmodclient read ADDR LEN` prints the bytes in hex; `kmodclient cas ADDR EXPECTED NEW` (hex
    /// byte strings like 74 or 0f84) prints `ok stop_ns=… stopped_ns=… walk_ns=… tasks=…`. Errors
    /// print `error errno=N found=HEX busy_pid=P message=…` and exit 1; bad usage exits 2.
    static let source = """
        #include <errno.h>
        #include <fcntl.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>
        #include "suture_kmod.h"

        static int parse_hex(const char *text, unsigned char *out, int max)
        {
            int n = 0;
            size_t len = strlen(text);
            if (len % 2 || len == 0 || len / 2 > (size_t)max)
                return -1;
            for (size_t i = 0; i < len; i += 2) {
                char byte[3] = { text[i], text[i + 1], 0 };
                char *end;
                out[n++] = (unsigned char)strtoul(byte, &end, 16);
                if (*end)
                    return -1;
            }
            return n;
        }

        static void print_hex(const unsigned char *bytes, unsigned length)
        {
            for (unsigned i = 0; i < length; i++)
                printf("%s%02x", i ? " " : "", bytes[i]);
        }

        int main(int argc, char **argv)
        {
            if (argc < 4)
                return 2;
            int fd = open("/dev/suture", O_RDWR | O_CLOEXEC);
            if (fd < 0) {
                printf("error errno=%d open /dev/suture: %s\\n", errno, strerror(errno));
                return 1;
            }
            unsigned long long address = strtoull(argv[2], NULL, 16);
            if (strcmp(argv[1], "read") == 0) {
                static unsigned char buffer[SUTURE_KMOD_MAX_READ];
                struct suture_kmod_read req = { .address = address, .length = (unsigned)atoi(argv[3]),
                                                .buffer = (unsigned long long)(unsigned long)buffer };
                if (ioctl(fd, SUTURE_IOC_READ, &req) != 0) {
                    printf("error errno=%d message=%s\\n", errno, req.message);
                    return 1;
                }
                print_hex(buffer, req.length);
                printf("\\n");
                return 0;
            }
            if (strcmp(argv[1], "cas") == 0 && argc == 5) {
                struct suture_kmod_cas req = { .address = address };
                int a = parse_hex(argv[3], req.expected, SUTURE_KMOD_MAX_WRITE);
                int b = parse_hex(argv[4], req.replacement, SUTURE_KMOD_MAX_WRITE);
                if (a < 0 || a != b)
                    return 2;
                req.length = (unsigned)a;
                int rc = ioctl(fd, SUTURE_IOC_CAS, &req);
                int err = errno;
                if (rc != 0) {
                    printf("error errno=%d found=", err);
                    print_hex(req.found, req.length);
                    printf(" busy_pid=%d message=%s\\n", req.busy_pid, req.message);
                    return 1;
                }
                printf("ok stop_ns=%llu stopped_ns=%llu walk_ns=%llu tasks=%u vouched=%u message=%s\\n",
                       (unsigned long long)req.stop_machine_ns, (unsigned long long)req.stopped_ns,
                       (unsigned long long)req.walk_ns, req.tasks_walked, req.tasks_vouched, req.message);
                return 0;
            }
            return 2;
        }

        """

    /// Builds the client statically (it runs in the busybox guest) into `folder`.
    static func build(in folder: URL) throws -> URL {
        try Fixtures.compileC(source, name: "kmodclient",
                              flags: ["-static", "-O2", "-Wall", "-Werror", "-I", headerFolder], in: folder)
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive `flock` on a file, held until the value is released: one build at a time per
/// source tree (and one download at a time per cache), since two would patch and build the same
/// files. The lock ends with the process too, so a killed build never leaves it held.
final class KernelBuildLock {
    private let fd: Int32

    init(_ path: String) throws(KernelBuildError) {
        let folder = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(path: path, operation: "open the lock file", errno: errno) }
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let code = errno
            close(fd)
            throw .io(path: path, operation: "lock (flock)", errno: code)
        }
        self.fd = fd
    }

    deinit {
        close(fd)   // closing drops the lock
    }
}

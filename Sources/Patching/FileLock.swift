import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive flock(2) on a lock file, held until the value goes away.
///
/// Serializes what must not interleave between Suture processes: two applies on one journal, two
/// builds of one source tree, two `suture lab up`, two console clients, two sessions on the lab's
/// gdbstub. The lock ends with the process too, so a killed one never leaves it held.
package final class FileLock {
    private let fd: Int32

    /// Waits for the lock: forever, or `timeout` seconds, then fails naming `holder` (what the
    /// waiter was waiting for). The lock file is created with `permissions` if it is missing; its
    /// folder must exist. Errors are the caller's type (`throwing:`), naming the lock file.
    package init<Failure: IOFailure>(_ path: String, timeout: Double? = nil, holder: String = "another Suture process",
                                     permissions: mode_t = 0o644, throwing _: Failure.Type) throws(Failure) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, permissions)
        guard fd >= 0 else { throw .io(path: path, operation: "open lock file", errno: errno) }
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        while flock(fd, deadline == nil ? LOCK_EX : LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            if code == EWOULDBLOCK, let deadline, Date() < deadline {
                usleep(20_000)
                continue
            }
            close(fd)
            throw .io(path: path, operation: code == EWOULDBLOCK ? "wait \(Int(timeout ?? 0)) s for \(holder) (flock)" : "flock",
                      errno: code)
        }
        self.fd = fd
    }

    deinit {
        close(fd)   // closing drops the lock
    }
}

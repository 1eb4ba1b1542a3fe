import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Stops a build on request (the CLI calls `interrupt()` on SIGINT, SIGTERM or SIGHUP): the host
/// tool running at that moment gets SIGINT, no further tool starts, and the build unwinds through
/// its normal error path, which restores the patched tree.
///
/// Why not rely on the terminal's SIGINT alone: Foundation starts each tool in its own process
/// group, so Ctrl-C reaches Suture but not make; and a signal handler cannot do this work itself
/// (it would need to know the running child, and restoring files is not async-signal-safe).
public final class BuildInterruption: @unchecked Sendable {
    private let lock = NSLock()
    private var processGroup: pid_t?
    private var requested = false

    public init() {}

    public var isInterrupted: Bool { lock.withLock { requested } }

    /// Interrupts the running tool (its whole process group: make's sub-makes and compilers too)
    /// and refuses to start another.
    public func interrupt() {
        lock.withLock {
            requested = true
            if let group = processGroup { kill(-group, SIGINT) }
        }
    }

    /// Records the tool just started (Foundation made it a process group leader); interrupts it at
    /// once if an interrupt came while it was starting.
    func started(_ pid: pid_t) {
        lock.withLock {
            processGroup = pid
            if requested { kill(-pid, SIGINT) }
        }
    }

    func finished() {
        lock.withLock { processGroup = nil }
    }
}

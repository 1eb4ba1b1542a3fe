import CShim
import Glibc

/// Resumes the targets it protects when the process gets SIGINT or SIGTERM (or other signals
/// chosen at install), then lets the signal take its usual course.
///
/// How (and why this way): a signal handler may only do async-signal-safe work, and resuming a
/// target properly is not that: it takes a lock (another thread may be mid-packet on the same
/// socket, and bytes injected into a half-sent packet would corrupt it), waits for replies, and
/// for ptrace must run on the tracer's own thread. So the handler (C, in CShim) only writes the
/// signal number into a self-pipe; a dedicated thread reads it, calls `close()` on every protected
/// target (which resumes and detaches), then restores the previous signal actions and re-raises
/// the signal. A second signal during cleanup skips the cleanup and acts at once, so a hung stub
/// cannot make the process unkillable by Ctrl-C. The guard's thread unblocks the guarded signals
/// for itself, so they are delivered even if every other thread blocks them.
///
/// Signal dispositions are per process, so only one guard can be installed at a time.
public final class SignalGuard: @unchecked Sendable {
    private struct Entry { weak var target: (any MemoryTarget)? }

    public let signals: [Int32]
    private let reraise: Bool
    private let lock = Lock()
    private var entries: [Entry] = []
    private var handled: [Int32] = []
    private var readEnd: Int32 = -1
    private var writeEnd: Int32 = -1
    private var thread: pthread_t = 0
    private var installed = false

    /// Installs the guard.
    /// - Parameter reraise: after cleanup, restore the previous actions and raise the signal again
    ///   (the default: the process ends as it would have). With false the guard stays installed
    ///   and handles the next signal too.
    public static func install(signals: [Int32] = [SIGINT, SIGTERM], reraise: Bool = true) throws -> SignalGuard {
        let guardian = SignalGuard(signals: signals, reraise: reraise)
        try guardian.start()
        return guardian
    }

    private init(signals: [Int32], reraise: Bool) {
        self.signals = signals
        self.reraise = reraise
    }

    deinit { uninstall() }

    /// Resumes `target` (by closing it) when a guarded signal arrives. Held weakly.
    public func protect(_ target: any MemoryTarget) {
        lock.withLock {
            entries.removeAll { $0.target == nil }
            entries.append(Entry(target: target))
        }
    }

    /// Stops protecting `target`.
    public func unprotect(_ target: any MemoryTarget) {
        lock.withLock { entries.removeAll { $0.target == nil || $0.target === target } }
    }

    /// Signals handled so far (when not re-raising), oldest first.
    public var handledSignals: [Int32] { lock.withLock { handled } }

    /// Restores the previous signal actions and ends the guard's thread. Idempotent.
    public func uninstall() {
        let wasInstalled = lock.withLock { () -> Bool in
            defer { installed = false }
            return installed
        }
        guard wasInstalled else { return }
        suture_guard_uninstall()
        Glibc.close(writeEnd)   // the thread's read() returns 0 and it exits
        if pthread_equal(pthread_self(), thread) != 0 { pthread_detach(thread) } else { pthread_join(thread, nil) }
        Glibc.close(readEnd)
    }

    private func start() throws(TargetError) {
        var fds: [Int32] = [-1, -1]
        guard suture_pipe_cloexec(&fds) == 0 else {
            throw .signalGuard(detail: "pipe2: \(SystemCallError.message(errno))")
        }
        readEnd = fds[0]
        writeEnd = fds[1]
        let rc = signals.withUnsafeBufferPointer { suture_guard_install($0.baseAddress, Int32($0.count), writeEnd) }
        guard rc == 0 else {
            let code = errno
            Glibc.close(readEnd)
            Glibc.close(writeEnd)
            throw .signalGuard(detail: code == EBUSY ? "a guard is already installed (one per process)"
                                                     : "sigaction: \(SystemCallError.message(code))")
        }
        installed = true
        let box = Unmanaged.passUnretained(self).toOpaque()
        pthread_create(&thread, nil, { argument in
            Unmanaged<SignalGuard>.fromOpaque(argument!).takeUnretainedValue().run()
            return nil
        }, box)
    }

    /// The guard's thread: waits for a signal number from the pipe, cleans up, re-raises.
    private func run() {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        while true {
            var byte: UInt8 = 0
            let n = Glibc.read(readEnd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            let signal = Int32(byte)
            let targets = lock.withLock { entries.compactMap(\.target) }
            for target in targets { target.close() }
            if reraise {
                // Restore the previous actions first, so the handler never writes to a closed pipe.
                lock.withLock { installed = false }
                suture_guard_uninstall()
                Glibc.close(writeEnd)
                kill(getpid(), signal)
                return
            }
            lock.withLock { handled.append(signal) }
            suture_guard_rearm()
        }
    }
}

import Foundation
import Dispatch
import ELF
import Glibc

/// A running process: ptrace to stop its threads and read their registers, /proc/PID/mem to read
/// and write its memory (writes reach read-only text: the kernel writes with FOLL_FORCE).
///
/// The process is attached only while stopped: `stop()` seizes every thread (re-scanning
/// /proc/PID/task until no new thread appears) and interrupts it; `resume()` detaches them all.
/// A process left seized while running would freeze at its next signal with nobody to pass it on.
/// Memory access does not need the process stopped. Resumed on every exit path: `resume()`,
/// `close()`, deinit, a `SignalGuard`, the watchdog; and if this process dies, the kernel detaches.
public final class ProcessTarget: MemoryTarget, @unchecked Sendable {
    public struct Options: Sendable {
        /// A stop held longer than this is resumed automatically (nil: never).
        public var watchdogSeconds: Double? = 5
        /// How long to wait for each thread to stop after PTRACE_INTERRUPT.
        public var stopTimeout: Double = 2
        public init() {}
    }

    public let pid: Int32
    public let name: String
    public let capabilities: TargetCapabilities = [.stop, .write, .programCounters, .live]

    private let options: Options
    private let syscalls: Syscalls
    private let tracer = TracerThread()
    private let lock = Lock()

    // Guarded by `lock`; `threads` is only touched on the tracer thread.
    private var memory: OpenFile?
    private var explicitlyStopped = false
    private var watchdogTripped = false
    private var stopGeneration: UInt64 = 0
    /// Stopped threads → the signal to hand back on detach (a signal-delivery-stop swallowed it).
    private var threads: [Int32: Int32] = [:]
    private var stoppedContexts: [ExecutionContext] = []

    public convenience init(pid: Int32, options: Options = Options()) throws {
        try self.init(pid: pid, options: options, syscalls: Syscalls())
    }

    init(pid: Int32, options: Options, syscalls: Syscalls) throws(TargetError) {
        self.pid = pid
        self.name = TargetSpec.process(pid: pid).description
        self.options = options
        self.syscalls = syscalls
        let status = Self.status(of: pid)
        guard let status else { tracer.shutdown(); throw .noSuchProcess(pid: pid) }
        if status.state == "Z" || status.state == "X" {
            tracer.shutdown()
            throw .processExited(pid: pid, detail: "it is a zombie (state \(status.state))")
        }
        if let tracerPid = status.tracerPid, tracerPid != 0 {
            tracer.shutdown()
            throw .alreadyTraced(pid: pid, tracer: tracerPid)
        }
        do {
            memory = try OpenFile(path: "/proc/\(pid)/mem", access: .readWriteIfPermitted, targetName: name, syscalls: syscalls)
        } catch {
            tracer.shutdown()
            if case let .systemCall(_, _, _, code) = error, code == EACCES || code == EPERM {
                throw .permissionDenied(pid: pid, detail: "opening /proc/\(pid)/mem: \(SystemCallError.message(code)); \(Self.ptraceScopeNote)")
            }
            if case let .systemCall(_, _, _, code) = error, code == ENOENT { throw .noSuchProcess(pid: pid) }
            if case let .systemCall(_, _, _, code) = error, code == ESRCH, Self.status(of: pid) != nil {
                // The process exists but has no user memory: a kernel thread, which the kernel
                // refuses to ptrace even to root.
                throw .permissionDenied(pid: pid, detail: "it is a kernel thread (no user memory; ptrace refuses kernel threads even to root); \(Self.ptraceScopeNote)")
            }
            throw error
        }
    }

    deinit {
        close()
        tracer.shutdown()
    }

    // MARK: MemoryTarget

    /// The executable's path (/proc/PID/exe) and its GNU build-id.
    public func identity() throws -> TargetIdentity {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/\(pid)/exe", &buffer, buffer.count - 1)
        guard n > 0 else {
            throw processGoneOr(TargetError.system(name, "readlink /proc/\(pid)/exe", SystemCallError(call: "readlink", code: errno)))
        }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // /proc/PID/exe opens the very file the process runs, even if it was replaced or deleted.
        do {
            let buildID = try ELFFile(path: "/proc/\(pid)/exe").buildID()
            return TargetIdentity(kind: .process, buildID: buildID.map { Hex.bytes($0, separator: "") }, path: path)
        } catch {
            throw processGoneOr(.elf(error))
        }
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            let file = try usableMemory()
            do throws(TargetError) { return try file.read(offset: address, count: count, address: address) } catch {
                throw processGoneOr(error)
            }
        }
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        try lock.withLock { () throws(TargetError) in
            let file = try usableMemory()
            do throws(TargetError) { try file.write(offset: address, bytes: bytes, address: address) } catch {
                throw processGoneOr(error)
            }
        }
    }

    public func stop() throws {
        try lock.withLock { () throws(TargetError) in
            _ = try usableMemory()
            guard !explicitlyStopped else { throw .alreadyStopped(target: name) }
            stoppedContexts = try tracer.perform { () throws(TargetError) -> [ExecutionContext] in
                try attachAll()
                do throws(TargetError) { return try readProgramCounters() } catch {
                    detachAll()
                    throw error
                }
            }
            explicitlyStopped = true
            watchdogTripped = false
            stopGeneration &+= 1
            armWatchdog(generation: stopGeneration)
        }
    }

    public func resume() throws {
        lock.withLock {
            watchdogTripped = false
            guard explicitlyStopped else { return }
            explicitlyStopped = false
            tracer.run { detachAll() }
        }
    }

    /// The program counters read when the threads stopped (re-read, so a thread that died since is
    /// noticed). Needs `stop()` first.
    public func programCounters() throws -> [ExecutionContext] {
        try lock.withLock { () throws(TargetError) -> [ExecutionContext] in
            _ = try usableMemory()
            guard explicitlyStopped else { throw .notStopped(target: name, operation: "programCounters") }
            return try tracer.perform { () throws(TargetError) in try readProgramCounters() }
        }
    }

    public func close() {
        lock.withLock {
            if explicitlyStopped {
                explicitlyStopped = false
                tracer.run { detachAll() }
            }
            memory = nil
        }
    }

    // MARK: Internals (lock held)

    private func usableMemory() throws(TargetError) -> OpenFile {
        guard let memory else { throw .notSupported(target: name, operation: "use after close()", reason: "the target is closed") }
        if watchdogTripped { throw .watchdogResumed(target: name, seconds: options.watchdogSeconds ?? 0) }
        return memory
    }

    /// A failure on a process that has meanwhile exited becomes `.processExited`.
    private func processGoneOr(_ error: TargetError) -> TargetError {
        if let status = Self.status(of: pid), status.state != "Z", status.state != "X" { return error }
        return .processExited(pid: pid, detail: "while accessing it (\(error))")
    }

    private func armWatchdog(generation: UInt64) {
        guard let seconds = options.watchdogSeconds else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [weak self] in
            guard let self else { return }
            self.lock.withLock {
                guard self.explicitlyStopped, generation == self.stopGeneration else { return }
                self.explicitlyStopped = false
                self.watchdogTripped = true
                self.tracer.run { self.detachAll() }
            }
        }
    }

    // MARK: ptrace (tracer thread only)

    /// Seizes and interrupts every thread, re-scanning /proc/PID/task until a scan finds no new
    /// thread (a thread can create another between the scan and its own interrupt).
    private func attachAll() throws(TargetError) {
        threads = [:]
        for _ in 0..<1000 {
            let fresh = try listTasks().filter { threads[$0] == nil }
            if fresh.isEmpty { return }
            var seized: [Int32] = []
            for tid in fresh {
                do {
                    try syscalls.ptrace(PtraceRequest.seize, tid)
                    seized.append(tid)
                } catch {
                    if error.code == ESRCH && tid != pid { continue }   // the thread exited meanwhile
                    // The kernel refuses to attach to a thread that is exiting (EPERM): it is not
                    // running user code any more, so it cannot be inside a hunk. Skip it.
                    if error.code == EPERM && tid != pid && Self.isExiting(pid: pid, tid: tid) { continue }
                    let failure = ptraceFailure(error, tid: tid)
                    stopAndDetach(seized)
                    detachAll()
                    throw failure
                }
            }
            for tid in seized {
                do { try syscalls.ptrace(PtraceRequest.interrupt, tid) } catch { }  // ESRCH: waitpid reports the exit
            }
            var failure: TargetError?
            for tid in seized {
                do throws(TargetError) {
                    if let signal = try waitForStop(tid) { threads[tid] = signal }
                    else if tid == pid { failure = failure ?? .processExited(pid: pid, detail: "its main thread exited while stopping it") }
                } catch {
                    failure = failure ?? error
                }
            }
            if let failure {
                detachAll()
                throw failure
            }
        }
        detachAll()
        throw .notSupported(target: name, operation: "stop", reason: "threads kept appearing through 1000 scans of /proc/\(pid)/task")
    }

    /// Waits for a seized, interrupted thread to stop. Returns the signal to re-inject on detach
    /// (0 for the interrupt's own stop), or nil if the thread exited instead.
    private func waitForStop(_ tid: Int32) throws(TargetError) -> Int32? {
        let deadline = Deadline.after(seconds: options.stopTimeout)
        var pause: UInt32 = 10
        var spins = 0
        while true {
            let result: (pid: pid_t, status: Int32)
            do { result = try syscalls.waitpid(tid, options: WNOHANG | Self.waitAll) } catch {
                if error.code == ECHILD { return nil }   // gone (and reaped)
                throw .system(name, "wait for thread \(tid) to stop", error)
            }
            if result.pid == tid {
                let status = result.status
                if status & 0xff == 0x7f {
                    let signal = (status >> 8) & 0xff
                    let event = status >> 16
                    // PTRACE_EVENT_STOP (128): the interrupt (SIGTRAP) or a group-stop (SIGSTOP…),
                    // nothing to re-inject. Event 0: a signal-delivery-stop; the signal is held
                    // back and must be handed back on detach.
                    return event == 0 ? signal : 0
                }
                return nil   // exited or killed
            }
            if deadline.hasPassed {
                throw .timeout(target: name, waitingFor: "thread \(tid) to stop (state \(Self.status(of: tid)?.state ?? "?"))",
                               seconds: options.stopTimeout)
            }
            // A stop takes microseconds: yield the CPU (the tracee may need it to get there) for the
            // first polls, then back off with sleeps.
            if spins < 64 {
                spins += 1
                sched_yield()
            } else {
                usleep(pause)
                pause = min(pause * 2, 1000)
            }
        }
    }

    /// Seized threads must be stopped before they can be detached.
    private func stopAndDetach(_ seized: [Int32]) {
        for tid in seized { _ = try? syscalls.ptrace(PtraceRequest.interrupt, tid) }
        for tid in seized {
            if let signal = try? waitForStop(tid) { threads[tid] = signal }
        }
    }

    private func detachAll() {
        for (tid, signal) in threads {
            do {
                try syscalls.ptrace(PtraceRequest.detach, tid, address: nil, data: UnsafeMutableRawPointer(bitPattern: Int(signal)))
            } catch {
                // ESRCH: the thread died meanwhile (killed while stopped). Its exit is reported to
                // the tracer, and it lingers as a zombie until collected: collect it.
                _ = try? syscalls.waitpid(tid, options: WNOHANG | Self.waitAll)
            }
        }
        threads = [:]
    }

    private func readProgramCounters() throws(TargetError) -> [ExecutionContext] {
        var contexts: [ExecutionContext] = []
        var registers = [UInt8](repeating: 0, count: 1024)
        for tid in threads.keys.sorted() {
            let failure: SystemCallError? = registers.withUnsafeMutableBytes { raw in
                var vector = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
                do throws(SystemCallError) {
                    try syscalls.ptrace(PtraceRequest.getRegisterSet, tid, address: UnsafeMutableRawPointer(bitPattern: 1 /* NT_PRSTATUS */),
                                        data: &vector)
                    return nil
                } catch { return error }
            }
            if let failure {
                if failure.code == ESRCH {
                    if tid == pid || Self.status(of: pid) == nil {
                        throw .processExited(pid: pid, detail: "reading the registers of thread \(tid)")
                    }
                    threads[tid] = nil
                    continue
                }
                throw .system(name, "read the registers of thread \(tid)", failure)
            }
            let pc = registers.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: Self.programCounterOffset, as: UInt64.self) }
            contexts.append(ExecutionContext(id: String(tid), programCounter: pc))
        }
        return contexts
    }

    /// Where the program counter sits in NT_PRSTATUS: `rip` in x86-64's user_regs_struct,
    /// `pc` after x0…x30 and sp in arm64's user_pt_regs.
    #if arch(arm64)
    static let programCounterOffset = 32 * 8
    #else
    static let programCounterOffset = 16 * 8
    #endif

    /// `__WALL`: wait for clone threads too.
    static let waitAll: Int32 = 0x4000_0000

    private func listTasks() throws(TargetError) -> [Int32] {
        guard let dir = opendir("/proc/\(pid)/task") else {
            throw errno == ENOENT ? .processExited(pid: pid, detail: "/proc/\(pid)/task is gone")
                                  : .system(name, "list threads", SystemCallError(call: "opendir", code: errno))
        }
        defer { closedir(dir) }
        var tids: [Int32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let tid = Int32(name) { tids.append(tid) }
        }
        if tids.isEmpty { throw .processExited(pid: pid, detail: "it has no threads left") }
        return tids
    }

    /// Whether a thread is gone or on its way out: no stat file, a zombie/dead state, or PF_EXITING
    /// (0x4) in the flags field of /proc/PID/task/TID/stat.
    static func isExiting(pid: Int32, tid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is the state, fields[6] the flags (field 9 of stat(5)).
        guard fields.count > 6 else { return true }
        if fields[0] == "Z" || fields[0] == "X" || fields[0] == "x" { return true }
        return (UInt64(fields[6]) ?? 0) & 0x4 != 0
    }

    private func ptraceFailure(_ error: SystemCallError, tid: Int32) -> TargetError {
        switch error.code {
        case EPERM:
            if let tracerPid = Self.status(of: tid)?.tracerPid, tracerPid != 0 {
                return .alreadyTraced(pid: pid, tracer: tracerPid)
            }
            return .permissionDenied(pid: pid, detail: "PTRACE_SEIZE of thread \(tid): \(SystemCallError.message(EPERM)); \(Self.ptraceScopeNote)")
        case ESRCH:
            return .processExited(pid: pid, detail: "PTRACE_SEIZE of thread \(tid) found no such process")
        default:
            return .system(name, "attach thread \(tid)", error)
        }
    }

    /// What the Yama LSM allows, for permission errors.
    static var ptraceScopeNote: String {
        let path = "/proc/sys/kernel/yama/ptrace_scope"
        guard let file = try? OpenFile(path: path, access: .readOnly, targetName: path, syscalls: Syscalls()),
              let bytes = try? file.read(offset: 0, count: 1, address: 0), let value = bytes.first else {
            return "Yama is not active (no \(path)): tracing needs the same user or CAP_SYS_PTRACE"
        }
        let meaning: String
        switch value {
        case UInt8(ascii: "0"): meaning = "classic: same user or CAP_SYS_PTRACE"
        case UInt8(ascii: "1"): meaning = "restricted: only descendants, unless run as root or with CAP_SYS_PTRACE"
        case UInt8(ascii: "2"): meaning = "admin-only: CAP_SYS_PTRACE needed"
        case UInt8(ascii: "3"): meaning = "no attach at all: ptrace is disabled until reboot"
        default: meaning = "unknown value"
        }
        return "kernel.yama.ptrace_scope = \(Character(Unicode.Scalar(value))) (\(meaning))"
    }

    struct Status { var state: Character; var tracerPid: Int32? }

    /// State letter and TracerPid from /proc/PID/status, or nil when there is no such process.
    static func status(of pid: Int32) -> Status? {
        guard let file = try? OpenFile(path: "/proc/\(pid)/status", access: .readOnly, targetName: "pid:\(pid)", syscalls: Syscalls()) else {
            return nil
        }
        var text: [UInt8] = []
        var offset: UInt64 = 0
        while text.count < 1 << 16 {
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = (try? chunk.withUnsafeMutableBytes { (raw) throws(SystemCallError) -> Int in
                try file.syscalls.preadFully(file.fd, into: raw, offset: offset)
            }) ?? 0
            text += chunk[0..<n]
            offset += UInt64(n)
            if n < 4096 { break }
        }
        var state: Character = "?"
        var tracer: Int32?
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
            if line.hasPrefix("State:") {
                state = line.dropFirst(6).first { $0 != " " && $0 != "\t" } ?? "?"
            } else if line.hasPrefix("TracerPid:") {
                tracer = Int32(String(line.dropFirst(10)).trimmingWhitespace())
            }
        }
        return Status(state: state, tracerPid: tracer)
    }
}

import Dispatch
import CShim
import Glibc

/// Every system call the targets make, as a table of plain functions: the one seam between Suture and
/// the kernel. Live code uses `SyscallTable.system`; tests replace entries to inject `EINTR`, short
/// transfers or failures that a real kernel produces only rarely.
///
/// Each entry returns what the C call returns, except that a failure comes back as `-errno` (the
/// kernel's own convention), so a mock never has to touch the thread's `errno`.
struct SyscallTable: Sendable {
    /// open(2) with `O_CLOEXEC` added by the caller.
    var open: @Sendable (_ path: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t) -> Int32
    /// close(2). Never retried: on Linux the descriptor is gone even when it reports `EINTR`.
    var close: @Sendable (_ fd: Int32) -> Int32
    /// pread(2). `offset` is the raw 64-bit pattern: /proc/PID/mem, /dev/kmem and /proc/kcore accept
    /// "negative" (unsigned) offsets for kernel addresses.
    var pread: @Sendable (_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ offset: Int64) -> Int
    /// pwrite(2).
    var pwrite: @Sendable (_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, _ offset: Int64) -> Int
    /// read(2) on a socket or pipe.
    var read: @Sendable (_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int
    /// write(2) on a socket or pipe.
    var write: @Sendable (_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int
    /// poll(2) on one descriptor; returns the `revents` (0 on timeout).
    var poll: @Sendable (_ fd: Int32, _ events: Int16, _ timeoutMilliseconds: Int32) -> Int32
    /// fsync(2).
    var fsync: @Sendable (_ fd: Int32) -> Int32
    /// socket(2).
    var socket: @Sendable (_ domain: Int32, _ type: Int32, _ proto: Int32) -> Int32
    /// connect(2).
    var connect: @Sendable (_ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t) -> Int32
    /// setsockopt(2) with an `Int32` value.
    var setIntOption: @Sendable (_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Int32
    /// getsockopt(SO_ERROR): the pending error of a non-blocking connect.
    var socketError: @Sendable (_ fd: Int32) -> Int32
    /// ptrace(2) (through the C shim: glibc's ptrace is variadic).
    var ptrace: @Sendable (_ request: Int32, _ pid: pid_t, _ address: UnsafeMutableRawPointer?,
                           _ data: UnsafeMutableRawPointer?) -> Int
    /// waitpid(2); `status` receives the wait status.
    var waitpid: @Sendable (_ pid: pid_t, _ status: UnsafeMutablePointer<Int32>, _ options: Int32) -> pid_t

    /// The real kernel.
    static let system = SyscallTable(
        open: { path, flags, mode in result(Glibc.open(path, flags, mode)) },
        close: { fd in result(Glibc.close(fd)) },
        pread: { fd, buffer, count, offset in result(Glibc.pread(fd, buffer, count, off_t(offset))) },
        pwrite: { fd, buffer, count, offset in result(Glibc.pwrite(fd, buffer, count, off_t(offset))) },
        read: { fd, buffer, count in result(Glibc.read(fd, buffer, count)) },
        write: { fd, buffer, count in result(Glibc.write(fd, buffer, count)) },
        poll: { fd, events, timeout in
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let r = Glibc.poll(&entry, 1, timeout)
            return r < 0 ? -errno : (r == 0 ? 0 : Int32(entry.revents))
        },
        fsync: { fd in result(Glibc.fsync(fd)) },
        socket: { domain, type, proto in result(Glibc.socket(domain, type, proto)) },
        connect: { fd, address, length in result(Glibc.connect(fd, address, length)) },
        setIntOption: { fd, level, name, value in
            var v = value
            return result(Glibc.setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)))
        },
        socketError: { fd in
            var value: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            let r = Glibc.getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length)
            return r < 0 ? -errno : value
        },
        ptrace: { request, pid, address, data in
            errno = 0
            let r = suture_ptrace(request, pid, address, data)
            return r == -1 && errno != 0 ? -Int(errno) : r
        },
        waitpid: { pid, status, options in result(Glibc.waitpid(pid, status, options)) }
    )

    private static func result(_ r: Int32) -> Int32 { r < 0 ? -errno : r }
    private static func result(_ r: Int) -> Int { r < 0 ? -Int(errno) : r }
}

/// A failed system call: which one and the `errno` it reported.
struct SystemCallError: Error, CustomStringConvertible, Sendable, Equatable {
    var call: String
    var code: Int32
    var description: String { "\(call): \(Self.message(code)) (errno \(code))" }

    static func message(_ code: Int32) -> String {
        guard let text = strerror(code) else { return "error \(code)" }
        return String(cString: text)
    }
}

/// The robust forms built on a `SyscallTable`: `EINTR` is retried, short transfers are continued,
/// sockets wait with `poll` against a deadline. Everything above this file calls these.
struct Syscalls: Sendable {
    var table: SyscallTable
    init(_ table: SyscallTable = .system) { self.table = table }

    /// open(2) with `O_CLOEXEC`, retrying `EINTR`.
    func open(_ path: String, flags: Int32, mode: mode_t = 0) throws(SystemCallError) -> Int32 {
        while true {
            let fd = path.withCString { table.open($0, flags | O_CLOEXEC, mode) }
            if fd >= 0 { return fd }
            if fd == -EINTR { continue }
            throw SystemCallError(call: "open", code: -fd)
        }
    }

    /// close(2); errors are ignored because nothing useful can follow them.
    func close(_ fd: Int32) { _ = table.close(fd) }

    /// Reads up to `buffer.count` bytes at `offset`, continuing after short reads and `EINTR`.
    /// Returns how many bytes were read: less than asked only at end of file (a read returning 0).
    func preadFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: UInt64) throws(SystemCallError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = table.pread(fd, buffer.baseAddress! + done, buffer.count - done,
                                Int64(bitPattern: offset &+ UInt64(done)))
            if n > 0 { done += n; continue }
            if n == 0 { break }
            if n == -Int(EINTR) { continue }
            throw SystemCallError(call: "pread", code: Int32(-n))
        }
        return done
    }

    /// Writes `bytes` at `offset`, continuing after short writes and `EINTR`. Returns how many bytes
    /// were written: less than asked only when a write made no progress (it returned 0), which is
    /// reported rather than looped on for ever.
    func pwriteFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, offset: UInt64) throws(SystemCallError) -> Int {
        var done = 0
        while done < bytes.count {
            let n = table.pwrite(fd, bytes.baseAddress! + done, bytes.count - done,
                                 Int64(bitPattern: offset &+ UInt64(done)))
            if n > 0 { done += n; continue }
            if n == 0 { break }
            if n == -Int(EINTR) { continue }
            throw SystemCallError(call: "pwrite", code: Int32(-n))
        }
        return done
    }

    /// fsync(2), retrying `EINTR`.
    func fsync(_ fd: Int32) throws(SystemCallError) {
        while true {
            let r = table.fsync(fd)
            if r == 0 { return }
            if r == -EINTR { continue }
            throw SystemCallError(call: "fsync", code: -r)
        }
    }

    /// Waits until `fd` is ready for `events` or the deadline passes. Returns false on timeout.
    func wait(_ fd: Int32, for events: Int16, until deadline: Deadline) throws(SystemCallError) -> Bool {
        while true {
            let r = table.poll(fd, events, deadline.remainingMilliseconds)
            if r > 0 {
                if r & Int32(POLLNVAL) != 0 { throw SystemCallError(call: "poll", code: EBADF) }
                return true
            }
            if r == 0 {
                if deadline.hasPassed { return false }
                continue
            }
            if r == -EINTR { continue }
            throw SystemCallError(call: "poll", code: -r)
        }
    }

    /// Sends all of `bytes` on a non-blocking socket, waiting for room as needed.
    /// Returns false when the deadline passed first.
    func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, until deadline: Deadline) throws(SystemCallError) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = table.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n > 0 { done += n; continue }
            if n == -Int(EINTR) { continue }
            if n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK) || n == 0 {
                guard try wait(fd, for: Int16(POLLOUT), until: deadline) else { return false }
                continue
            }
            throw SystemCallError(call: "write", code: Int32(-n))
        }
        return true
    }

    /// Receives what is available on a non-blocking socket, waiting until the deadline for something.
    /// Returns the byte count, 0 at end of stream, nil on timeout.
    ///
    /// With `spinning` > 0, an empty socket is read again in a loop for up to that many nanoseconds
    /// before the thread sleeps in poll: waking a sleeping thread costs this host 100 µs and more,
    /// and inside a pause window every wait is a few hundred µs at most.
    func receive(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, until deadline: Deadline,
                 spinning: UInt64 = 0) throws(SystemCallError) -> Int? {
        let spinEnd = spinning > 0 ? DispatchTime.now().uptimeNanoseconds + spinning : 0
        while true {
            let n = table.read(fd, buffer.baseAddress!, buffer.count)
            if n >= 0 { return n }
            if n == -Int(EINTR) { continue }
            if n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK) {
                if spinning > 0 && DispatchTime.now().uptimeNanoseconds < spinEnd { continue }
                guard try wait(fd, for: Int16(POLLIN), until: deadline) else { return nil }
                continue
            }
            throw SystemCallError(call: "read", code: Int32(-n))
        }
    }

    /// ptrace(2); returns the call's result (PEEK requests return data) or throws its errno.
    @discardableResult
    func ptrace(_ request: Int32, _ pid: pid_t, address: UnsafeMutableRawPointer? = nil,
                data: UnsafeMutableRawPointer? = nil) throws(SystemCallError) -> Int {
        let r = table.ptrace(request, pid, address, data)
        if r < 0 { throw SystemCallError(call: "ptrace(\(PtraceRequest.name(request)))", code: Int32(-r)) }
        return r
    }

    /// waitpid(2), retrying `EINTR`. Returns (pid, status); pid is 0 with `WNOHANG` when nothing changed.
    func waitpid(_ pid: pid_t, options: Int32) throws(SystemCallError) -> (pid: pid_t, status: Int32) {
        var status: Int32 = 0
        while true {
            let r = table.waitpid(pid, &status, options)
            if r >= 0 { return (r, status) }
            if r == -EINTR { continue }
            throw SystemCallError(call: "waitpid", code: -r)
        }
    }
}

/// ptrace request numbers (linux/ptrace.h). Glibc's enum does not import as plain integers.
enum PtraceRequest {
    static let detach: Int32 = 17
    static let getRegisterSet: Int32 = 0x4204
    static let seize: Int32 = 0x4206
    static let interrupt: Int32 = 0x4207

    static func name(_ request: Int32) -> String {
        switch request {
        case detach: return "PTRACE_DETACH"
        case getRegisterSet: return "PTRACE_GETREGSET"
        case seize: return "PTRACE_SEIZE"
        case interrupt: return "PTRACE_INTERRUPT"
        default: return "request \(request)"
        }
    }
}

/// A point in monotonic time after which an operation gives up.
struct Deadline: Sendable {
    /// Nanoseconds on CLOCK_MONOTONIC.
    var nanoseconds: UInt64

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    static func after(seconds: Double) -> Deadline {
        Deadline(nanoseconds: now() &+ UInt64(max(0, seconds) * 1e9))
    }

    var hasPassed: Bool { Deadline.now() >= nanoseconds }

    /// For poll(2): at least 1 ms while time remains (so a nearly-due deadline still waits a little),
    /// 0 once it has passed.
    var remainingMilliseconds: Int32 {
        let now = Deadline.now()
        guard nanoseconds > now else { return 0 }
        let ms = (nanoseconds - now + 999_999) / 1_000_000
        return Int32(clamping: ms)
    }
}

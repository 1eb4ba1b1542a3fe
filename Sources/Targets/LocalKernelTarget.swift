import CShim
import Glibc

/// The kernel Suture runs on, through `/dev/suture` (the helper module in `kmod/`).
///
/// Reads go through the module's READ ioctl, which refuses anything but kernel or module text.
/// Each write is one compare-and-swap the module performs under stop_machine, after its own stack
/// check: the expected bytes are the ones this target last read there (the engine reads before
/// it writes), so a change in between is refused by the kernel, not just by Suture.
///
/// No `.stop`: the module stops the world per write, not across the engine's whole sequence. It
/// offers `.compareAndSwap` instead: one write of up to 16 bytes, all at once with every CPU held,
/// after its own check that no task's saved instruction pointer lies inside the range, and only if
/// the bytes are still the ones the engine checked.
public final class LocalKernelTarget: MemoryTarget, @unchecked Sendable {
    public static let defaultDevicePath = "/dev/suture"
    public static let maxWrite = Int(SUTURE_KMOD_MAX_WRITE)
    public static let maxRead = Int(SUTURE_KMOD_MAX_READ)

    public let name: String
    public let devicePath: String
    public let capabilities: TargetCapabilities = [.write, .live, .compareAndSwap]
    public var compareAndSwapLimit: Int { Self.maxWrite }
    private let notesPath: String
    private let lock = Lock()
    private var fd: Int32
    /// The bytes of the most recent reads, newest last: the expectations of the next write.
    private var recentReads: [(address: UInt64, bytes: [UInt8])] = []
    /// What the module reported for the last successful write.
    public private(set) var lastWrite: KmodWriteReport?

    /// What the module measured and said for one compare-and-swap.
    public struct KmodWriteReport: Sendable, Hashable {
        public var address: UInt64
        public var expected: [UInt8]
        public var replacement: [UInt8]
        /// The bytes the module found (equal to `replacement` after a write).
        public var found: [UInt8]
        /// The whole stop_machine() call, the leader's stopped section and its stack walk, in ns.
        public var stopMachineNanoseconds: UInt64
        public var stoppedNanoseconds: UInt64
        public var walkNanoseconds: UInt64
        public var tasksWalked: Int
        public var message: String
    }

    /// Opens `/dev/suture`; fails naming the device (and `suture kmod load`) when it is missing.
    public init(devicePath: String = LocalKernelTarget.defaultDevicePath, notesPath: String = "/sys/kernel/notes") throws {
        self.devicePath = devicePath
        self.notesPath = notesPath
        self.name = "local (\(devicePath))"
        let opened = Glibc.open(devicePath, O_RDWR | O_CLOEXEC)
        guard opened >= 0 else {
            let code = errno
            if code == ENOENT {
                throw TargetError.notSupported(target: name, operation: "open",
                                               reason: "\(devicePath) does not exist: the helper module is not loaded (run `suture kmod load`)")
            }
            throw TargetError.systemCall(target: name, operation: "open \(devicePath)", call: "open", errno: code)
        }
        fd = opened
        let version = suture_kmod_ioctl(fd, suture_kmod_ioc_version(), nil)
        guard version == SUTURE_KMOD_ABI_VERSION else {
            let code = errno
            Glibc.close(fd)
            throw TargetError.protocolViolation(target: name, context: "SUTURE_IOC_VERSION",
                                                expected: "ABI \(SUTURE_KMOD_ABI_VERSION)",
                                                found: version < 0 ? "error \(code) (\(String(cString: strerror(code))))" : "ABI \(version)")
        }
    }

    deinit { close() }

    /// The running kernel: release from uname(2), build-id from /sys/kernel/notes.
    public func identity() throws -> TargetIdentity {
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var identity = TargetIdentity(kind: .kernel, release: release)
        let file = Glibc.open(notesPath, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else {
            throw TargetError.systemCall(target: name, operation: "read the kernel's build-id from \(notesPath)", call: "open", errno: errno)
        }
        defer { Glibc.close(file) }
        var notes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(file, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TargetError.systemCall(target: name, operation: "read \(notesPath)", call: "read", errno: errno)
            }
            if n == 0 { break }
            notes.append(contentsOf: chunk[0..<n])
        }
        identity.buildID = MemoryNotes.buildID(in: try MemoryNotes.parse(notes, source: notesPath, address: 0))
        return identity
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            var result = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let length = min(Self.maxRead, count - done)
                let at = address &+ UInt64(done)
                var request = suture_kmod_read()
                request.address = at
                request.length = UInt32(length)
                let rc = result.withUnsafeMutableBytes { buffer -> Int32 in
                    request.buffer = UInt64(UInt(bitPattern: buffer.baseAddress! + done))
                    return suture_kmod_ioctl(try! openFD(), suture_kmod_ioc_read(), &request)
                }
                if rc != 0 {
                    let code = errno
                    let message = Self.string(&request.message)
                    if code == EFAULT {
                        throw .unmappedAddress(target: name, address: at, count: length, detail: message.isEmpty ? "refused by the module" : message)
                    }
                    throw .systemCall(target: name, operation: "read \(length) bytes at 0x\(String(at, radix: 16))"
                                      + (message.isEmpty ? "" : " (\(message))"), call: "ioctl(SUTURE_IOC_READ)", errno: code)
                }
                done += length
            }
            recentReads.append((address, result))
            if recentReads.count > 16 { recentReads.removeFirst() }
            return result
        }
    }

    /// Writes through the module's compare-and-swap, expecting what this target last read there
    /// (or reading it now when no read covers the range).
    public func write(at address: UInt64, bytes: [UInt8]) throws {
        let expected = try cachedExpectation(at: address, count: bytes.count) ?? read(at: address, count: bytes.count)
        lastWrite = try compareAndSwap(at: address, expected: expected, replacement: bytes)
    }

    /// One compare-and-swap per block, expecting `block.expected` (or, without it, what this
    /// target last read there); the module's `found` bytes are the read-back.
    public func write(_ blocks: [MemoryBlock]) throws -> [[UInt8]] {
        var back: [[UInt8]] = []
        for block in blocks {
            let expected = try block.expected ?? cachedExpectation(at: block.address, count: block.bytes.count)
                ?? read(at: block.address, count: block.bytes.count)
            let report = try compareAndSwap(at: block.address, expected: expected, replacement: block.bytes)
            lastWrite = report
            back.append(report.found)
        }
        return back
    }

    private func cachedExpectation(at address: UInt64, count: Int) -> [UInt8]? {
        lock.withLock { () -> [UInt8]? in
            for read in recentReads.reversed() where address >= read.address
                && address &+ UInt64(count) <= read.address &+ UInt64(read.bytes.count) {
                let start = Int(address - read.address)
                return Array(read.bytes[start..<(start + count)])
            }
            return nil
        }
    }

    /// One compare-and-swap of up to 16 bytes of text, under stop_machine, by the module.
    /// Throws `.protocolViolation` naming expected and found bytes when they differ (EILSEQ), and
    /// `.notSupported` with the module's reason when a task is inside the range (EBUSY/EAGAIN).
    @discardableResult
    public func compareAndSwap(at address: UInt64, expected: [UInt8], replacement: [UInt8]) throws -> KmodWriteReport {
        guard expected.count == replacement.count, (1...Self.maxWrite).contains(expected.count) else {
            throw TargetError.notSupported(target: name, operation: "write \(replacement.count) bytes at 0x\(String(address, radix: 16))",
                                           reason: "the module swaps 1 to \(Self.maxWrite) bytes with as many expected bytes (got \(expected.count))")
        }
        return try lock.withLock { () throws(TargetError) -> KmodWriteReport in
            var request = suture_kmod_cas()
            request.address = address
            request.length = UInt32(expected.count)
            withUnsafeMutableBytes(of: &request.expected) { $0.copyBytes(from: expected) }
            withUnsafeMutableBytes(of: &request.replacement) { $0.copyBytes(from: replacement) }
            let rc = suture_kmod_ioctl(try openFD(), suture_kmod_ioc_cas(), &request)
            let code = errno
            let found = withUnsafeBytes(of: &request.found) { Array($0.prefix(expected.count)) }
            let message = Self.string(&request.message)
            let at = "0x\(String(address, radix: 16))"
            if rc != 0 {
                switch code {
                case EILSEQ:
                    throw .protocolViolation(target: name, context: "compare-and-swap at \(at) (\(message))",
                                             expected: Self.hex(expected), found: Self.hex(found))
                case EBUSY, EAGAIN:
                    throw .busy(target: name, address: address, detail: message)
                case EFAULT:
                    throw .unmappedAddress(target: name, address: address, count: expected.count, detail: message)
                default:
                    throw .systemCall(target: name, operation: "compare-and-swap at \(at)" + (message.isEmpty ? "" : " (\(message))"),
                                      call: "ioctl(SUTURE_IOC_CAS)", errno: code)
                }
            }
            // Reads cached before the write are stale now.
            recentReads.removeAll()
            return KmodWriteReport(address: address, expected: expected, replacement: replacement, found: found,
                                   stopMachineNanoseconds: request.stop_machine_ns, stoppedNanoseconds: request.stopped_ns,
                                   walkNanoseconds: request.walk_ns, tasksWalked: Int(request.tasks_walked), message: message)
        }
    }

    public func stop() throws {
        throw TargetError.notSupported(target: name, operation: "stop",
                                       reason: "the module stops every CPU only inside each compare-and-swap")
    }

    public func resume() throws {}

    public func programCounters() throws -> [ExecutionContext] {
        throw TargetError.notSupported(target: name, operation: "programCounters",
                                       reason: "the module checks every task's stack itself, inside each write")
    }

    public func close() {
        lock.withLock {
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }

    private func openFD() throws(TargetError) -> Int32 {
        guard fd >= 0 else { throw .notSupported(target: name, operation: "use after close()", reason: "the target is closed") }
        return fd
    }

    private static func string<T>(_ tuple: inout T) -> String {
        withUnsafeBytes(of: &tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    private static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
    }
}

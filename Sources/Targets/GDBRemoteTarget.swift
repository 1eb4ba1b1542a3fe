import Dispatch
import ELF
import Glibc
import Symbols

/// A kernel under QEMU's gdbstub, or a process under gdbserver, through the GDB Remote Serial
/// Protocol over TCP.
///
/// Run state: connecting stops the target (QEMU pauses the VM; gdbserver --attach stops the
/// process); after the handshake the target is resumed at once, so nothing stays frozen while a
/// caller thinks. `stop()`/`resume()` hold it stopped across several operations; a read or write
/// while running stops it just for that operation ("any byte while running stops the VM", so there
/// is no reading without stopping). Every exit path resumes it: errors inside an operation,
/// `close()`, deinit, a `SignalGuard`, and a watchdog that resumes a stop held longer than
/// `Options.watchdogSeconds`.
///
/// Thread-safe: one lock serializes every use of the connection.
public final class GDBRemoteTarget: MemoryTarget, @unchecked Sendable {
    public struct Options: Sendable {
        /// Seconds to wait for each reply.
        public var timeout: Double = 5
        /// A stop held longer than this is resumed automatically (nil: never).
        public var watchdogSeconds: Double? = 5
        /// `m` requests kept in flight for large reads (LAB.md: 16 to 64 reach ~110 MB/s on QEMU).
        public var pipelineWindow: Int = 32
        /// The value of `phys_base` when already known (skips reading it), for the PTI fallback.
        public var physBase: UInt64?
        /// Resume right after connecting (QEMU and gdbserver leave the target stopped).
        public var resumeAfterConnect: Bool = true
        public init() {}
    }

    /// Where the program counter sits in the `g` reply.
    struct RegisterLayout: Sendable, Equatable {
        var architecture: String
        var pcOffset: Int
        var pcSize: Int
        static let x86_64 = RegisterLayout(architecture: "i386:x86-64", pcOffset: 128, pcSize: 8)
        static let i386 = RegisterLayout(architecture: "i386", pcOffset: 32, pcSize: 4)
        static let aarch64 = RegisterLayout(architecture: "aarch64", pcOffset: 32 * 8, pcSize: 8)
    }

    public let name: String
    public let capabilities: TargetCapabilities = [.stop, .write, .programCounters, .live]
    /// The architecture named by the stub's target description (`i386:x86-64`, `aarch64`).
    public var architecture: String { layout.architecture }
    /// Features from `qSupported` (`PacketSize` → `1000`, `multiprocess` → `+`).
    public let features: [String: String]
    /// True when the stub is QEMU's (answers `qqemu.PhyMemMode`).
    public let isQEMU: Bool

    let layout: RegisterLayout
    private let kernel: KernelSymbols?
    private let options: Options
    private let host: String
    private let lock = Lock()

    // Everything below is guarded by `lock`.
    private var connection: RSPConnection?
    private var running = false
    private var explicitlyStopped = false
    private var watchdogTripped = false
    private var stopGeneration: UInt64 = 0
    private var threads: [String] = []
    private var selectedThread: String?
    private var physBaseValue: UInt64?
    private let processID: UInt64?
    private let maxWriteChunk: Int

    /// `m` requests ask for at most this many bytes (QEMU 7.2 answers E22 above 0x800).
    static let readChunk = 0x800

    /// Connects to a kernel's gdbstub (or, with no symbols, any stub); see `init(host:port:kernel:options:)`.
    /// - Parameter symbols: the kernel's symbols (kallsyms), locating `linux_banner`,
    ///   `__start_notes`/`__stop_notes` and `phys_base`.
    public convenience init(host: String, port: UInt16, symbols: SymbolIndex?, options: Options = Options()) throws {
        try self.init(host: host, port: port, kernel: symbols.map(KernelSymbols.init(index:)), options: options)
    }

    /// Connects, drains QEMU's unsolicited stop reply, negotiates, learns the threads and the
    /// architecture, and resumes the target.
    /// - Parameter kernel: addresses of `linux_banner`, the notes and `phys_base` for a kernel target.
    public convenience init(host: String, port: UInt16, kernel: KernelSymbols? = nil, options: Options = Options()) throws {
        try self.init(host: host, port: port, kernel: kernel, options: options, syscalls: Syscalls())
    }

    init(host: String, port: UInt16, kernel: KernelSymbols?, options: Options, syscalls: Syscalls) throws(TargetError) {
        let name = TargetSpec.gdb(host: host, port: port).description
        self.name = name
        self.host = host
        self.kernel = kernel
        self.options = options
        self.physBaseValue = options.physBase
        let c = try RSPConnection(host: host, port: port, name: name, syscalls: syscalls, timeout: options.timeout)
        let handshake = try Self.handshake(c)
        features = handshake.features
        isQEMU = handshake.isQEMU
        layout = handshake.layout
        threads = handshake.threads
        selectedThread = handshake.stoppedThread
        processID = threads.first.flatMap(Self.processID(ofThread:))
        let packetSize = features["PacketSize"].flatMap { HexCodec.number(Array($0.utf8)) }.map(Int.init) ?? 0x400
        maxWriteChunk = max(16, min(Self.readChunk, (packetSize - 40) / 2))
        connection = c

        // Any failure from here on must not leave the target stopped: detach before throwing.
        do throws(TargetError) {
            if !isQEMU, features["QPassSignals"] == "+" {
                // A process under gdbserver stops (all-stop) on every signal it receives and would
                // stay frozen until the next request: let every signal through except SIGINT (our
                // interrupt) and SIGTRAP. Numbers are GDB's own signal numbering, in hex.
                let list = (1...0x96).filter { $0 != 2 && $0 != 5 }.map { String($0, radix: 16) }.joined(separator: ";")
                _ = try c.request("QPassSignals:" + list)
            }
            if let symbol = kernel?.physBase, physBaseValue == nil {
                // Read phys_base while the target is freshly stopped (a vCPU in kernel mode is likely):
                // the PTI fallback needs it exactly when no vCPU can read kernel memory.
                physBaseValue = try? readLocked(c, address: symbol, count: 8, allowPhysical: false)
                    .withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            }
            if options.resumeAfterConnect {
                try continueLocked(c)
            }
        } catch {
            abandonLocked()
            throw error
        }
    }

    private struct Handshake {
        var features: [String: String]
        var isQEMU: Bool
        var layout: RegisterLayout
        var threads: [String]
        var stoppedThread: String?
    }

    /// Drains the unsolicited stop reply, negotiates features and acks, asks the stop reason, and
    /// learns the stub, the architecture and the threads. On failure it sends a detach (best effort)
    /// so the target does not stay stopped.
    private static func handshake(_ c: RSPConnection) throws(TargetError) -> Handshake {
        var features: [String: String] = [:]
        var threads: [String] = []
        do {
            // QEMU pauses the VM on connect and pushes "T02thread:01;" unasked: take it off the
            // stream now, or every later reply is off by one. gdbserver sends nothing.
            let timeout = c.timeout
            c.timeout = 0.15
            do {
                while true { if try c.nextEvent(waitingFor: "the stop reply sent on connect") == .packet { break } }
            } catch .timeout { }
            c.timeout = timeout

            let reply = String(decoding: try c.request("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386"), as: UTF8.self)
            features = parseFeatures(reply)
            if features["QStartNoAckMode"] == "+" {
                if try c.request("QStartNoAckMode") == Array("OK".utf8) { c.disableAcks() }
            }
            // The stop reason: answers for stubs that sent nothing on connect, and confirms the
            // target is stopped for the ones that did.
            c.discardStrayStopReply()
            try c.send("?")
            let stop = try c.waitForStopReply(context: "'?'")
            let isQEMU = !(try c.request("qqemu.PhyMemMode")).isEmpty
            let layout = try registerLayout(c, features: features)
            threads = try listThreads(c)
            return Handshake(features: features, isQEMU: isQEMU, layout: layout, threads: threads,
                             stoppedThread: thread(inStopReply: stop))
        } catch {
            var framed: [UInt8] = []
            if features["multiprocess"] == "+" {
                let pid = threads.first.flatMap(processID(ofThread:)) ?? 1
                RSPConnection.frame(Array("D;\(String(pid, radix: 16))".utf8), into: &framed)
            } else {
                RSPConnection.frame(Array("D".utf8), into: &framed)
            }
            c.queue(raw: framed)
            try? c.flush(during: "detach")
            throw error
        }
    }

    deinit { close() }

    // MARK: MemoryTarget

    public func identity() throws -> TargetIdentity {
        if let kernel {
            return try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
        }
        return try lock.withLock { () throws(TargetError) -> TargetIdentity in
            guard features["qXfer:exec-file:read"] == "+" else {
                throw .missingSymbol(target: name, name: "linux_banner",
                                     purpose: "the identity of a kernel target (the stub offers no qXfer:exec-file either)")
            }
            let c = try liveConnection()
            let annex = processID.map { String($0, radix: 16) } ?? ""
            let path = String(decoding: try Self.readXfer(c, object: "exec-file", annex: annex), as: UTF8.self)
            var identity = TargetIdentity(kind: .process, path: path)
            // The executable is only readable here when the stub runs on this machine.
            if Self.isLoopback(host), let buildID = try? ELFFile(path: path).buildID() {
                identity.buildID = Hex.bytes(buildID, separator: "")
            }
            return identity
        }
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try lock.withLock { () throws(TargetError) -> [UInt8] in
            guard count > 0 else { return [] }
            return try withStoppedLocked("read") { c throws(TargetError) in
                try readLocked(c, address: address, count: count, allowPhysical: true)
            }
        }
    }

    public func write(at address: UInt64, bytes: [UInt8]) throws {
        try lock.withLock { () throws(TargetError) in
            guard !bytes.isEmpty else { return }
            try withStoppedLocked("write") { c throws(TargetError) in
                try writeLocked(c, address: address, bytes: bytes)
            }
        }
    }

    public func stop() throws {
        try lock.withLock { () throws(TargetError) in
            let c = try liveConnection()
            guard !explicitlyStopped else { throw .alreadyStopped(target: name) }
            if running { try guarded { () throws(TargetError) in try interruptLocked(c) } }
            explicitlyStopped = true
            watchdogTripped = false
            stopGeneration &+= 1
            armWatchdog(generation: stopGeneration)
        }
    }

    public func resume() throws {
        try lock.withLock { () throws(TargetError) in
            watchdogTripped = false
            guard let c = connection else { return }
            explicitlyStopped = false
            if !running { try guarded { () throws(TargetError) in try continueLocked(c) } }
        }
    }

    public func programCounters() throws -> [ExecutionContext] {
        try lock.withLock { () throws(TargetError) -> [ExecutionContext] in
            try withStoppedLocked("programCounters") { c throws(TargetError) in
                threads = try Self.listThreads(c)
                var contexts: [ExecutionContext] = []
                for thread in threads {
                    try selectThread(c, thread)
                    let registers = try c.request("g")
                    contexts.append(ExecutionContext(id: thread, programCounter: try programCounter(in: registers, thread: thread)))
                }
                return contexts
            }
        }
    }

    /// Detaches (which resumes the target) and closes the connection. Idempotent; never throws:
    /// if the stub does not answer, the socket is closed anyway.
    public func close() {
        lock.withLock {
            guard let c = connection else { return }
            do {
                if running { try interruptLocked(c) }
                let reply = try c.request(detachPacket)
                if reply == Array("OK".utf8) { running = true }
            } catch {
                // Best effort: a stub that stopped answering cannot be detached more politely.
            }
            explicitlyStopped = false
            connection = nil
        }
    }

    // MARK: Run state (all called with the lock held)

    private func liveConnection() throws(TargetError) -> RSPConnection {
        guard let c = connection else { throw .notSupported(target: name, operation: "use after close()", reason: "the connection is closed") }
        return c
    }

    /// Runs `body` with the target stopped: as it is under `stop()`, or stopped just for this
    /// operation and resumed afterwards whatever happens.
    private func withStoppedLocked<T>(_ operation: String, _ body: (RSPConnection) throws(TargetError) -> T) throws(TargetError) -> T {
        let c = try liveConnection()
        if watchdogTripped { throw .watchdogResumed(target: name, seconds: options.watchdogSeconds ?? 0) }
        return try guarded { () throws(TargetError) -> T in
            guard running else { return try body(c) }
            try interruptLocked(c)
            let result: Result<T, TargetError>
            do throws(TargetError) { result = .success(try body(c)) } catch { result = .failure(error) }
            try continueLocked(c)
            return try result.get()
        }
    }

    /// Runs `body`; when it fails in a way that leaves the stream's state unknown (timeout, protocol
    /// violation, closed connection), detaches as well as possible and drops the connection.
    private func guarded<T>(_ body: () throws(TargetError) -> T) throws(TargetError) -> T {
        do { return try body() } catch {
            switch error {
            case .timeout, .protocolViolation, .connectionClosed, .systemCall: abandonLocked()
            default: break
            }
            throw error
        }
    }

    /// Last resort: send a detach without waiting (it resumes a stopped target; a running one
    /// ignores it) and close the socket.
    private func abandonLocked() {
        guard let c = connection else { return }
        if !running {
            var framed: [UInt8] = []
            RSPConnection.frame(Array(detachPacket.utf8), into: &framed)
            c.queue(raw: framed)
            try? c.flush(during: "detach")
        }
        connection = nil
        explicitlyStopped = false
    }

    private var detachPacket: String {
        if features["multiprocess"] == "+" { return "D;" + String(processID ?? 1, radix: 16) }
        return "D"
    }

    private func interruptLocked(_ c: RSPConnection) throws(TargetError) {
        c.queue(raw: [0x03])
        try c.flush(during: "interrupt")
        let reply = try c.waitForStopReply(context: "interrupt (0x03)")
        running = false
        // QEMU and gdbserver make the thread that reported the stop the general one.
        selectedThread = Self.thread(inStopReply: reply)
    }

    private func continueLocked(_ c: RSPConnection) throws(TargetError) {
        try c.send("c")
        c.discardStrayStopReply()
        running = true
    }

    private func armWatchdog(generation: UInt64) {
        guard let seconds = options.watchdogSeconds else { return }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [weak self] in
            self?.watchdogExpired(generation: generation)
        }
    }

    private func watchdogExpired(generation: UInt64) {
        lock.withLock {
            guard explicitlyStopped, generation == stopGeneration, let c = connection else { return }
            explicitlyStopped = false
            watchdogTripped = true
            try? guarded { () throws(TargetError) in try continueLocked(c) }
        }
    }

    // MARK: Memory (lock held, target stopped)

    private func selectThread(_ c: RSPConnection, _ thread: String) throws(TargetError) {
        guard selectedThread != thread else { return }
        let reply = try c.request("Hg" + thread)
        guard reply == Array("OK".utf8) else {
            throw .remoteError(target: name, request: "Hg" + thread, reply: c.preview(reply))
        }
        selectedThread = thread
    }

    /// Kernel addresses (upper half) may fault on a vCPU that runs user code under PTI.
    private static func isKernelAddress(_ address: UInt64) -> Bool { address >= 0x8000_0000_0000_0000 }

    private func readLocked(_ c: RSPConnection, address: UInt64, count: Int, allowPhysical: Bool) throws(TargetError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        guard var failure = try readChunks(c, base: address, into: &out, from: 0) else { return out }
        if Self.isKernelAddress(address), failure.reply.first == UInt8(ascii: "E") {
            // PTI: a vCPU stopped in user mode runs on page tables without the kernel. Another vCPU
            // may be in kernel mode.
            if threads.isEmpty { threads = try Self.listThreads(c) }
            for thread in threads where thread != selectedThread {
                try selectThread(c, thread)
                guard let next = try readChunks(c, base: address, into: &out, from: failure.offset) else { return out }
                failure = next
            }
            if allowPhysical, isQEMU, address >= KernelSymbols.startKernelMap,
               let base = try? physicalBase(c) {
                // Every vCPU is in user mode: read the kernel image through physical memory instead.
                let physical = address - KernelSymbols.startKernelMap &+ base
                try setPhysicalMode(c, true)
                let result: Result<(offset: Int, reply: [UInt8])?, TargetError>
                do throws(TargetError) { result = .success(try readChunks(c, base: physical, into: &out, from: failure.offset)) }
                catch { result = .failure(error) }
                try setPhysicalMode(c, false)
                guard let last = try result.get() else { return out }
                failure = last
            }
        }
        let at = address &+ UInt64(failure.offset)
        throw .remoteError(target: name, request: "m \(Hex.address(at)),\(Hex.address(UInt64(min(Self.readChunk, count - failure.offset))))",
                           reply: failure.reply.isEmpty ? "(no bytes)" : c.preview(failure.reply))
    }

    /// Reads `out[from...]` from `base + from` in chunks, pipelined where the stub allows it.
    /// Returns nil, or the offset of the first chunk that failed and the stub's reply.
    private func readChunks(_ c: RSPConnection, base: UInt64, into out: inout [UInt8], from start: Int) throws(TargetError) -> (offset: Int, reply: [UInt8])? {
        let total = out.count - start
        let chunks = (total + Self.readChunk - 1) / Self.readChunk
        let size = out.count
        var failure: (offset: Int, reply: [UInt8])?
        let outcome: TargetError? = out.withUnsafeMutableBytes { buffer in
          do throws(TargetError) {
            try c.exchange(count: chunks, window: pipelineWindow(c), context: "m \(Hex.address(base &+ UInt64(start))),\(Hex.address(UInt64(total)))",
                request: { i, payload in
                    let offset = start + i * Self.readChunk
                    payload.append(UInt8(ascii: "m"))
                    HexCodec.appendNumber(base &+ UInt64(offset), to: &payload)
                    payload.append(UInt8(ascii: ","))
                    HexCodec.appendNumber(UInt64(min(Self.readChunk, size - offset)), to: &payload)
                },
                reply: { i throws(TargetError) -> Bool in
                    guard failure == nil else { return false }
                    let offset = start + i * Self.readChunk
                    let length = min(Self.readChunk, buffer.count - offset)
                    let packet = c.packet
                    if packet.first == UInt8(ascii: "E") || packet.isEmpty {
                        failure = (offset, packet)
                        return false
                    }
                    let decoded = packet.withUnsafeBufferPointer {
                        HexCodec.decode($0, into: UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + length]))
                    }
                    guard let decoded else {
                        throw .protocolViolation(target: name, context: "reply to m \(Hex.address(base &+ UInt64(offset)))",
                                                 expected: "at most \(length * 2) hex digits", found: "'\(c.preview(packet))'")
                    }
                    if decoded < length {
                        // A short reply: the stub read only part of the range; the rest is unreadable.
                        failure = (offset + decoded, [])
                        return false
                    }
                    return true
                })
            return nil
          } catch { return error }
        }
        if let outcome { throw outcome }
        return failure
    }

    private func writeLocked(_ c: RSPConnection, address: UInt64, bytes: [UInt8]) throws(TargetError) {
        guard var failure = try writeChunks(c, base: address, bytes: bytes, from: 0) else { return }
        if Self.isKernelAddress(address), failure.reply.first == UInt8(ascii: "E") {
            if threads.isEmpty { threads = try Self.listThreads(c) }
            for thread in threads where thread != selectedThread {
                try selectThread(c, thread)
                guard let next = try writeChunks(c, base: address, bytes: bytes, from: failure.offset) else { return }
                failure = next
            }
            if isQEMU, address >= KernelSymbols.startKernelMap, let base = try? physicalBase(c) {
                let physical = address - KernelSymbols.startKernelMap &+ base
                try setPhysicalMode(c, true)
                let result: Result<(offset: Int, reply: [UInt8])?, TargetError>
                do throws(TargetError) { result = .success(try writeChunks(c, base: physical, bytes: bytes, from: failure.offset)) }
                catch { result = .failure(error) }
                try setPhysicalMode(c, false)
                guard let last = try result.get() else { return }
                failure = last
            }
        }
        let at = address &+ UInt64(failure.offset)
        throw .remoteError(target: name, request: "M \(Hex.address(at)),\(Hex.address(UInt64(min(maxWriteChunk, bytes.count - failure.offset)))):…",
                           reply: c.preview(failure.reply))
    }

    private func writeChunks(_ c: RSPConnection, base: UInt64, bytes: [UInt8], from start: Int) throws(TargetError) -> (offset: Int, reply: [UInt8])? {
        let chunk = maxWriteChunk
        let chunks = (bytes.count - start + chunk - 1) / chunk
        var failure: (offset: Int, reply: [UInt8])?
        try c.exchange(count: chunks, window: pipelineWindow(c), context: "M \(Hex.address(base &+ UInt64(start))),\(Hex.address(UInt64(bytes.count - start)))",
            request: { i, payload in
                let offset = start + i * chunk
                let length = min(chunk, bytes.count - offset)
                payload.append(UInt8(ascii: "M"))
                HexCodec.appendNumber(base &+ UInt64(offset), to: &payload)
                payload.append(UInt8(ascii: ","))
                HexCodec.appendNumber(UInt64(length), to: &payload)
                payload.append(UInt8(ascii: ":"))
                HexCodec.append(bytes[offset..<offset + length], to: &payload)
            },
            reply: { i in
                guard failure == nil else { return false }
                if c.packet != Array("OK".utf8) {
                    failure = (start + i * chunk, c.packet)
                    return false
                }
                return true
            })
        return failure
    }

    /// Pipelining needs a stub that reads queued requests while acknowledging: any stub once acks
    /// are off, and QEMU with acks on. gdbserver in ack mode waits for the `+` of each reply and
    /// would take the next queued request for garbage, so it gets one request at a time.
    private func pipelineWindow(_ c: RSPConnection) -> Int {
        (!c.ackMode || isQEMU) ? max(1, options.pipelineWindow) : 1
    }

    private func setPhysicalMode(_ c: RSPConnection, _ on: Bool) throws(TargetError) {
        let request = "Qqemu.PhyMemMode:" + (on ? "1" : "0")
        let reply = try c.request(request)
        guard reply == Array("OK".utf8) else { throw .remoteError(target: name, request: request, reply: c.preview(reply)) }
    }

    /// The value of `phys_base`: given in the options, read at connect, or read now from a vCPU
    /// that can see kernel memory.
    private func physicalBase(_ c: RSPConnection) throws(TargetError) -> UInt64 {
        if let physBaseValue { return physBaseValue }
        guard let symbol = kernel?.physBase else {
            throw .missingSymbol(target: name, name: "phys_base", purpose: "reading kernel memory while every vCPU runs user code (PTI)")
        }
        let value = try readLocked(c, address: symbol, count: 8, allowPhysical: false).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        physBaseValue = value
        return value
    }

    private func programCounter(in registers: [UInt8], thread: String) throws(TargetError) -> UInt64 {
        let start = layout.pcOffset * 2, end = start + layout.pcSize * 2
        guard registers.count >= end, let bytes = HexCodec.decode(Array(registers[start..<end])) else {
            throw .protocolViolation(target: name, context: "'g' reply for thread \(thread)",
                                     expected: "the program counter at byte \(layout.pcOffset) (\(layout.architecture))",
                                     found: "\(registers.count / 2) register bytes: '\(String(decoding: registers.prefix(40), as: UTF8.self))…'")
        }
        return bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    // MARK: Handshake helpers

    /// `PacketSize=1000;qXfer:features:read+;multiprocess+` → ["PacketSize": "1000", …: "+"].
    static func parseFeatures(_ reply: String) -> [String: String] {
        var features: [String: String] = [:]
        for item in reply.split(separator: ";") {
            if let eq = item.firstIndex(of: "=") {
                features[String(item[..<eq])] = String(item[item.index(after: eq)...])
            } else if let last = item.last, last == "+" || last == "-" || last == "?" {
                features[String(item.dropLast())] = String(last)
            }
        }
        return features
    }

    /// The thread named in a stop reply (`T02thread:p01.01;` → `p01.01`).
    static func thread(inStopReply reply: [UInt8]) -> String? {
        let text = String(decoding: reply, as: UTF8.self)
        guard let range = text.firstRange(of: "thread:") else { return nil }
        let rest = text[range.upperBound...]
        return String(rest.prefix { $0 != ";" })
    }

    /// `p1f.2a` → 0x1f; plain thread ids have no process part.
    static func processID(ofThread thread: String) -> UInt64? {
        guard thread.hasPrefix("p") else { return nil }
        let body = thread.dropFirst()
        return HexCodec.number(Array((body.split(separator: ".").first ?? body).utf8))
    }

    static func listThreads(_ c: RSPConnection) throws(TargetError) -> [String] {
        var threads: [String] = []
        var reply = try c.request("qfThreadInfo")
        while reply.first == UInt8(ascii: "m") {
            threads += String(decoding: reply.dropFirst(), as: UTF8.self).split(separator: ",").map(String.init)
            guard threads.count < 1 << 16 else { break }
            reply = try c.request("qsThreadInfo")
        }
        guard reply.first == UInt8(ascii: "l") || reply.first == UInt8(ascii: "m") else {
            throw .protocolViolation(target: c.name, context: "thread list", expected: "'m…' or 'l'", found: "'\(c.preview(reply))'")
        }
        return threads
    }

    /// The architecture from `target.xml` when the stub offers it, else x86-64.
    static func registerLayout(_ c: RSPConnection, features: [String: String]) throws(TargetError) -> RegisterLayout {
        guard features["qXfer:features:read"] == "+" else { return .x86_64 }
        let xml = String(decoding: try readXfer(c, object: "features", annex: "target.xml"), as: UTF8.self)
        guard let open = xml.firstRange(of: "<architecture>"),
              let close = xml[open.upperBound...].firstRange(of: "</architecture>") else { return .x86_64 }
        let architecture = String(xml[open.upperBound..<close.lowerBound]).trimmingWhitespace()
        switch architecture {
        case "i386:x86-64", "i386:x86-64:intel": return .x86_64
        case "i386", "i386:intel": return .i386
        case let a where a.hasPrefix("aarch64"): return .aarch64
        default:
            throw .notSupported(target: c.name, operation: "reading program counters",
                                reason: "architecture '\(architecture)' (x86-64, i386 and aarch64 are known)")
        }
    }

    /// Reads a whole `qXfer` object (`m` = more follows, `l` = last), undoing binary escapes.
    static func readXfer(_ c: RSPConnection, object: String, annex: String) throws(TargetError) -> [UInt8] {
        var data: [UInt8] = []
        while data.count < 1 << 20 {
            let request = "qXfer:\(object):read:\(annex):\(String(data.count, radix: 16)),ffb"
            let reply = try c.request(request)
            guard let kind = reply.first, kind == UInt8(ascii: "m") || kind == UInt8(ascii: "l") else {
                throw .remoteError(target: c.name, request: request, reply: c.preview(reply))
            }
            var i = 1
            while i < reply.count {
                if reply[i] == 0x7d, i + 1 < reply.count {
                    data.append(reply[i + 1] ^ 0x20)
                    i += 2
                } else {
                    data.append(reply[i])
                    i += 1
                }
            }
            if kind == UInt8(ascii: "l") || reply.count == 1 { break }
        }
        return data
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

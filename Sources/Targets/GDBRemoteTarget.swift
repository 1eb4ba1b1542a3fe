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
/// is no reading without stopping). On QEMU, which handles the bytes of one write in order, such a
/// read is the interrupt, the requests and `c` in one write, and the engine's stop carries the
/// program counters and re-reads behind the interrupt: the pause window is round trips, so each is
/// made to count. Every exit path resumes it: errors inside an operation,
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
        /// The value of `phys_base` when already known (skips reading it): the physical fallback
        /// then reaches the kernel image without walking page tables.
        public var physBase: UInt64?
        /// Resume right after connecting (QEMU and gdbserver leave the target stopped).
        public var resumeAfterConnect: Bool = true
        public init() {}
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
    /// Program-counter slot by `g` reply size (see programCounter(in:thread:)).
    private var pcSlots: [Int: RegisterLayout.Slot] = [:]
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
    /// The kernel's identity, once read.
    private var kernelIdentity: TargetIdentity?
    /// How kernel memory was reachable in the current stop (reset at every stop).
    private var kernelRoute = KernelRoute.unknown
    /// CR3 and paging depth for page-table walks in the current stop.
    private var pageTables: (cr3: UInt64, levels: Int)?
    /// QEMU's `Qqemu.PhyMemMode` as last set.
    private var physicalMode = false
    private enum KernelRoute { case unknown, thread(String), physical }
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
        // The stub stops the target on connect: every round trip of the handshake is pause.
        c.spinNanoseconds = Self.pauseSpin
        defer { c.spinNanoseconds = 0 }
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
                // phys_base makes the physical fallback for the kernel image one subtraction instead
                // of a page-table walk per access. Best effort: the walk still works without it.
                physBaseValue = try? readLocked(c, address: symbol, count: 8, allowPhysical: true)
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
            let phyMemMode = try c.request("qqemu.PhyMemMode")
            let isQEMU = !phyMemMode.isEmpty
            if phyMemMode == Array("1".utf8) {
                // A client before us died in physical mode: every virtual address would be wrong.
                _ = try c.request("Qqemu.PhyMemMode:0")
            }
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
            // Read once per connection: the symbols this target was opened with already assume
            // the kernel that booted, and every read here is a stop of the VM.
            if let known = lock.withLock({ kernelIdentity }) { return known }
            let identity = try kernel.identity(target: name) { address, count in try self.read(at: address, count: count) }
            lock.withLock { kernelIdentity = identity }
            return identity
        }
        return try lock.withLock { () throws(TargetError) -> TargetIdentity in
            guard features["qXfer:exec-file:read"] == "+" else {
                throw .missingSymbol(target: name, name: "linux_banner",
                                     purpose: "the identity of a kernel target (the stub offers no qXfer:exec-file either)")
            }
            let annex = processID.map { String($0, radix: 16) } ?? ""
            let path = try withStoppedLocked("identity") { c throws(TargetError) in
                String(decoding: try Self.readXfer(c, object: "exec-file", annex: annex), as: UTF8.self)
            }
            var identity = TargetIdentity(kind: .process, path: path)
            // The executable is only readable here when the stub runs on this machine.
            if Self.isLoopback(host), let buildID = try? ELFFile(path: path).buildID() {
                identity.buildID = Hex.bytes(buildID, separator: "")
            }
            return identity
        }
    }

    public func read(at address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        return try read(ranges: [address..<(address + UInt64(count))])[0]
    }

    /// While the target runs, QEMU gets the interrupt, every `m` and the `c` in one write and
    /// answers them in order: the VM stops only while QEMU itself handles them, with no round trip
    /// of ours inside the stop. Anything that fails there (a vCPU in user mode under PTI answers
    /// E14) is read again through the general route, stopped across round trips.
    public func read(ranges: [Range<UInt64>]) throws -> [[UInt8]] {
        try lock.withLock { () throws(TargetError) -> [[UInt8]] in
            if let contents = try readInPassingLocked(ranges) { return contents }
            return try withStoppedLocked("read") { c throws(TargetError) -> [[UInt8]] in
                try ranges.map { range throws(TargetError) -> [UInt8] in
                    range.isEmpty ? [] : try readLocked(c, address: range.lowerBound, count: range.count, allowPhysical: true)
                }
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
                // QEMU's vCPUs are fixed for the VM's life: list them once. Other stubs (gdbserver's
                // threads come and go) are asked every time.
                if threads.isEmpty || !isQEMU { threads = try Self.listThreads(c) }
                let window = pipelineWindow(c)
                guard window > 1 else {
                    var contexts: [ExecutionContext] = []
                    for thread in threads {
                        try selectThread(c, thread)
                        let registers = try c.request("g")
                        contexts.append(ExecutionContext(id: thread, programCounter: try programCounter(in: registers, thread: thread)))
                    }
                    return contexts
                }
                // Pipelined (this is inside the pause window): `Hg t` and `g` for every thread in
                // one burst, answered in order, instead of 2 round trips per vCPU.
                let list = threads
                let requests = Self.registerRequests(list)
                var replies = [[UInt8]](repeating: [], count: requests.count)
                try c.exchange(count: requests.count, window: window, context: "Hg/g for \(list.count) threads",
                               request: { i, out in out.append(contentsOf: requests[i]) },
                               reply: { i in replies[i] = c.packet; return true })
                selectedThread = list.last
                return try contextsLocked(list, replies: replies[...], c)
            }
        }
    }

    /// On QEMU the interrupt and every request of the snapshot leave in one write: QEMU stops the VM
    /// on the 0x03 before it parses the next byte, sends the stop reply, then answers the queued
    /// `Hg`/`g`/`m` requests in order, so the snapshot costs the interrupt's round trip alone.
    /// Other stubs (and a first stop, before the vCPUs are known) take the general route.
    public func stop(reading ranges: [Range<UInt64>]) throws -> StopSnapshot {
        if let snapshot = try lock.withLock({ () throws(TargetError) -> StopSnapshot? in try stopPipelinedLocked(ranges) }) {
            return snapshot
        }
        return try stopThenRead(ranges)
    }

    /// Writes every block and reads each back in one pipelined exchange where the stub allows it
    /// (QEMU); a block that fails there (E14 on a vCPU in user mode under PTI) sends every block
    /// through the general route, which finds a way to kernel memory.
    public func write(_ blocks: [MemoryBlock]) throws -> [[UInt8]] {
        try lock.withLock { () throws(TargetError) -> [[UInt8]] in
            try withStoppedLocked("write") { c throws(TargetError) -> [[UInt8]] in
                let pipelined = isQEMU && pipelineWindow(c) > 1 && !physicalMode
                    && blocks.allSatisfy { !$0.bytes.isEmpty && $0.bytes.count <= maxWriteChunk }
                if pipelined, let back = try writePipelinedLocked(c, blocks) { return back }
                var back: [[UInt8]] = []
                for block in blocks where !block.bytes.isEmpty {
                    try writeLocked(c, address: block.address, bytes: block.bytes)
                    back.append(try readLocked(c, address: block.address, count: block.bytes.count, allowPhysical: true))
                }
                return back
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
                try setPhysicalMode(c, false)
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
            if physicalMode { RSPConnection.frame(Array("Qqemu.PhyMemMode:0".utf8), into: &framed) }
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
        kernelRoute = .unknown
        pageTables = nil
        // QEMU and gdbserver make the thread that reported the stop the general one.
        selectedThread = Self.thread(inStopReply: reply)
    }

    private func continueLocked(_ c: RSPConnection) throws(TargetError) {
        try setPhysicalMode(c, false)
        try c.post("c")
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

    // MARK: Pipelined stop and write (lock held)

    /// The snapshot in one exchange behind the interrupt, or nil (nothing sent) when this stub or
    /// state does not allow it.
    private func stopPipelinedLocked(_ ranges: [Range<UInt64>]) throws(TargetError) -> StopSnapshot? {
        let c = try liveConnection()
        guard !explicitlyStopped else { throw .alreadyStopped(target: name) }
        guard isQEMU, running, !threads.isEmpty, pipelineWindow(c) > 1,
              ranges.allSatisfy({ !$0.isEmpty && $0.count <= Self.readChunk }) else { return nil }
        let list = threads
        var requests = Self.registerRequests(list)
        for range in ranges {
            var m: [UInt8] = []
            Self.appendMemoryRequest("m", address: range.lowerBound, count: range.count, to: &m)
            requests.append(m)
        }
        var replies = [[UInt8]](repeating: [], count: requests.count)
        // Armed before the interrupt so that scheduling it is not part of the pause; it acts only
        // if this generation is still explicitly stopped when it fires.
        stopGeneration &+= 1
        armWatchdog(generation: stopGeneration)
        c.spinNanoseconds = Self.pauseSpin
        defer { c.spinNanoseconds = 0 }
        try guarded { () throws(TargetError) in
            c.queue(raw: [0x03])
            // The stop reply comes first: exchange keeps it aside as a stray and waitForStopReply takes it.
            try c.exchange(count: requests.count, window: max(requests.count, pipelineWindow(c)),
                           context: "interrupt with Hg/g for \(list.count) threads and \(ranges.count) reads",
                           request: { i, out in out.append(contentsOf: requests[i]) },
                           reply: { i in replies[i] = c.packet; return true })
            _ = try c.waitForStopReply(context: "interrupt (0x03)")
        }
        running = false
        kernelRoute = .unknown
        pageTables = nil
        selectedThread = list.last
        do throws(TargetError) {
            let contexts = try contextsLocked(list, replies: replies[..<(2 * list.count)], c)
            var contents: [[UInt8]] = []
            for (k, range) in ranges.enumerated() {
                let reply = replies[2 * list.count + k]
                if let bytes = Self.memory(inReply: reply, count: range.count) {
                    if Self.isKernelAddress(range.lowerBound), let last = list.last { kernelRoute = .thread(last) }
                    contents.append(bytes)
                } else {
                    // E14 (a vCPU in user mode under PTI) or a short read: the general route finds a way.
                    contents.append(try readLocked(c, address: range.lowerBound, count: range.count, allowPhysical: true))
                }
            }
            explicitlyStopped = true
            watchdogTripped = false
            return StopSnapshot(contexts: contexts, contents: contents)
        } catch {
            try? guarded { () throws(TargetError) in try continueLocked(c) }
            throw error
        }
    }

    /// How long to spin on the socket before sleeping, for replies awaited while the VM is stopped
    /// (a sleeping thread wakes 100 µs or more late here; measured: −15 to −25 % pause).
    static let pauseSpin: UInt64 = 2_000_000

    /// The largest read done in passing (interrupt, reads and `c` in one write): 16 chunks of 0x800.
    static let inPassingLimit = 16 * readChunk

    /// `ranges` read with the interrupt and the `c` around the requests in one write, or nil (the
    /// caller takes the general route) when the stub or state does not allow it or a read failed.
    private func readInPassingLocked(_ ranges: [Range<UInt64>]) throws(TargetError) -> [[UInt8]]? {
        let c = try liveConnection()
        let total = ranges.reduce(0) { $0 + $1.count }
        guard isQEMU, running, !explicitlyStopped, !watchdogTripped, pipelineWindow(c) > 1,
              total > 0, total <= Self.inPassingLimit else { return nil }
        var chunks: [(range: Int, address: UInt64, count: Int)] = []
        for (k, range) in ranges.enumerated() {
            var address = range.lowerBound
            while address < range.upperBound {
                let n = Int(min(UInt64(Self.readChunk), range.upperBound - address))
                chunks.append((k, address, n))
                address += UInt64(n)
            }
        }
        var contents = ranges.map { [UInt8](repeating: 0, count: $0.count) }
        var complete = true
        c.spinNanoseconds = Self.pauseSpin
        defer { c.spinNanoseconds = 0 }
        try guarded { () throws(TargetError) in
            try c.exchange(count: chunks.count, window: chunks.count, context: "interrupt, \(chunks.count) reads and continue",
                           prefix: [0x03], then: "c",
                           request: { i, out in Self.appendMemoryRequest("m", address: chunks[i].address, count: chunks[i].count, to: &out) },
                           reply: { i in
                               let chunk = chunks[i]
                               if let bytes = Self.memory(inReply: c.packet, count: chunk.count) {
                                   let offset = Int(chunk.address - ranges[chunk.range].lowerBound)
                                   contents[chunk.range].replaceSubrange(offset..<offset + chunk.count, with: bytes)
                               } else {
                                   complete = false
                               }
                               return true
                           })
        }
        // The stop reply to the interrupt came first and was kept aside; the `c` made it stale.
        // QEMU made the thread it names the general one (as after any interrupt).
        selectedThread = c.strayStopReply.flatMap(Self.thread(inStopReply:))
        c.discardStrayStopReply()
        kernelRoute = .unknown
        pageTables = nil
        return complete ? contents : nil
    }

    /// `M` for every block, then `m` for every block, in one burst; nil when any `M` failed (the
    /// caller then takes the general route for all blocks: rewriting a block is harmless).
    private func writePipelinedLocked(_ c: RSPConnection, _ blocks: [MemoryBlock]) throws(TargetError) -> [[UInt8]]? {
        if let route = blocks.contains(where: { Self.isKernelAddress($0.address) }) ? kernelRoute : nil {
            switch route {
            case .physical: return nil
            case .thread(let thread): try selectThread(c, thread)
            case .unknown: break
            }
        }
        var replies = [[UInt8]](repeating: [], count: blocks.count * 2)
        c.spinNanoseconds = Self.pauseSpin
        defer { c.spinNanoseconds = 0 }
        // The acks of the last replies wait for the `c` that usually follows (withStoppedLocked or
        // resume() flushes them with it; any other request flushes them first).
        try c.exchange(count: blocks.count * 2, window: max(blocks.count * 2, pipelineWindow(c)),
                       context: "M and m for \(blocks.count) blocks", holdAcks: true,
                       request: { i, out in
                           let block = blocks[i % blocks.count]
                           Self.appendMemoryRequest(i < blocks.count ? "M" : "m", address: block.address, count: block.bytes.count, to: &out)
                           if i < blocks.count {
                               out.append(UInt8(ascii: ":"))
                               HexCodec.append(block.bytes[...], to: &out)
                           }
                       },
                       reply: { i in replies[i] = c.packet; return true })
        guard replies[..<blocks.count].allSatisfy({ $0 == Array("OK".utf8) }) else { return nil }
        var back: [[UInt8]] = []
        for (k, block) in blocks.enumerated() {
            let bytes = Self.memory(inReply: replies[blocks.count + k], count: block.bytes.count)
            if let bytes { back.append(bytes) }
            else { back.append(try readLocked(c, address: block.address, count: block.bytes.count, allowPhysical: true)) }
        }
        if let thread = selectedThread, blocks.contains(where: { Self.isKernelAddress($0.address) }) { kernelRoute = .thread(thread) }
        return back
    }

    /// `Hg` and `g` for each thread, in order: one burst asks where every vCPU is.
    static func registerRequests(_ threads: [String]) -> [[UInt8]] {
        threads.flatMap { [Array(("Hg" + $0).utf8), Array("g".utf8)] }
    }

    /// The contexts in the replies to `registerRequests(threads)`. An `Hg` refused means the list of
    /// threads is stale: it is forgotten, to be asked again.
    private func contextsLocked(_ threads: [String], replies: ArraySlice<[UInt8]>, _ c: RSPConnection) throws(TargetError) -> [ExecutionContext] {
        var contexts: [ExecutionContext] = []
        for (n, thread) in threads.enumerated() {
            let select = replies[replies.startIndex + 2 * n], registers = replies[replies.startIndex + 2 * n + 1]
            guard select == Array("OK".utf8) else {
                selectedThread = nil
                self.threads = []
                throw .remoteError(target: name, request: "Hg" + thread, reply: c.preview(select))
            }
            contexts.append(ExecutionContext(id: thread, programCounter: try programCounter(in: registers, thread: thread)))
        }
        return contexts
    }

    /// `m ADDR,LEN` or `M ADDR,LEN` (the caller appends `:DATA`), in hex as the protocol wants.
    static func appendMemoryRequest(_ verb: Unicode.Scalar, address: UInt64, count: Int, to out: inout [UInt8]) {
        out.append(UInt8(ascii: verb))
        HexCodec.appendNumber(address, to: &out)
        out.append(UInt8(ascii: ","))
        HexCodec.appendNumber(UInt64(count), to: &out)
    }

    /// The bytes of an `m` reply when it holds exactly `count` of them (not an error, not short).
    static func memory(inReply reply: [UInt8], count: Int) -> [UInt8]? {
        guard reply.first != UInt8(ascii: "E"), reply.count == count * 2 else { return nil }
        var bytes = [UInt8](repeating: 0, count: count)
        let decoded = reply.withUnsafeBufferPointer { hex in bytes.withUnsafeMutableBytes { HexCodec.decode(hex, into: $0) } }
        return decoded == count ? bytes : nil
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

    /// The first part of a transfer that failed: its offset in the caller's buffer and the reply.
    typealias Failure = (offset: Int, reply: [UInt8])

    private func readLocked(_ c: RSPConnection, address: UInt64, count: Int, allowPhysical: Bool) throws(TargetError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try access(c, address: address, count: count, verb: "m", allowPhysical: allowPhysical) { base, range throws(TargetError) in
            try readChunks(c, base: base, into: &out, range: range)
        }
        return out
    }

    private func writeLocked(_ c: RSPConnection, address: UInt64, bytes: [UInt8]) throws(TargetError) {
        try access(c, address: address, count: bytes.count, verb: "M", allowPhysical: true) { base, range throws(TargetError) in
            try writeChunks(c, base: base, bytes: bytes, range: range)
        }
    }

    /// Moves `count` bytes at `address` with `attempt`, which transfers `range` of the caller's
    /// buffer taking `base` as the address of the buffer's first byte.
    ///
    /// Kernel addresses that fault (QEMU answers E14 when the selected vCPU runs user code on PTI's
    /// user page tables) are tried on the other vCPUs, then, on QEMU, in physical-memory mode:
    /// through `phys_base` for the kernel image, else by walking the kernel's page tables. The
    /// route that worked is kept for the rest of the stop, as no vCPU changes mode while stopped.
    private func access(_ c: RSPConnection, address: UInt64, count: Int, verb: String, allowPhysical: Bool,
                        _ attempt: (_ base: UInt64, _ range: Range<Int>) throws(TargetError) -> Failure?) throws(TargetError) {
        let kernelAddress = Self.isKernelAddress(address)
        var failure: Failure
        switch kernelAddress ? kernelRoute : .unknown {
        case .physical where allowPhysical && isQEMU:
            guard let f = try physicalAccess(c, address: address, count: count, from: 0, attempt) else { return }
            failure = f
        case .thread(let thread):
            try selectThread(c, thread)
            fallthrough
        default:
            try setPhysicalMode(c, false)
            guard let f = try attempt(address, 0..<count) else {
                if kernelAddress, let selectedThread { kernelRoute = .thread(selectedThread) }
                return
            }
            failure = f
            guard kernelAddress, failure.reply.first == UInt8(ascii: "E") else { break }
            if threads.isEmpty { threads = try Self.listThreads(c) }
            for thread in threads where thread != selectedThread {
                try selectThread(c, thread)
                guard let next = try attempt(address, failure.offset..<count) else {
                    kernelRoute = .thread(thread)
                    return
                }
                failure = next
            }
            if allowPhysical, isQEMU {
                guard let next = try physicalAccess(c, address: address, count: count, from: failure.offset, attempt) else {
                    kernelRoute = .physical
                    return
                }
                failure = next
            }
        }
        let at = address &+ UInt64(failure.offset)
        throw .remoteError(target: name, request: "\(verb) \(Hex.address(at)),\(Hex.address(UInt64(min(Self.readChunk, count - failure.offset))))",
                           reply: failure.reply.isEmpty ? "(no bytes)" : c.preview(failure.reply))
    }

    /// `attempt` in QEMU's physical-memory mode, one physically contiguous run at a time (the mode
    /// is switched back before the next virtual access or the resume).
    private func physicalAccess(_ c: RSPConnection, address: UInt64, count: Int, from start: Int,
                                _ attempt: (_ base: UInt64, _ range: Range<Int>) throws(TargetError) -> Failure?) throws(TargetError) -> Failure? {
        try setPhysicalMode(c, true)
        let result: Result<Failure?, TargetError>
        do throws(TargetError) {
            var offset = start
            var failure: Failure?
            while offset < count {
                let virtual = address &+ UInt64(offset)
                guard let hit = try physicalAddress(c, of: virtual) else {
                    failure = (offset, Array("(not mapped in the kernel's page tables)".utf8))
                    break
                }
                let end = offset + Int(min(hit.run, UInt64(count - offset)))
                if let f = try attempt(hit.physical &- UInt64(offset), offset..<end) {
                    failure = f
                    break
                }
                offset = end
            }
            result = .success(failure)
        } catch {
            result = .failure(error)
        }
        return try result.get()
    }

    /// The physical address of a kernel virtual address (physical mode on) and how many bytes from
    /// there are physically contiguous: the kernel image through `phys_base`, anything else (or
    /// the image when `phys_base` is unknown) through the page tables.
    private func physicalAddress(_ c: RSPConnection, of virtual: UInt64) throws(TargetError) -> (physical: UInt64, run: UInt64)? {
        let imageEnd = KernelSymbols.modulesStart
        if virtual >= KernelSymbols.startKernelMap, virtual < imageEnd, let base = physBaseValue {
            return (virtual - KernelSymbols.startKernelMap &+ base, imageEnd - virtual)
        }
        let tables = try pageTablesLocked(c)
        let readEntry = { (physical: UInt64) throws(TargetError) -> UInt64 in
            let request = "m\(String(physical, radix: 16)),8"
            let reply = try c.request(request)
            guard let bytes = HexCodec.decode(reply), bytes.count == 8 else {
                throw .remoteError(target: self.name, request: request + " (page table entry)", reply: c.preview(reply))
            }
            return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        }
        var hit = try PageTableWalk.translate(virtual, root: PageTableWalk.kernelRoot(cr3: tables.cr3, pti: true),
                                              levels: tables.levels, readEntry: readEntry)
        if hit == nil, tables.cr3 & 0x1000 != 0 {
            // Without PTI bit 12 of CR3 is an ordinary address bit.
            hit = try PageTableWalk.translate(virtual, root: PageTableWalk.kernelRoot(cr3: tables.cr3, pti: false),
                                              levels: tables.levels, readEntry: readEntry)
        }
        guard let hit else { return nil }
        if physBaseValue == nil, virtual >= KernelSymbols.startKernelMap, virtual < imageEnd {
            // The kernel image is mapped linearly: one translation gives phys_base.
            physBaseValue = hit.physical &- (virtual - KernelSymbols.startKernelMap)
        }
        return (hit.physical, hit.pageSize - (virtual & (hit.pageSize - 1)))
    }

    /// CR3 and the paging depth (LA57 in CR4) of the selected vCPU, read once per stop.
    private func pageTablesLocked(_ c: RSPConnection) throws(TargetError) -> (cr3: UInt64, levels: Int) {
        if let pageTables { return pageTables }
        let registers = try c.request("g")
        guard let slots = layout.slots(forReplyBytes: registers.count / 2), let cr3Slot = slots["cr3"], cr3Slot.size == 8 else {
            throw .notSupported(target: name, operation: "reading kernel memory while every vCPU runs user code",
                                reason: "no 64-bit cr3 at a known place in the \(registers.count / 2)-byte 'g' reply to walk the page tables from")
        }
        let cr3 = try register(cr3Slot, in: registers, what: "cr3")
        let cr4 = try slots["cr4"].map { slot throws(TargetError) in try register(slot, in: registers, what: "cr4") } ?? 0
        let tables = (cr3, cr4 & (1 << 12) != 0 ? 5 : 4)
        pageTables = tables
        return tables
    }

    private func register(_ slot: RegisterLayout.Slot, in registers: [UInt8], what: String) throws(TargetError) -> UInt64 {
        let start = slot.offset * 2, end = start + slot.size * 2
        guard registers.count >= end, slot.size <= 8, let bytes = HexCodec.decode(Array(registers[start..<end])) else {
            throw .protocolViolation(target: name, context: "'g' reply",
                                     expected: "\(what) at byte \(slot.offset) (\(layout.architecture))",
                                     found: "\(registers.count / 2) register bytes: '\(String(decoding: registers.prefix(40), as: UTF8.self))…'")
        }
        return bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Reads `out[range]` from `base + offset` in chunks, pipelined where the stub allows it.
    /// Returns nil, or where the first failing chunk starts and the stub's reply.
    private func readChunks(_ c: RSPConnection, base: UInt64, into out: inout [UInt8], range: Range<Int>) throws(TargetError) -> Failure? {
        let chunks = (range.count + Self.readChunk - 1) / Self.readChunk
        var failure: Failure?
        let outcome: TargetError? = out.withUnsafeMutableBytes { buffer in
            do throws(TargetError) {
                try c.exchange(count: chunks, window: pipelineWindow(c),
                               context: "m \(Hex.address(base &+ UInt64(range.lowerBound))),\(Hex.address(UInt64(range.count)))",
                    request: { i, payload in
                        let offset = range.lowerBound + i * Self.readChunk
                        Self.appendMemoryRequest("m", address: base &+ UInt64(offset), count: min(Self.readChunk, range.upperBound - offset), to: &payload)
                    },
                    reply: { i throws(TargetError) -> Bool in
                        guard failure == nil else { return false }
                        let offset = range.lowerBound + i * Self.readChunk
                        let length = min(Self.readChunk, range.upperBound - offset)
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

    /// Writes `bytes[range]` at `base + offset` in chunks.
    private func writeChunks(_ c: RSPConnection, base: UInt64, bytes: [UInt8], range: Range<Int>) throws(TargetError) -> Failure? {
        let chunk = maxWriteChunk
        let chunks = (range.count + chunk - 1) / chunk
        var failure: Failure?
        try c.exchange(count: chunks, window: pipelineWindow(c),
                       context: "M \(Hex.address(base &+ UInt64(range.lowerBound))),\(Hex.address(UInt64(range.count)))",
            request: { i, payload in
                let offset = range.lowerBound + i * chunk
                let length = min(chunk, range.upperBound - offset)
                Self.appendMemoryRequest("M", address: base &+ UInt64(offset), count: length, to: &payload)
                payload.append(UInt8(ascii: ":"))
                HexCodec.append(bytes[offset..<offset + length], to: &payload)
            },
            reply: { i in
                guard failure == nil else { return false }
                if c.packet != Array("OK".utf8) {
                    failure = (range.lowerBound + i * chunk, c.packet)
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

    /// Switches QEMU between virtual and physical memory access. Physical mode stays on across
    /// the accesses of one stop (saving two round trips each) and is switched off before any
    /// virtual access, before the target resumes, and before detaching.
    private func setPhysicalMode(_ c: RSPConnection, _ on: Bool) throws(TargetError) {
        guard physicalMode != on else { return }
        let request = "Qqemu.PhyMemMode:" + (on ? "1" : "0")
        let reply = try c.request(request)
        guard reply == Array("OK".utf8) else { throw .remoteError(target: name, request: request, reply: c.preview(reply)) }
        physicalMode = on
    }

    private func programCounter(in registers: [UInt8], thread: String) throws(TargetError) -> UInt64 {
        // The slot depends only on the reply's size; working it out (QEMU's trimmed layout) costs more
        // than the rest of a stop, so it is remembered (lock held).
        let size = registers.count / 2
        let known = pcSlots[size]
        guard let slot = known ?? layout.slots(forReplyBytes: size)?[layout.pcName] ?? layout.pc else {
            throw .notSupported(target: name, operation: "programCounters",
                                reason: "the register description names no program counter (rip, pc, eip)")
        }
        if known == nil { pcSlots[size] = slot }
        return try register(slot, in: registers, what: "the program counter of thread \(thread)")
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

    /// The register layout from `target.xml` (and its includes) when the stub offers it, else
    /// x86-64's general registers.
    static func registerLayout(_ c: RSPConnection, features: [String: String]) throws(TargetError) -> RegisterLayout {
        guard features["qXfer:features:read"] == "+" else { return .x86_64Fallback }
        let xml = String(decoding: try readXfer(c, object: "features", annex: "target.xml"), as: UTF8.self)
        if let layout = try RegisterLayout.parse(xml, fetch: { name throws(TargetError) in
            String(decoding: try readXfer(c, object: "features", annex: name), as: UTF8.self)
        }), layout.pc != nil {
            return layout
        }
        let architecture = RegisterLayout.element("architecture", in: xml) ?? "i386:x86-64"
        switch architecture {
        case "i386:x86-64", "i386:x86-64:intel": return .x86_64Fallback
        default:
            throw .notSupported(target: c.name, operation: "reading program counters",
                                reason: "architecture '\(architecture)' without a register description naming its program counter")
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

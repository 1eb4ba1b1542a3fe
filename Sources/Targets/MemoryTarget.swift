/// What every backend (GDB stub, process, /dev/kmem, /dev/mem, /proc/kcore, ELF file) offers the
/// patch engine. Addresses are virtual addresses of the target's code, as symbols give them.
///
/// The engine drives a write as: `identity()` → `read(ranges:)` for preflight → `stop(reading:)`
/// (program counters and the hunks' bytes in one stop) → `write(_:)` (writes and read-backs) →
/// `resume()`. Backends that cannot stop the world say so in `capabilities`, and the engine then
/// restricts itself to single naturally-aligned stores.
public protocol MemoryTarget: AnyObject {
    /// How the target was named (`gdb:127.0.0.1:1234`, `pid:42`, `file:/tmp/a.out`): for messages.
    var name: String { get }
    var capabilities: TargetCapabilities { get }

    /// Which kernel or program this is, for binding bundles to exactly one build.
    func identity() throws -> TargetIdentity

    /// Reads exactly `count` bytes at `address`, or throws. Never reads more than asked.
    func read(at address: UInt64, count: Int) throws -> [UInt8]

    /// Reads several ranges, at once where the backend can (one stop of a VM instead of one per
    /// range); one array per range, in order. The default reads one range at a time.
    func read(ranges: [Range<UInt64>]) throws -> [[UInt8]]

    /// Writes `bytes` at `address`. Callers check first; backends only carry the bytes.
    func write(at address: UInt64, bytes: [UInt8]) throws

    /// Stops every CPU or thread. Nested calls are not supported. A no-op error for backends that cannot.
    func stop() throws

    /// Resumes what `stop()` stopped. Safe to call when not stopped.
    func resume() throws

    /// The program counters of all CPUs or threads; valid while stopped.
    func programCounters() throws -> [ExecutionContext]

    /// Stops every CPU or thread and, within the same stop, returns their program counters and the
    /// bytes of `ranges`: everything the engine must know before it may write. The pause window is
    /// made of round trips, so a backend that can ask for all of it at once does (QEMU's stub takes
    /// the requests queued behind the interrupt and answers them in order). Stopped on return; on a
    /// throw the target is resumed. The default is `stop()`, `programCounters()`, then `read`s.
    func stop(reading ranges: [Range<UInt64>]) throws -> StopSnapshot

    /// Writes every block, then reads each back, in as few exchanges as the backend allows; returns
    /// the bytes read back, one array per block. The default writes and reads one block at a time.
    /// A `.compareAndSwap` backend writes each block only where its bytes still equal
    /// `block.expected`, and throws `.busy` when a CPU or task is executing inside it.
    func write(_ blocks: [MemoryBlock]) throws -> [[UInt8]]

    /// With `.compareAndSwap`: the most bytes one block may swap at once (0 otherwise).
    var compareAndSwapLimit: Int { get }

    /// Releases the backend (resuming the target first if it is stopped). Idempotent.
    func close()
}

extension MemoryTarget {
    public var compareAndSwapLimit: Int { 0 }

    public func read(ranges: [Range<UInt64>]) throws -> [[UInt8]] {
        try ranges.map { try read(at: $0.lowerBound, count: $0.count) }
    }

    public func stop(reading ranges: [Range<UInt64>]) throws -> StopSnapshot {
        try stopThenRead(ranges)
    }

    /// The general route of `stop(reading:)`: `stop()`, `programCounters()`, then one `read` per
    /// range, resuming if any of them fails.
    public func stopThenRead(_ ranges: [Range<UInt64>]) throws -> StopSnapshot {
        try stop()
        do {
            let contexts = try programCounters()
            let contents = try ranges.map { try read(at: $0.lowerBound, count: $0.count) }
            return StopSnapshot(contexts: contexts, contents: contents)
        } catch {
            try? resume()
            throw error
        }
    }

    public func write(_ blocks: [MemoryBlock]) throws -> [[UInt8]] {
        try blocks.map { block in
            try write(at: block.address, bytes: block.bytes)
            return try read(at: block.address, count: block.bytes.count)
        }
    }
}

/// Bytes at an address of the target, to write.
public struct MemoryBlock: Sendable, Hashable {
    public var address: UInt64
    public var bytes: [UInt8]
    /// What the caller knows is there now: a compare-and-swap backend writes only if it still is.
    public var expected: [UInt8]?
    public init(address: UInt64, bytes: [UInt8], expected: [UInt8]? = nil) {
        self.address = address
        self.bytes = bytes
        self.expected = expected
    }
    public var range: Range<UInt64> { address..<(address + UInt64(bytes.count)) }
}

/// What one stop saw: where every CPU or thread was, and the bytes asked for.
public struct StopSnapshot: Sendable, Hashable {
    public var contexts: [ExecutionContext]
    /// The bytes of each range asked for, in the order asked.
    public var contents: [[UInt8]]
    public init(contexts: [ExecutionContext], contents: [[UInt8]]) {
        self.contexts = contexts
        self.contents = contents
    }
}

public struct TargetCapabilities: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `stop()`/`resume()` freeze and thaw every CPU or thread.
    public static let stop = TargetCapabilities(rawValue: 1 << 0)
    /// `write` is possible (kcore is read-only).
    public static let write = TargetCapabilities(rawValue: 1 << 1)
    /// `programCounters()` answers while stopped.
    public static let programCounters = TargetCapabilities(rawValue: 1 << 2)
    /// The target is live (kernel or process), not a file.
    public static let live = TargetCapabilities(rawValue: 1 << 3)
    /// Without stopping the world for the caller, each block of `write(_:)` (up to
    /// `compareAndSwapLimit` bytes) is swapped at once with every CPU held, after the backend
    /// checked that nothing executes inside it, and only if the bytes are still the expected ones
    /// (the helper module's stop_machine compare-and-swap).
    public static let compareAndSwap = TargetCapabilities(rawValue: 1 << 4)
}

/// One CPU (vCPU) or thread and where it was when stopped.
public struct ExecutionContext: Sendable, Hashable {
    /// vCPU number (gdb thread id) or thread id (tid).
    public var id: String
    public var programCounter: UInt64
    /// Return addresses found on this context's stack, where the backend can see them (may be empty).
    public var returnAddresses: [UInt64]
    public init(id: String, programCounter: UInt64, returnAddresses: [UInt64] = []) {
        self.id = id
        self.programCounter = programCounter
        self.returnAddresses = returnAddresses
    }
}

/// Which kernel or program a target is. Two identities match when every field both sides know agrees.
public struct TargetIdentity: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable { case kernel, process, file }
    public var kind: Kind
    /// Kernel release (`6.1.0-56-amd64`), where known.
    public var release: String?
    /// GNU build-id in lowercase hex (kernel's from its notes, or the executable's).
    public var buildID: String?
    /// The kernel's `linux_banner` text, where read.
    public var banner: String?
    /// A process' executable path, or the file's path.
    public var path: String?

    public init(kind: Kind, release: String? = nil, buildID: String? = nil, banner: String? = nil, path: String? = nil) {
        self.kind = kind
        self.release = release
        self.buildID = buildID
        self.banner = banner
        self.path = path
    }
}

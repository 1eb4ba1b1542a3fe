/// A zero-copy, bounds-checked window on the bytes of an `ELFFile` (a section's contents, the bytes
/// at an address). It keeps the file's memory alive, so it may outlive the `ELFFile` it came from.
///
/// Indices run from 0 to `count`; subscripting outside them traps like `Array` (a programmer error).
/// For offsets that come from input, use `load(as:at:)` or `view(offset:count:)`, which throw.
public struct ByteView: RandomAccessCollection, @unchecked Sendable {
    // @unchecked: `base` points into `storage`, which is immutable and kept alive by this value.
    let storage: ByteStorage
    let base: UnsafeRawPointer
    public let count: Int
    /// Where the first byte sits in the (decompressed) file: for messages and for patch offsets.
    public let fileOffset: UInt64
    /// The file these bytes come from.
    public let file: String
    /// What these bytes are, for messages: `section 3 (.text)`, `bytes at 0xffffffff81000000`.
    public let structure: String

    init(storage: ByteStorage, offset: Int, count: Int, file: String, structure: String) {
        self.storage = storage
        self.base = storage.base + offset
        self.count = count
        self.fileOffset = UInt64(offset)
        self.file = file
        self.structure = structure
    }

    public typealias Element = UInt8
    public typealias Index = Int
    public typealias Indices = Range<Int>
    public var startIndex: Int { 0 }
    public var endIndex: Int { count }

    @inline(__always)
    public subscript(position: Int) -> UInt8 {
        precondition(position >= 0 && position < count, "ByteView index \(position) out of 0..<\(count)")
        return base.load(fromByteOffset: position, as: UInt8.self)
    }

    /// A little-endian integer at byte `offset`, or `ELFError.truncated` when it does not fit.
    @inline(__always)
    public func load<T: FixedWidthInteger>(as type: T.Type, at offset: Int) throws(ELFError) -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= count - size else {
            throw .truncated(file: file, structure: structure + " (\(T.self) at +\(Hex.address(UInt64(Swift.max(offset, 0)))))",
                             offset: fileOffset &+ UInt64(Swift.max(offset, 0)), needed: UInt64(size),
                             available: offset >= 0 && offset < count ? UInt64(count - offset) : 0)
        }
        return T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// The `count` bytes at `offset` as a new view (indices again from 0), or a truncation error.
    public func view(offset: Int, count length: Int) throws(ELFError) -> ByteView {
        guard offset >= 0, length >= 0, offset <= count, length <= count - offset else {
            throw .truncated(file: file, structure: structure, offset: fileOffset &+ UInt64(Swift.max(offset, 0)),
                             needed: UInt64(Swift.max(length, 0)),
                             available: offset >= 0 && offset < count ? UInt64(count - offset) : 0)
        }
        return ByteView(storage: storage, offset: base - storage.base + offset, count: length,
                        file: file, structure: structure)
    }

    /// A copy of the bytes.
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: count)) }

    /// Direct access for fast paths (disassembly, searching). The pointer is valid only inside `body`.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try withExtendedLifetime(storage) { () throws(E) -> R in
            try body(UnsafeRawBufferPointer(start: base, count: count))
        }
    }

    public func withContiguousStorageIfAvailable<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R? {
        try withExtendedLifetime(storage) {
            try body(UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: count))
        }
    }
}

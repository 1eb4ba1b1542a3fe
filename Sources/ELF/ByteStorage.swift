#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns the bytes an `ELFFile` and its `ByteView`s read: a read-only private file mapping, or a heap
/// buffer (for `init(bytes:name:)` and decompressed modules). Immutable once made; released in deinit.
final class ByteStorage: @unchecked Sendable {
    /// Never nil: empty storage still owns a one-byte allocation so readers need no optional checks.
    let base: UnsafeRawPointer
    let count: Int
    private let release: Release

    private enum Release {
        case unmap(length: Int)
        case free
        /// Memory from `malloc`/`realloc` (decompressed output grown in place).
        case cFree
    }

    /// Maps `path` with `mmap(PROT_READ, MAP_PRIVATE)`. Empty and unmappable-but-readable files (such as
    /// those in /proc) fall back to a heap copy through `read(2)`.
    static func map(path: String) throws(ELFError) -> ByteStorage {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(file: path, operation: "open", errno: errno) }
        defer { _ = close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(file: path, operation: "fstat", errno: errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .io(file: path, operation: "open (not a regular file)", errno: EINVAL)
        }
        let size = Int(info.st_size)
        if size == 0 { return ByteStorage(copying: UnsafeRawBufferPointer(start: nil, count: 0)) }
        // The mapping outlives the descriptor; closing fd (deferred above) does not unmap it.
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw .io(file: path, operation: "mmap", errno: errno)
        }
        return ByteStorage(base: UnsafeRawPointer(address), count: size, release: .unmap(length: size))
    }

    /// Copies `bytes` into a fresh heap buffer.
    convenience init(copying bytes: UnsafeRawBufferPointer) {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        if let source = bytes.baseAddress, bytes.count > 0 {
            buffer.copyMemory(from: source, byteCount: bytes.count)
        }
        self.init(base: UnsafeRawPointer(buffer), count: bytes.count, release: .free)
    }

    /// Takes ownership of a buffer made by `malloc`/`realloc`.
    convenience init(adoptingMalloced buffer: UnsafeMutableRawPointer, count: Int) {
        self.init(base: UnsafeRawPointer(buffer), count: count, release: .cFree)
    }

    private init(base: UnsafeRawPointer, count: Int, release: Release) {
        self.base = base
        self.count = count
        self.release = release
    }

    deinit {
        switch release {
        case .unmap(let length): munmap(UnsafeMutableRawPointer(mutating: base), length)
        case .free: UnsafeMutableRawPointer(mutating: base).deallocate()
        case .cFree: Glibc.free(UnsafeMutableRawPointer(mutating: base))
        }
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

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

    /// Maps `path` with `mmap(PROT_READ, MAP_PRIVATE)`. Files that report size 0 or cannot be mapped
    /// but can be read (those in /proc and /sys) are copied to the heap with `read(2)` instead.
    static func map(path: String) throws(ELFError) -> ByteStorage {
        // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; regular files ignore it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .io(file: path, operation: "open", errno: errno) }
        defer { _ = close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(file: path, operation: "fstat", errno: errno) }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .io(file: path, operation: "open (not a regular file)", errno: EINVAL)
        }
        let size = Int(info.st_size)
        if size > 0, let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED {
            // The mapping outlives the descriptor; closing fd (deferred above) does not unmap it.
            return ByteStorage(base: UnsafeRawPointer(address), count: size, release: .unmap(length: size))
        }
        return try readAll(fd, path: path)
    }

    /// Largest file read without a mapping (pseudo-files are small; this stops an endless one).
    static let readLimit = 256 << 20

    private static func readAll(_ fd: Int32, path: String) throws(ELFError) -> ByteStorage {
        var capacity = 1 << 16
        guard var buffer = malloc(capacity) else { throw .io(file: path, operation: "malloc", errno: ENOMEM) }
        var count = 0
        while true {
            if count == capacity {
                guard capacity < readLimit else {
                    free(buffer)
                    throw .io(file: path, operation: "read (more than \(readLimit) bytes without a mapping)", errno: EFBIG)
                }
                guard let grown = realloc(buffer, capacity * 2) else {
                    free(buffer)
                    throw .io(file: path, operation: "realloc", errno: ENOMEM)
                }
                buffer = grown
                capacity *= 2
            }
            let n = read(fd, buffer + count, capacity - count)
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                let error = errno
                free(buffer)
                throw .io(file: path, operation: "read", errno: error)
            }
            count += n
        }
        return ByteStorage(adoptingMalloced: buffer, count: count)
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
        case .cFree: free(UnsafeMutableRawPointer(mutating: base))
        }
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

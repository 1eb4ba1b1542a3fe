import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The few file operations the lab needs, with errors that name the path.
enum Files {
    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Size in bytes, following symlinks; nil when the file does not exist.
    static func size(_ path: String) -> UInt64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return UInt64(st.st_size)
    }

    /// "size:mtime-ns" of a file (after symlinks), the cheap fingerprint the rebuild check uses.
    static func fingerprint(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let ns = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        return "\(st.st_size):\(ns)"
    }

    static func createDirectory(_ path: String) throws(LabError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw .io(path: path, operation: "create directory", errno: errno == 0 ? EIO : errno)
        }
    }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// The whole file. Files in /proc report size 0, so this reads until end of file rather
    /// than trusting the size.
    static func read(_ path: String) throws(LabError) -> [UInt8] {
        try read(path, from: 0)
    }

    static func readText(_ path: String) throws(LabError) -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    /// Bytes `[offset, end)` of a file that may still be growing.
    static func read(_ path: String, from offset: UInt64) throws(LabError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(path: path, operation: "stat", errno: errno) }
        // Read straight into the result: sized from stat, grown when the file is larger (or in /proc).
        var result = [UInt8](repeating: 0, count: max(4096, Int(st.st_size) - Int(offset) + 1))
        var used = 0
        var position = off_t(offset)
        while true {
            if used == result.count { result.append(contentsOf: repeatElement(0, count: result.count)) }
            let n = result.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + used, $0.count - used, position) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, operation: "read", errno: errno)
            }
            if n == 0 { break }
            used += n
            position += off_t(n)
        }
        result.removeSubrange(used...)
        return result
    }

    /// Writes through a temporary file and rename, so readers never see half a file.
    static func writeAtomically(_ path: String, _ bytes: some Collection<UInt8>, mode: mode_t = 0o644) throws(LabError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .io(path: temporary, operation: "create", errno: errno) }
        let data = Array(bytes)
        var done = 0
        while done < data.count {
            let n = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                close(fd)
                unlink(temporary)
                throw .io(path: temporary, operation: "write", errno: code)
            }
            done += n
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw .io(path: path, operation: "rename into place", errno: code)
        }
    }

    static func writeAtomically(_ path: String, text: String) throws(LabError) {
        try writeAtomically(path, Array(text.utf8))
    }
}

/// A newc ("070701") cpio archive built in memory, the format the kernel unpacks as initramfs.
///
/// Entries are written in the order added; parent directories are added on demand so the kernel's
/// unpacker always finds them first. Owners are root and times are zero, so the same inputs give
/// the same bytes.
struct CpioArchive {
    private(set) var bytes: [UInt8] = []
    private var directories: Set<String> = ["", "."]
    private var inode: UInt32 = 1
    private(set) var fileCount = 0

    init() {
        bytes.reserveCapacity(32 << 20)
    }

    mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) {
        let path = Self.normalize(path)
        guard !directories.contains(path) else { return }
        addParents(of: path)
        directories.insert(path)
        appendEntry(name: path, mode: 0o040000 | mode, nlink: 2, data: [])
    }

    mutating func addFile(_ path: String, contents: some Collection<UInt8>, mode: UInt32 = 0o644) {
        let path = Self.normalize(path)
        addParents(of: path)
        appendEntry(name: path, mode: 0o100000 | mode, nlink: 1, data: contents)
        fileCount += 1
    }

    mutating func addFile(_ path: String, text: String, mode: UInt32 = 0o644) {
        addFile(path, contents: Array(text.utf8), mode: mode)
    }

    mutating func addSymlink(_ path: String, target: String) {
        let path = Self.normalize(path)
        addParents(of: path)
        appendEntry(name: path, mode: 0o120777, nlink: 1, data: Array(target.utf8))
    }

    mutating func addCharacterDevice(_ path: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600) {
        let path = Self.normalize(path)
        addParents(of: path)
        appendEntry(name: path, mode: 0o020000 | mode, nlink: 1, data: [], rdevMajor: major, rdevMinor: minor)
    }

    /// Appends the `TRAILER!!!` entry; the archive is complete afterwards.
    mutating func finish() {
        appendEntry(name: "TRAILER!!!", mode: 0, nlink: 1, data: [], inodeNumber: 0)
    }

    private mutating func addParents(of path: String) {
        var parents: [String] = []
        var current = path
        while let slash = current.lastIndex(of: "/") {
            current = String(current[..<slash])
            if directories.contains(current) { break }
            parents.append(current)
        }
        for parent in parents.reversed() {
            directories.insert(parent)
            appendEntry(name: parent, mode: 0o040755, nlink: 2, data: [])
        }
    }

    private static func normalize(_ path: String) -> String {
        var path = Substring(path)
        while path.hasPrefix("/") { path = path.dropFirst() }
        while path.hasSuffix("/") { path = path.dropLast() }
        return String(path)
    }

    private mutating func appendEntry(name: String, mode: UInt32, nlink: UInt32, data: some Collection<UInt8>,
                                      rdevMajor: UInt32 = 0, rdevMinor: UInt32 = 0, inodeNumber: UInt32? = nil) {
        let number = inodeNumber ?? inode
        if inodeNumber == nil { inode += 1 }
        let nameBytes = Array(name.utf8) + [0]
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields: [UInt32] = [number, mode, 0, 0, nlink, 0, UInt32(data.count), 0, 0,
                                rdevMajor, rdevMinor, UInt32(nameBytes.count), 0]
        bytes.append(contentsOf: "070701".utf8)
        for field in fields { appendHex8(field) }
        bytes.append(contentsOf: nameBytes)
        pad4()
        bytes.append(contentsOf: data)
        pad4()
    }

    private mutating func appendHex8(_ value: UInt32) {
        let digits: [UInt8] = Array("0123456789ABCDEF".utf8)
        for shift in stride(from: 28, through: 0, by: -4) {
            bytes.append(digits[Int((value >> UInt32(shift)) & 0xF)])
        }
    }

    private mutating func pad4() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
}

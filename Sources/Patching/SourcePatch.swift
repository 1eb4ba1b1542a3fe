import Foundation

/// A unified diff of a source tree, as `patch -p1` reads it: which files it changes and how many
/// hunks each. Only the headers and hunk sizes are read here; `patch` itself applies the text.
public struct SourcePatch: Sendable, Hashable {
    public struct FileChange: Sendable, Hashable {
        /// Path inside the tree, with the first component (`a/`, `b/`) stripped as `-p1` does.
        public var path: String
        public var hunks: Int
        /// The patch creates the file (`--- /dev/null`).
        public var isNew: Bool
        /// The patch deletes the file (`+++ /dev/null`).
        public var isDeleted: Bool
        /// The line of the `---` header, for messages.
        public var line: Int
    }

    /// The patch file, absolute.
    public let path: String
    public let text: [UInt8]
    public let files: [FileChange]

    public init(path: String) throws(KernelBuildError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .patchUnreadable(path: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")
        }
        try self.init(text: [UInt8](data), path: path)
    }

    /// `path` is made absolute (patch runs in the tree's folder, not the caller's).
    public init(text: [UInt8], path: String) throws(KernelBuildError) {
        self.path = URL(fileURLWithPath: path).standardizedFileURL.path
        self.text = text
        files = try Self.parse(String(decoding: text, as: UTF8.self), path: path)
        guard !files.isEmpty else { throw .patchEmpty(path: path) }
    }

    /// FNV-1a of the text: names the build's folder in the cache.
    public var contentHash: UInt64 { ContentHash.fnv1a(text) }

    // MARK: Parsing

    private static func parse(_ text: String, path: String) throws(KernelBuildError) -> [FileChange] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? line.dropLast() : line
        }
        var files: [FileChange] = []
        var i = 0
        while i < lines.count {
            let line = lines[i]
            if line.hasPrefix("--- "), i + 1 < lines.count, lines[i + 1].hasPrefix("+++ ") {
                let old = headerPath(line.dropFirst(4)), new = headerPath(lines[i + 1].dropFirst(4))
                let isNew = old == "/dev/null", isDeleted = new == "/dev/null"
                let name = isDeleted ? old : new
                files.append(FileChange(path: stripFirstComponent(name), hunks: 0, isNew: isNew,
                                        isDeleted: isDeleted, line: i + 1))
                i += 2
                continue
            }
            if line.hasPrefix("@@") {
                guard !files.isEmpty else {
                    throw .patchMalformed(path: path, line: i + 1, expected: "--- a/FILE and +++ b/FILE before the first hunk",
                                          found: String(line))
                }
                guard let (oldCount, newCount) = hunkCounts(line) else {
                    throw .patchMalformed(path: path, line: i + 1, expected: "a hunk header like @@ -841,7 +841,7 @@",
                                          found: String(line))
                }
                files[files.count - 1].hunks += 1
                // Skip the body by its counts, so that a removed line starting with "-- " is not
                // taken for the next file's header.
                var oldLeft = oldCount, newLeft = newCount
                i += 1
                while oldLeft > 0 || newLeft > 0 {
                    guard i < lines.count else {
                        throw .patchMalformed(path: path, line: i, expected: "\(oldLeft) more old and \(newLeft) more new lines in the hunk",
                                              found: "end of file")
                    }
                    let body = lines[i]
                    switch body.first {
                    case " ", nil: oldLeft -= 1; newLeft -= 1     // an empty line is an empty context line
                    case "-": oldLeft -= 1
                    case "+": newLeft -= 1
                    case "\\": break                             // "\ No newline at end of file"
                    default:
                        throw .patchMalformed(path: path, line: i + 1, expected: "a hunk line starting with ' ', '-' or '+'",
                                              found: String(body))
                    }
                    guard oldLeft >= 0, newLeft >= 0 else {
                        throw .patchMalformed(path: path, line: i + 1, expected: "no more lines than the hunk header counts",
                                              found: String(body))
                    }
                    i += 1
                }
                continue
            }
            i += 1
        }
        return files
    }

    /// The path of a `---`/`+++` header: up to a tab (diff puts the date there), quotes removed.
    private static func headerPath(_ text: Substring) -> String {
        var name = text.split(separator: "\t", maxSplits: 1).first.map(String.init) ?? ""
        name = name.trimmingCharacters(in: .whitespaces)
        if name.count >= 2, name.hasPrefix("\""), name.hasSuffix("\"") { name = String(name.dropFirst().dropLast()) }
        return name
    }

    private static func stripFirstComponent(_ name: String) -> String {
        guard name != "/dev/null", let slash = name.firstIndex(of: "/") else { return name }
        return String(name[name.index(after: slash)...])
    }

    /// `@@ -a[,b] +c[,d] @@`: the old and new line counts (1 when omitted).
    private static func hunkCounts(_ line: Substring) -> (Int, Int)? {
        let fields = line.split(separator: " ")
        guard fields.count >= 4, fields[0] == "@@", fields[1].hasPrefix("-"), fields[2].hasPrefix("+"),
              fields[3].hasPrefix("@@") else { return nil }
        func count(_ range: Substring) -> Int? {
            let parts = range.dropFirst().split(separator: ",", omittingEmptySubsequences: false)
            guard parts.count <= 2, let _ = Int(parts[0]) else { return nil }
            return parts.count == 2 ? Int(parts[1]) : 1
        }
        guard let old = count(fields[1]), let new = count(fields[2]) else { return nil }
        return (old, new)
    }
}

/// FNV-1a (64 bits): a quick content fingerprint for cache keys, not a security hash.
enum ContentHash {
    static func fnv1a(_ parts: [UInt8]...) -> UInt64 {
        var hash: UInt64 = 0xcbf29ce484222325
        for part in parts {
            for byte in part { hash = (hash ^ UInt64(byte)) &* 0x100000001b3 }
            // A separator, so that ("ab", "c") and ("a", "bc") differ.
            hash = (hash ^ 0xff) &* 0x100000001b3
        }
        return hash
    }

    static func hex(_ hash: UInt64) -> String {
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

import Foundation

/// A kernel `.config` (or `/boot/config-*`): `CONFIG_NAME=value` lines, `# CONFIG_NAME is not set`
/// for options that are off. Values keep their text as kconfig wrote it (`y`, `m`, `"string"`, `0x10`).
public struct KernelConfig: Sendable, Hashable {
    public let path: String
    /// The file's bytes, for hashing.
    public let contents: [UInt8]
    /// Options that are set, by full name (`CONFIG_NFS_FS`).
    public let values: [String: String]

    public init(path: String) throws(KernelBuildError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .configMissing(path: path)
        }
        self.init(contents: [UInt8](data), path: path)
    }

    public init(contents: [UInt8], path: String) {
        self.path = path
        self.contents = contents
        var values: [String: String] = [:]
        for line in String(decoding: contents, as: UTF8.self).split(separator: "\n") {
            guard line.hasPrefix("CONFIG_"), let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        self.values = values
    }

    public subscript(name: String) -> String? { values[name] }

    /// A string option without its quotes and with kconfig's escapes undone (`\"` and `\\`).
    public func string(_ name: String) -> String? {
        guard var text = values[name] else { return nil }
        guard text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") else { return text }
        text = String(text.dropFirst().dropLast())
        var result = ""
        var escaped = false
        for c in text {
            if escaped { result.append(c); escaped = false } else if c == "\\" { escaped = true } else { result.append(c) }
        }
        return result
    }

    /// `y`, `m` or nil (not set, or set to something other than a tristate).
    public func tristate(_ name: String) -> String? {
        let value = values[name]
        return value == "y" || value == "m" ? value : nil
    }

    /// The compiler line the kernel was configured with: the first line of `$(CC) --version`.
    public var compilerVersionText: String? { string("CONFIG_CC_VERSION_TEXT") }
}

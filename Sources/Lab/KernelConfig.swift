import Foundation
import ELF

/// A kernel's build configuration (`.config`, `/boot/config-R`, `/proc/config.gz`): what it says
/// about module loading and signing, which sysfs does not always show (CONFIG_MODULE_SIG_HASH,
/// CONFIG_MODULES when the kernel has no module support at all).
public struct KernelConfig: Sendable, Hashable {
    /// The file the options were read from, for messages.
    public let source: String
    /// `CONFIG_X=value` lines (quotes kept off strings); an option that is "is not set" is absent.
    public let options: [String: String]

    public init(text: String, source: String) {
        var options: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("CONFIG_") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            var value = line[line.index(after: equals)...]
            if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
            options[String(line[..<equals])] = String(value)
        }
        self.source = source
        self.options = options
    }

    /// Reads a plain `.config` or, for names ending in `.gz` (`/proc/config.gz`), a gzipped one.
    /// nil when the file does not exist or cannot be read: a missing config is not an error, the
    /// status just knows less.
    public static func load(_ path: String) -> KernelConfig? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let bytes: [UInt8]
        if path.hasSuffix(".gz") {
            guard let inflated = try? Decompressor.gzip(data, name: path) else { return nil }
            bytes = inflated
        } else {
            bytes = Array(data)
        }
        return KernelConfig(text: String(decoding: bytes, as: UTF8.self), source: path)
    }

    /// The first config found for `release` under `root` ("" for the real machine): the running
    /// kernel's own (/proc/config.gz), the distribution's copy in /boot, the headers' .config.
    public static func running(release: String, root: String = "") -> KernelConfig? {
        for path in ["/proc/config.gz", "/boot/config-\(release)", "/lib/modules/\(release)/build/.config"] {
            if let config = load(root + path) { return config }
        }
        return nil
    }

    public func isEnabled(_ option: String) -> Bool {
        options[option] == "y" || options[option] == "m"
    }

    /// CONFIG_MODULE_SIG_HASH ("sha256", "sha512"): the hash sign-file must use for this kernel.
    public var moduleSignatureHash: String? { options["CONFIG_MODULE_SIG_HASH"].flatMap { $0.isEmpty ? nil : $0 } }
}

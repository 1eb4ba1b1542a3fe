import Foundation

/// The signature `scripts/sign-file` appends to a kernel module: the PKCS#7 message, a 12-byte
/// `struct module_signature` (its length big-endian in the last 4 bytes) and the magic string.
/// Only its presence and shape are read here; the kernel checks it against its keyrings at load.
public struct ModuleSignature: Sendable, Hashable {
    public static let magic = Array("~Module signature appended~\n".utf8)
    /// `struct module_signature`: algo, hash, id_type, signer_len, key_id_len, pad[3], sig_len (be32).
    static let infoSize = 12
    /// id_type 2: the signer and key are inside the PKCS#7 message (what sign-file writes).
    static let pkcs7 = 2

    /// Bytes of the PKCS#7 message.
    public var length: Int
    public var isPKCS7: Bool

    /// The signature at the end of `bytes`, nil when there is none (an unsigned module) or when
    /// the trailer does not describe a message that fits in the file.
    public init?(trailerOf bytes: [UInt8]) {
        let magic = Self.magic
        guard bytes.count >= magic.count + Self.infoSize, Array(bytes.suffix(magic.count)) == magic else { return nil }
        let info = bytes.count - magic.count - Self.infoSize
        let length = bytes[(info + 8)..<(info + 12)].reduce(0) { $0 << 8 | Int($1) }
        guard length > 0, length <= info else { return nil }
        self.length = length
        isPKCS7 = Int(bytes[info + 2]) == Self.pkcs7
    }

    /// The signature of the module file at `path`; nil when unsigned or unreadable.
    public static func of(file path: String) -> ModuleSignature? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return ModuleSignature(trailerOf: Array(data))
    }
}

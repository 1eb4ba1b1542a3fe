import Foundation

/// Why the helper module could not be signed. Each message names the file and what was expected
/// of it; nothing is written when one is thrown (sign-file writes to a temporary name first).
public enum ModuleSigningError: Error, CustomStringConvertible, Sendable, Hashable {
    /// A key or certificate file that does not exist or cannot be read.
    case unreadable(path: String, role: String, expected: String, errno: Int32)
    /// The key file holds no PEM private key.
    case notPrivateKey(path: String, found: String)
    /// The key is encrypted and sign-file has no passphrase (it reads KBUILD_SIGN_PIN).
    case encryptedKey(path: String)
    /// No --sign-cert and the key file holds no certificate.
    case noCertificate(keyPath: String)
    /// The certificate file is neither a PEM certificate nor DER.
    case notCertificate(path: String, found: String)
    /// The headers have no scripts/sign-file.
    case signFileMissing(path: String, headers: String)
    /// The headers' config names no hash: the kernel was built without module signing.
    case noSignatureHash(config: String)
    /// The headers have neither .config nor include/config/auto.conf.
    case configMissing(headers: String)
    /// sign-file ran and failed.
    case signFileFailed(command: String, status: Int32, output: String, key: String, certificate: String)
    /// sign-file said it succeeded but the output has no signature trailer.
    case signatureMissing(path: String)
    /// Putting the signed module in place failed.
    case writeFailed(path: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case let .unreadable(path, role, expected, errno):
            return "\(path): cannot read the \(role) (\(String(cString: strerror(errno)))); expected \(expected)"
        case let .notPrivateKey(path, found):
            return "\(path): expected a PEM private key for --sign-key (-----BEGIN PRIVATE KEY-----, RSA or EC "
                + "PRIVATE KEY), found \(found)"
        case let .encryptedKey(path):
            return "\(path): the private key is encrypted; sign-file reads its passphrase from KBUILD_SIGN_PIN: "
                + "set it, or give an unencrypted key"
        case let .noCertificate(keyPath):
            return "\(keyPath): holds a private key but no certificate (-----BEGIN CERTIFICATE-----): give its "
                + "X.509 certificate with --sign-cert CERT, or one PEM file holding both"
        case let .notCertificate(path, found):
            return "\(path): expected an X.509 certificate for --sign-cert (PEM -----BEGIN CERTIFICATE----- or DER), found \(found)"
        case let .signFileMissing(path, headers):
            return "\(path) is missing: the kernel headers in \(headers) have no sign-file (Debian ships it in linux-kbuild-*)"
        case let .noSignatureHash(config):
            return "\(config): no CONFIG_MODULE_SIG_HASH: this kernel was built without module signing "
                + "(CONFIG_MODULE_SIG), so it checks no signature and needs none"
        case let .configMissing(headers):
            return "\(headers): no .config nor include/config/auto.conf to read CONFIG_MODULE_SIG_HASH from"
        case let .signFileFailed(command, status, output, key, certificate):
            var hint = ""
            if output.contains("key values mismatch") || output.contains("private key does not match") {
                hint = "the private key in \(key) does not belong to the certificate in \(certificate)"
            } else {
                hint = "sign-file could not sign with key \(key) and certificate \(certificate)"
            }
            return "\(hint): \(command) exited with status \(status):\n" + LabError.indent(output)
        case let .writeFailed(path, operation, errno):
            return "\(path): \(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case let .signatureMissing(path):
            return "\(path): sign-file succeeded but the file does not end with \"~Module signature appended~\""
        }
    }

    /// A short description of what a file starts with, for "found ...".
    static func preview(_ bytes: [UInt8]) -> String {
        if bytes.isEmpty { return "an empty file" }
        let head = bytes.prefix(64)
        let printable = head.allSatisfy { $0 == 0x0a || $0 == 0x0d || $0 == 0x09 || (0x20..<0x7f).contains($0) }
        if printable {
            let line = String(decoding: head, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
            return "text starting \"\(line)\""
        }
        return "\(bytes.count) bytes of binary data starting " + bytes.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")
    }
}

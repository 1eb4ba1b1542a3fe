import Foundation
import Patching

/// Signs a kernel module with the kernel's own `scripts/sign-file` (from the headers the module is
/// built against), with the hash that kernel's CONFIG_MODULE_SIG_HASH names: a kernel that enforces
/// signatures (module.sig_enforce, CONFIG_MODULE_SIG_FORCE, lockdown) loads only modules signed
/// this way by a key it trusts (built in, or enrolled with `mokutil --import`).
///
/// The key and certificate are checked before sign-file runs, so a wrong file is named with what
/// was expected instead of an OpenSSL error stack; sign-file writes to a temporary name that
/// replaces the module only once its signature trailer is there.
public struct ModuleSigner: Sendable, Hashable {
    /// The PEM private key.
    public let key: String
    /// The X.509 certificate (PEM or DER); the key file itself when it holds both, as the kernel's
    /// own `certs/signing_key.pem` does.
    public let certificate: String

    /// Checks that `key` holds a PEM private key and `certificate` (or, when nil, `key`) a certificate.
    public init(key: String, certificate: String?, environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(ModuleSigningError) {
        let keyBytes = try Self.read(key, role: "private key (--sign-key)", expected: "a PEM private key")
        let keyText = String(decoding: keyBytes, as: UTF8.self)
        guard keyText.contains("-----BEGIN "), keyText.contains(" PRIVATE KEY-----") else {
            throw .notPrivateKey(path: key, found: ModuleSigningError.preview(keyBytes))
        }
        // sign-file asks OpenSSL for the passphrase through KBUILD_SIGN_PIN only; without it the
        // failure would read as a bad key.
        if keyText.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || keyText.contains("Proc-Type: 4,ENCRYPTED"),
           environment["KBUILD_SIGN_PIN"] == nil {
            throw .encryptedKey(path: key)
        }
        if let certificate {
            let bytes = try Self.read(certificate, role: "certificate (--sign-cert)", expected: "an X.509 certificate")
            // sign-file's own test: DER starts with a SEQUENCE of long-form length, else PEM.
            let der = bytes.count > 2 && bytes[0] == 0x30 && (0x81...0x84).contains(bytes[1])
            guard der || String(decoding: bytes, as: UTF8.self).contains("-----BEGIN CERTIFICATE-----") else {
                throw .notCertificate(path: certificate, found: ModuleSigningError.preview(bytes))
            }
            self.certificate = certificate
        } else {
            guard keyText.contains("-----BEGIN CERTIFICATE-----") else { throw .noCertificate(keyPath: key) }
            self.certificate = key
        }
        self.key = key
    }

    private static func read(_ path: String, role: String, expected: String) throws(ModuleSigningError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            let code: Int32 = FileManager.default.fileExists(atPath: path) ? EACCES : ENOENT
            throw .unreadable(path: path, role: role, expected: expected, errno: code)
        }
        return Array(data)
    }

    /// The hash the kernel of these headers verifies module signatures with (CONFIG_MODULE_SIG_HASH).
    public static func hash(headers: String) throws(ModuleSigningError) -> String {
        guard let config = KernelConfig.load(headers + "/.config") ?? KernelConfig.load(headers + "/include/config/auto.conf") else {
            throw .configMissing(headers: headers)
        }
        guard let hash = config.moduleSignatureHash else { throw .noSignatureHash(config: config.source) }
        return hash
    }

    /// Signs `module` in place with `headers`' sign-file; returns the hash used.
    @discardableResult
    public func sign(module: String, headers: String) throws(ModuleSigningError) -> String {
        let signFile = headers + "/scripts/sign-file"
        guard FileManager.default.isExecutableFile(atPath: signFile) else {
            throw .signFileMissing(path: signFile, headers: headers)
        }
        let hash = try Self.hash(headers: headers)
        let temporary = module + ".signing-\(getpid())"
        defer { Files.remove(temporary) }
        let arguments = [hash, key, certificate, module, temporary]
        let command = ([signFile] + arguments).joined(separator: " ")
        let result: HostTool.Result
        do {
            result = try HostTool.run(signFile, arguments, package: "linux-kbuild", throwing: LabError.self)
        } catch {
            throw .signFileFailed(command: command, status: -1, output: "\(error)", key: key, certificate: certificate)
        }
        guard result.status == 0 else {
            throw .signFileFailed(command: command, status: result.status, output: result.output, key: key, certificate: certificate)
        }
        guard ModuleSignature.of(file: temporary) != nil else { throw .signatureMissing(path: temporary) }
        guard rename(temporary, module) == 0 else {
            throw .writeFailed(path: module, operation: "rename the signed copy \(temporary) over it", errno: errno)
        }
        return hash
    }
}

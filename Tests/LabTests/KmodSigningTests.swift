import Foundation
import Testing
import TestSupport
@testable import Lab

/// `suture kmod build --sign-key KEY [--sign-cert CERT]`: the module signed by the Debian headers'
/// own scripts/sign-file with a key and self-signed certificate made by openssl at test time.
/// Each build goes to its own cache folder (--headers points at the shared headers), so no other
/// test's module is replaced underneath it.
@Suite("kmod build --sign-key: sign-file, openssl keys, modinfo")
struct KmodSigningTests {
    static let release = Ingredients.kernelRelease

    static func headers() throws -> String {
        try KernelModule(paths: LabPaths(cache: Fixtures.cacheFolder.path)).headers(release: release)
    }

    /// A fresh RSA key and its self-signed certificate (PEM), and one file holding both.
    struct TestKey {
        let folder: URL
        let key: String
        let certificate: String
        let combined: String
        let commonName: String

        init(commonName: String = "Suture test signer \(UUID().uuidString.prefix(6))") throws {
            folder = try Fixtures.temporaryFolder("suture-signkey")
            key = folder.appendingPathComponent("key.pem").path
            certificate = folder.appendingPathComponent("cert.pem").path
            combined = folder.appendingPathComponent("both.pem").path
            self.commonName = commonName
            let made = try Fixtures.run("openssl", ["req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                                    "-subj", "/CN=\(commonName)/", "-keyout", key, "-out", certificate])
            guard made.status == 0 else { throw Fixtures.Failure("openssl req failed (apt-get install openssl): \(made.stderr)") }
            try Data(try Data(contentsOf: URL(fileURLWithPath: key)) + Data(contentsOf: URL(fileURLWithPath: certificate)))
                .write(to: URL(fileURLWithPath: combined))
        }

        /// The certificate's serial as modinfo prints sig_key: colon-separated hex pairs.
        func serial() throws -> String {
            let line = try Fixtures.check("openssl", ["x509", "-in", certificate, "-noout", "-serial"])
            var hex = String(try #require(line.split(separator: "=").last)).trimmingCharacters(in: .whitespacesAndNewlines)
            if hex.count % 2 == 1 { hex = "0" + hex }
            return stride(from: 0, to: hex.count, by: 2).map { i in
                String(hex[hex.index(hex.startIndex, offsetBy: i)..<hex.index(hex.startIndex, offsetBy: i + 2)])
            }.joined(separator: ":")
        }
    }

    static func modinfo(_ field: String, _ ko: String) throws -> String {
        try Fixtures.check("modinfo", ["-F", field, ko]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// `suture kmod build` for the lab's kernel into `cache`, with `arguments` added.
    static func build(_ arguments: [String], cache: URL) throws -> Fixtures.Output {
        try Fixtures.suture(["kmod", "build", "--kernel-release", release, "--headers", try headers()] + arguments,
                            environment: ["SUTURE_CACHE": cache.path])
    }

    /// The module signed with a fresh test key, built into its own cache folder.
    static func signedModule() throws -> (ko: String, key: TestKey) {
        let key = try TestKey()
        let cache = try Fixtures.temporaryFolder("suture-kmod-signed")
        let built = try build(["--sign-key", key.combined], cache: cache)
        guard built.status == 0 else { throw Fixtures.Failure("kmod build --sign-key failed: \(built.stderr)") }
        return (built.stdout.trimmingCharacters(in: .whitespacesAndNewlines), key)
    }

    static func expectSigned(_ ko: String, by key: TestKey, hash: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: ko))
        #expect(bytes.suffix(28) == Data("~Module signature appended~\n".utf8), "\(ko) has no signature trailer", sourceLocation: sourceLocation)
        #expect(try modinfo("sig_id", ko) == "PKCS#7", sourceLocation: sourceLocation)
        #expect(try modinfo("signer", ko) == key.commonName, sourceLocation: sourceLocation)
        #expect(try modinfo("sig_key", ko) == (try key.serial()), sourceLocation: sourceLocation)
        #expect(try modinfo("sig_hashalgo", ko) == hash, sourceLocation: sourceLocation)
        #expect(try modinfo("vermagic", ko) == "6.1.0-56-amd64 SMP preempt mod_unload modversions", sourceLocation: sourceLocation)
    }

    @Test("--sign-key KEY --sign-cert CERT, and one PEM holding both: modinfo shows the cert's signer and serial, hashed as CONFIG_MODULE_SIG_HASH says")
    func signsWithTheHeadersSignFile() throws {
        // The oracle for the hash: the headers' .config, read here with grep.
        let line = try Fixtures.check("grep", ["^CONFIG_MODULE_SIG_HASH=", try Self.headers() + "/.config"])
        let hash = line.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "=")[1].replacingOccurrences(of: "\"", with: "")
        #expect(hash == "sha256")
        let key = try TestKey()
        let cache = try Fixtures.temporaryFolder("suture-kmod-signed")
        let built = try Self.build(["--sign-key", key.key, "--sign-cert", key.certificate], cache: cache)
        #expect(built.status == 0, "\(built.stderr)")
        let ko = built.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(ko == cache.path + "/kmod/\(Self.release)/suture.ko")
        #expect(built.stderr.contains("signed with \(key.key) (certificate \(key.certificate), sha256)"))
        try Self.expectSigned(ko, by: key, hash: hash)
        // kmod status shows the module file as signed.
        let status = try Fixtures.suture(["kmod", "status", "--module", ko])
        #expect(status.stdout.contains("module file: \(ko) (signed, "), "\(status.stdout)")

        let other = try TestKey()
        let combined = try Self.build(["--sign-key", other.combined], cache: cache)
        #expect(combined.status == 0, "\(combined.stderr)")
        try Self.expectSigned(ko, by: other, hash: hash)

        // Without --sign-key the module is built unsigned again.
        #expect(try Self.build([], cache: cache).status == 0)
        let plain = try Data(contentsOf: URL(fileURLWithPath: ko))
        #expect(plain.suffix(28) != Data("~Module signature appended~\n".utf8))
        #expect(try Fixtures.run("modinfo", ["-F", "signer", ko]).stdout.isEmpty)
    }

    @Test("the hash follows the headers' CONFIG_MODULE_SIG_HASH (sha512); headers without it or without sign-file are refused, the module untouched")
    func hashFromConfig() throws {
        let headers = try Self.headers()
        let key = try TestKey()
        let signer = try ModuleSigner(key: key.key, certificate: key.certificate)
        let folder = try Fixtures.temporaryFolder("suture-sign-headers")
        // Headers whose config names sha512, with the real scripts/sign-file.
        let fake = folder.appendingPathComponent("headers")
        try FileManager.default.createDirectory(at: fake, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: fake.path + "/scripts", withDestinationPath: headers + "/scripts")
        try "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_HASH=\"sha512\"\n".write(toFile: fake.path + "/.config", atomically: true, encoding: .utf8)
        let unsigned = try KernelModule(paths: LabPaths(cache: Fixtures.cacheFolder.path)).build(release: Self.release)
        let ko = folder.appendingPathComponent("suture.ko").path
        try FileManager.default.copyItem(atPath: unsigned, toPath: ko)
        #expect(try signer.sign(module: ko, headers: fake.path) == "sha512")
        try Self.expectSigned(ko, by: key, hash: "sha512")

        // A config with no hash: a kernel built without module signing.
        let before = try Data(contentsOf: URL(fileURLWithPath: ko))
        try "# CONFIG_MODULE_SIG is not set\n".write(toFile: fake.path + "/.config", atomically: true, encoding: .utf8)
        #expect(throws: ModuleSigningError.noSignatureHash(config: fake.path + "/.config")) {
            try signer.sign(module: ko, headers: fake.path)
        }
        #expect(ModuleSigningError.noSignatureHash(config: fake.path + "/.config").description.contains("no CONFIG_MODULE_SIG_HASH"))
        // No scripts/sign-file.
        let bare = folder.appendingPathComponent("bare")
        try FileManager.default.createDirectory(at: bare, withIntermediateDirectories: true)
        #expect(throws: ModuleSigningError.signFileMissing(path: bare.path + "/scripts/sign-file", headers: bare.path)) {
            try signer.sign(module: ko, headers: bare.path)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: ko)) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["bare", "headers", "suture.ko"])
    }

    @Test("missing key, a cert given as key, a key without cert, a bad cert, an encrypted key, a key of another cert: each named, exit 1, no module written")
    func badKeys() throws {
        let key = try TestKey()
        let other = try TestKey()
        let folder = key.folder
        let garbage = folder.appendingPathComponent("garbage.pem").path
        try "garbage\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        let encrypted = folder.appendingPathComponent("encrypted.pem").path
        let made = try Fixtures.run("openssl", ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                                                "-aes256", "-pass", "pass:secret", "-out", encrypted])
        #expect(made.status == 0, "\(made.stderr)")
        let missing = folder.appendingPathComponent("nope.pem").path
        let cases: [([String], String)] = [
            (["--sign-key", missing, "--sign-cert", key.certificate],
             "\(missing): cannot read the private key (--sign-key) (No such file or directory); expected a PEM private key"),
            (["--sign-key", key.certificate, "--sign-cert", key.certificate],
             "\(key.certificate): expected a PEM private key for --sign-key (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY), found text starting \"-----BEGIN CERTIFICATE-----\""),
            (["--sign-key", key.key],
             "\(key.key): holds a private key but no certificate (-----BEGIN CERTIFICATE-----): give its X.509 certificate with --sign-cert CERT"),
            (["--sign-key", key.key, "--sign-cert", garbage],
             "\(garbage): expected an X.509 certificate for --sign-cert (PEM -----BEGIN CERTIFICATE----- or DER), found text starting \"garbage\""),
            (["--sign-key", key.key, "--sign-cert", missing],
             "\(missing): cannot read the certificate (--sign-cert) (No such file or directory)"),
            (["--sign-key", encrypted, "--sign-cert", key.certificate],
             "\(encrypted): the private key is encrypted; sign-file reads its passphrase from KBUILD_SIGN_PIN"),
            // Passes the file checks; sign-file itself refuses after the build.
            (["--sign-key", other.key, "--sign-cert", key.certificate],
             "the private key in \(other.key) does not belong to the certificate in \(key.certificate): "),
        ]
        for (arguments, message) in cases {
            let cache = try Fixtures.temporaryFolder("suture-kmod-badkey")
            let result = try Self.build(arguments, cache: cache)
            #expect(result.status == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains("suture kmod build: " + message), "\(arguments): \(result.stderr)")
            #expect(!result.stderr.contains("Fatal error"), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: cache.path + "/kmod/\(Self.release)/suture.ko"),
                    "\(arguments) left a module behind")
        }
        // The mismatch is sign-file's own refusal: its command and OpenSSL's words are shown.
        let cache = try Fixtures.temporaryFolder("suture-kmod-badkey")
        let mismatch = try Self.build(["--sign-key", other.key, "--sign-cert", key.certificate], cache: cache)
        #expect(mismatch.stderr.contains("scripts/sign-file sha256 \(other.key) \(key.certificate) ") && mismatch.stderr.contains("key values mismatch"))
        // With the passphrase in KBUILD_SIGN_PIN the encrypted key is accepted by the checks.
        #expect(throws: Never.self) {
            _ = try ModuleSigner(key: encrypted, certificate: key.certificate, environment: ["KBUILD_SIGN_PIN": "secret"])
        }
    }
}

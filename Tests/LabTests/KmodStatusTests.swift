import Foundation
import Testing
import TestSupport
@testable import Lab

/// `suture kmod status`: each reason the module cannot load, read from a folder laid out like /
/// (a running kernel cannot be locked down on demand; the lab tests do it at boot), and what it
/// says about this very host.
@Suite("kmod status: why the helper module can or cannot load")
struct KmodStatusTests {
    static let release = "6.1.0-56-amd64"

    /// A folder laid out like / with the files the status reads.
    struct FakeRoot {
        let url: URL
        var path: String { url.path }

        init() throws {
            url = try Fixtures.temporaryFolder("suture-fakeroot")
            try write("/proc/modules", "")
            try write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
            try write("/sys/module/module/parameters/sig_enforce", "N\n")
            try write("/proc/sys/kernel/modules_disabled", "0\n")
        }

        func write(_ relative: String, _ text: String) throws {
            let file = url.appendingPathComponent(String(relative.dropFirst()))
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: file, atomically: true, encoding: .utf8)
        }

        func remove(_ relative: String) throws {
            try FileManager.default.removeItem(at: url.appendingPathComponent(String(relative.dropFirst())))
        }

        func status(uid: UInt32 = 0) -> KernelModuleStatus {
            KernelModuleStatus.read(root: path, release: KmodStatusTests.release, effectiveUID: uid)
        }
    }

    @Test("nothing in the way: can load")
    func clear() throws {
        let root = try FakeRoot()
        let status = root.status()
        #expect(status.obstacles.isEmpty)
        #expect(!status.loaded && status.moduleSupport && status.lockdown == "none")
        #expect(status.signaturesEnforced == false && status.modulesDisabled == false)
        let text = status.describe()
        #expect(text.contains("loaded: no\n") && text.contains("lockdown: none (/sys/kernel/security/lockdown)"))
        #expect(text.contains("can load: yes (suture kmod load)"))
        // Loaded: /sys/module/suture exists.
        try root.write("/sys/module/suture/refcnt", "0\n")
        #expect(root.status().loaded && root.status().describe().hasPrefix("loaded: yes (/dev/suture missing)"))
    }

    @Test("lockdown [integrity] and [confidentiality] are obstacles a signature lifts; [none] is not")
    func lockdown() throws {
        let root = try FakeRoot()
        for mode in ["integrity", "confidentiality"] {
            try root.write("/sys/kernel/security/lockdown", mode == "integrity"
                           ? "none [integrity] confidentiality\n" : "none integrity [confidentiality]\n")
            let status = root.status()
            #expect(status.lockdown == mode)
            #expect(status.obstacles == [.lockdown(mode: mode)])
            #expect(status.obstacles(moduleSigned: true).isEmpty)
            let text = status.describe()
            #expect(text.contains("can load: no\n  - the kernel is locked down (\(mode), /sys/kernel/security/lockdown)"))
            #expect(text.contains("suture kmod build --sign-key KEY --sign-cert CERT"))
        }
        // No lockdown file: unknown, and an empty /sys/kernel/security says securityfs is not mounted.
        try root.remove("/sys/kernel/security/lockdown")
        let unknown = root.status()
        #expect(unknown.lockdown == nil && unknown.obstacles.isEmpty)
        #expect(unknown.describe().contains("lockdown: unknown (securityfs is not mounted: mount -t securityfs securityfs /sys/kernel/security)"))
    }

    @Test("sig_enforce=Y, or CONFIG_MODULE_SIG_FORCE=y in the kernel's config, enforces signatures; a signed module gets past it")
    func signatures() throws {
        let root = try FakeRoot()
        try root.write("/sys/module/module/parameters/sig_enforce", "Y\n")
        let status = root.status()
        #expect(status.obstacles == [.signaturesEnforced(source: "/sys/module/module/parameters/sig_enforce is Y")])
        #expect(status.obstacles(moduleSigned: true).isEmpty)
        #expect(status.describe().contains("module signatures enforced: yes (module.sig_enforce=Y)"))
        #expect(status.describe().contains("--sign-key KEY"))

        // The parameter says N (or is missing) but the config forces signatures: /boot/config-R.
        try root.write("/sys/module/module/parameters/sig_enforce", "N\n")
        try root.write("/boot/config-\(Self.release)", "CONFIG_MODULES=y\nCONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_FORCE=y\nCONFIG_MODULE_SIG_HASH=\"sha512\"\n")
        let forced = root.status()
        let config = root.path + "/boot/config-\(Self.release)"
        #expect(forced.config?.source == config && forced.config?.moduleSignatureHash == "sha512")
        #expect(forced.obstacles == [.signaturesEnforced(source: "CONFIG_MODULE_SIG_FORCE=y in \(config)")])
        #expect(forced.describe().contains("kernel config: \(config) (signatures hashed with sha512)"))
        // /proc/config.gz (the running kernel's own) wins over /boot.
        let gz = try Fixtures.run("sh", ["-c", "printf 'CONFIG_MODULES=y\\n# CONFIG_MODULE_SIG_FORCE is not set\\n' | gzip -c > '\(root.path)/proc/config.gz'"])
        #expect(gz.status == 0)
        #expect(root.status().config?.source == root.path + "/proc/config.gz" && root.status().obstacles.isEmpty)
    }

    @Test("modules_disabled=1, no module support (no /proc/modules) and not root are obstacles no signature lifts")
    func hardObstacles() throws {
        let root = try FakeRoot()
        try root.write("/proc/sys/kernel/modules_disabled", "1\n")
        #expect(root.status().obstacles == [.modulesDisabled])
        #expect(root.status().obstacles(moduleSigned: true) == [.modulesDisabled])
        #expect(root.status().describe().contains("  - module loading is disabled until reboot (/proc/sys/kernel/modules_disabled is 1)"))
        #expect(!root.status().describe().contains("--sign-key"))

        try root.write("/proc/sys/kernel/modules_disabled", "0\n")
        #expect(root.status(uid: 1000).obstacles == [.notRoot(uid: 1000)])
        #expect(root.status(uid: 1000).describe().contains("running as root: no (uid 1000)"))

        try root.remove("/proc/modules")
        #expect(root.status().obstacles == [.noModuleSupport(config: nil)])
        try root.write("/boot/config-\(Self.release)", "# CONFIG_MODULES is not set\n")
        let config = root.path + "/boot/config-\(Self.release)"
        #expect(root.status().obstacles == [.noModuleSupport(config: config)])
        #expect(root.status().describe().contains("CONFIG_MODULES is not set in \(config)"))

        // Everything at once, most fundamental first.
        try root.write("/proc/sys/kernel/modules_disabled", "1\n")
        try root.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
        try root.write("/sys/module/module/parameters/sig_enforce", "Y\n")
        #expect(root.status(uid: 7).obstacles == [.noModuleSupport(config: config), .modulesDisabled, .lockdown(mode: "integrity"),
                                                  .signaturesEnforced(source: "/sys/module/module/parameters/sig_enforce is Y"),
                                                  .notRoot(uid: 7)])
    }

    /// What this host's own files say, each read here independently of Suture.
    static func hostFacts() -> (modules: Bool, sigEnforce: String?, disabled: String?, lockdown: String?) {
        func text(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return (FileManager.default.fileExists(atPath: "/proc/modules"), text("/sys/module/module/parameters/sig_enforce"),
                text("/proc/sys/kernel/modules_disabled"), text("/sys/kernel/security/lockdown"))
    }

    @Test("on this host, as root and as uid 65534: suture kmod status agrees with /proc and /sys; kmod load refuses before insmod")
    func thisHost() throws {
        let facts = Self.hostFacts()
        let cache = try Fixtures.temporaryFolder("suture-kmod-cache")
        let environment = ["SUTURE_CACHE": cache.path]
        let output = try Fixtures.suture(["kmod", "status"], environment: environment)
        #expect(output.status == 0, "\(output.stderr)")
        let text = output.stdout
        print("suture kmod status on this host:\n\(text)")
        #expect(text.contains("module support: " + (facts.modules ? "yes" : "no (no /proc/modules)")))
        #expect(text.contains("module signatures enforced: " + (facts.sigEnforce.map { $0 == "Y" ? "yes" : "no" } ?? "unknown")))
        #expect(text.contains("module loading disabled: " + (facts.disabled.map { $0 == "1" ? "yes" : "no" } ?? "unknown")))
        if let lockdown = facts.lockdown {
            let active = try #require(lockdown.split(separator: " ").first { $0.hasPrefix("[") }).dropFirst().dropLast()
            #expect(text.contains("lockdown: \(active) "))
        } else {
            #expect(text.contains("lockdown: unknown"))
        }
        #expect(text.contains("running as root: " + (geteuid() == 0 ? "yes" : "no")))
        #expect(text.contains("module file: \(cache.path)/kmod/\(KernelModuleStatus.runningRelease())/suture.ko (not built: suture kmod build)"))
        let canLoad = facts.modules && facts.sigEnforce != "Y" && facts.disabled != "1" && geteuid() == 0
            && (facts.lockdown?.contains("[none]") ?? true)
        #expect(text.contains(canLoad ? "can load: yes" : "can load: no"))

        // kmod load of an existing file refuses with the same reasons when there are any, and
        // never runs insmod then (this host has no module support: insmod would only fail).
        if !canLoad {
            let fake = cache.appendingPathComponent("suture.ko")
            try Data("not a module".utf8).write(to: fake)
            let load = try Fixtures.suture(["kmod", "load", "--module", fake.path], environment: environment)
            #expect(load.status == 1)
            #expect(load.stderr.hasPrefix("suture kmod load: cannot load \(fake.path) (unsigned):\n  - "), "\(load.stderr)")
            #expect(!load.stderr.contains("insmod"), "\(load.stderr)")
        }

        // As an unprivileged user (setpriv, util-linux): "not root" is one of the reasons.
        guard geteuid() == 0 else { return }
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: cache.path)
        let binary = try Fixtures.sutureBinary().path
        let nobody = try Fixtures.run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", binary, "kmod", "status"],
                                      environment: environment)
        #expect(nobody.status == 0, "\(nobody.stderr)")
        #expect(nobody.stdout.contains("running as root: no (uid 65534)"))
        #expect(nobody.stdout.contains("  - loading a module needs root (CAP_SYS_MODULE); this process runs as uid 65534"))
    }

    @Test("-t local on this host without the module: revert refuses, writes no journal, and says what loading the module takes; status reads /proc/kcore or says why not")
    func localTargetWithoutModule() throws {
        for device in ["/dev/suture", "/dev/kmem"] where FileManager.default.fileExists(atPath: device) {
            print("SKIP: \(device) exists on this host, so -t local does not reach the path without the module (the lab test covers it)")
            return
        }
        let state = try Fixtures.temporaryFolder("suture-local-state").appendingPathComponent("state")
        let environment = ["SUTURE_STATE_DIR": state.path]
        let revert = try Fixtures.suture(["revert", "-t", "local", "--all"], environment: environment)
        #expect(revert.status == 1)
        #expect(revert.stderr.hasPrefix("suture revert: -t local: the helper module is not loaded (no /dev/suture) and writes to this "
                                        + "kernel go through it; nothing was changed; "), "\(revert.stderr)")
        let obstacles = KernelModuleStatus.current().obstacles
        #expect(revert.stderr.contains(obstacles.isEmpty ? "run `suture kmod load` first"
                                       : "`suture kmod load` cannot load it now:\n  - \(obstacles[0])"), "\(revert.stderr)")
        #expect(!FileManager.default.fileExists(atPath: state.path), "revert created the state folder")

        let status = try Fixtures.suture(["status", "-t", "local"], environment: environment)
        if FileManager.default.isReadableFile(atPath: "/proc/kcore") {
            #expect(status.status == 0 && status.stdout == "no Suture patches recorded for local\n", "\(status.stderr)")
            #expect(status.stderr.contains("reading through /proc/kcore"))
        } else {
            #expect(status.status == 1)
            #expect(status.stderr.contains("the helper module is not loaded (no /dev/suture) and /proc/kcore cannot be read"), "\(status.stderr)")
        }
    }
}

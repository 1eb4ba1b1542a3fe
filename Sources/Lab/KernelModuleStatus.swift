import Foundation
import Patching

/// Whether the helper module is loaded on this machine, and what would keep it from loading.
///
/// Everything is read from files below `root` ("" for the machine itself): a test gives a folder
/// laid out like / to see each reason, since a running kernel cannot be put into lockdown or
/// signature enforcement on demand.
public struct KernelModuleStatus: Sendable, Hashable {
    public var loaded: Bool
    public var device: String
    public var deviceExists: Bool
    /// /proc/modules exists: the kernel was built with CONFIG_MODULES.
    public var moduleSupport: Bool
    /// `/sys/kernel/security/lockdown`'s active mode (`none`, `integrity`, `confidentiality`), when readable.
    public var lockdown: String?
    /// Whether securityfs is mounted (it holds the lockdown file), to say why lockdown is unknown.
    public var securityfsMounted: Bool
    /// `module.sig_enforce`: unsigned modules are refused (also set by CONFIG_MODULE_SIG_FORCE).
    public var signaturesEnforced: Bool?
    /// `/proc/sys/kernel/modules_disabled`: no module can be loaded until reboot.
    public var modulesDisabled: Bool?
    /// The running kernel's config (/proc/config.gz, /boot/config-R), when one is found.
    public var config: KernelConfig?
    public var effectiveUID: UInt32
    /// A kernel with /dev/kmem needs no module (`-t local` uses it).
    public var kmemExists: Bool

    /// Reads the state below `root` for the kernel `release`, as user `effectiveUID`.
    public static func read(root: String = "", release: String, effectiveUID: UInt32 = geteuid(),
                            device: String = "/dev/suture") -> KernelModuleStatus {
        func text(_ path: String) -> String? {
            (try? String(contentsOfFile: root + path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: root + path) }
        // "none [integrity] confidentiality": the active one is bracketed.
        let lockdown = text("/sys/kernel/security/lockdown").flatMap { line in
            line.split(separator: " ").first { $0.hasPrefix("[") }.map { String($0.dropFirst().dropLast()) }
        }
        // An unmounted securityfs leaves /sys/kernel/security empty.
        let security = (try? FileManager.default.contentsOfDirectory(atPath: root + "/sys/kernel/security")) ?? []
        return KernelModuleStatus(
            loaded: exists("/sys/module/\(KernelModule.name)"),
            device: device,
            deviceExists: exists(device),
            moduleSupport: exists("/proc/modules"),
            lockdown: lockdown,
            securityfsMounted: !security.isEmpty,
            signaturesEnforced: text("/sys/module/module/parameters/sig_enforce").map { $0 == "Y" || $0 == "1" },
            modulesDisabled: text("/proc/sys/kernel/modules_disabled").map { $0 == "1" },
            config: KernelConfig.running(release: release, root: root),
            effectiveUID: effectiveUID,
            kmemExists: exists("/dev/kmem"))
    }

    /// This machine, for the running kernel.
    public static func current(device: String = "/dev/suture") -> KernelModuleStatus {
        read(release: runningRelease(), device: device)
    }

    /// `uname -r`.
    public static func runningRelease() -> String {
        var names = utsname()
        uname(&names)
        return withUnsafeBytes(of: &names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// CONFIG_MODULE_SIG_FORCE in the running kernel's config.
    public var signaturesForcedByConfig: Bool { config?.isEnabled("CONFIG_MODULE_SIG_FORCE") ?? false }

    /// Every reason loading would fail, most fundamental first.
    public var obstacles: [KernelModuleObstacle] {
        var found: [KernelModuleObstacle] = []
        if !moduleSupport {
            let unset = config.map { !$0.isEnabled("CONFIG_MODULES") } ?? false
            found.append(.noModuleSupport(config: unset ? config?.source : nil))
        }
        if modulesDisabled == true { found.append(.modulesDisabled) }
        if let lockdown, lockdown != "none" { found.append(.lockdown(mode: lockdown)) }
        if signaturesEnforced == true {
            found.append(.signaturesEnforced(source: "/sys/module/module/parameters/sig_enforce is Y"))
        } else if signaturesForcedByConfig, let source = config?.source {
            found.append(.signaturesEnforced(source: "CONFIG_MODULE_SIG_FORCE=y in \(source)"))
        }
        if effectiveUID != 0 { found.append(.notRoot(uid: effectiveUID)) }
        return found
    }

    /// The obstacles a module stands before: a signed one gets past lockdown and enforcement if
    /// the kernel trusts its key, which only the kernel can tell (insmod says so).
    public func obstacles(moduleSigned: Bool) -> [KernelModuleObstacle] {
        obstacles.filter { !(moduleSigned && $0.isLiftedBySigning) }
    }

    /// The way past lockdown and signature enforcement.
    public static let signingHint = "sign the module with a key whose certificate the kernel trusts (built in, or enrolled with "
        + "`mokutil --import CERT` and a reboot): suture kmod build --sign-key KEY --sign-cert CERT"

    /// The status as `suture kmod status` prints it; `module` is the module file `kmod load` would use.
    public func describe(module: String? = nil) -> String {
        var lines: [String] = []
        lines.append(loaded ? "loaded: yes (\(device) \(deviceExists ? "present" : "missing"))" : "loaded: no")
        lines.append("module support: " + (moduleSupport ? "yes" : "no (no /proc/modules)"))
        lines.append("lockdown: " + (lockdown.map { "\($0) (/sys/kernel/security/lockdown)" }
            ?? (securityfsMounted ? "unknown (no lockdown LSM)" : "unknown (securityfs is not mounted: mount -t securityfs securityfs /sys/kernel/security)")))
        var enforced = signaturesEnforced.map { $0 ? "yes (module.sig_enforce=Y)" : "no (module.sig_enforce=N)" }
            ?? "unknown (no /sys/module/module/parameters/sig_enforce)"
        if signaturesForcedByConfig, let source = config?.source { enforced = "yes (CONFIG_MODULE_SIG_FORCE=y in \(source))" }
        lines.append("module signatures enforced: " + enforced)
        lines.append("module loading disabled: " + (modulesDisabled.map { $0 ? "yes (kernel.modules_disabled=1)" : "no" } ?? "unknown"))
        if let config {
            lines.append("kernel config: \(config.source)" + (config.moduleSignatureHash.map { " (signatures hashed with \($0))" } ?? " (no module signing)"))
        }
        lines.append("running as root: " + (effectiveUID == 0 ? "yes" : "no (uid \(effectiveUID))"))
        var signed = false
        if let module {
            if FileManager.default.fileExists(atPath: module) {
                let signature = ModuleSignature.of(file: module)
                signed = signature != nil
                lines.append("module file: \(module) (" + (signature.map { "signed, \($0.length)-byte \($0.isPKCS7 ? "PKCS#7 " : "")signature" } ?? "unsigned") + ")")
            } else {
                lines.append("module file: \(module) (not built: suture kmod build)")
            }
        }
        if kmemExists { lines.append("/dev/kmem exists: -t local uses it and needs no module") }
        if !loaded {
            let blocking = obstacles(moduleSigned: signed)
            if blocking.isEmpty {
                lines.append("can load: yes (suture kmod load)"
                             + (signed && obstacles.contains { $0.isLiftedBySigning } ? ", if the kernel trusts the key that signed it" : ""))
            } else {
                lines.append("can load: no")
                lines += blocking.map { "  - \($0)" }
                if blocking.contains(where: \.isLiftedBySigning) { lines.append("  " + Self.signingHint) }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public struct CommandOutcome: Sendable {
        public var status: Int32
        public var output: String
    }

    public static func insmod(_ path: String) throws(LabError) -> CommandOutcome {
        let result = try HostTool.run("insmod", [path], package: "kmod", throwing: LabError.self)
        return CommandOutcome(status: result.status, output: result.output)
    }

    /// What an insmod failure means, from the strerror text insmod prints (kmod and busybox alike)
    /// and whether the module carries a signature. Under sig_enforce the kernel answers
    /// EKEYREJECTED for an unsigned module and for an untrusted key; under lockdown alone, EPERM.
    public static func explainInsmodFailure(_ output: String, module: String, signed: Bool) -> String? {
        if output.contains("Key was rejected by service") || output.contains("Required key not available") {
            return signed
                ? "the kernel rejected the signature of \(module): the key that signed it is not one the kernel trusts "
                    + "(enroll its certificate with `mokutil --import CERT` and reboot, or sign with a key the kernel trusts)"
                : "the kernel refuses unsigned modules and \(module) is not signed: " + signingHint
        }
        if output.contains("Operation not permitted") {
            return signed
                ? "the kernel refused \(module) (EPERM): under lockdown the key that signed it must be one the kernel trusts; "
                    + "loading also needs CAP_SYS_MODULE"
                : "the kernel refused \(module) (EPERM): under lockdown only signed modules load (" + signingHint + "); "
                    + "loading also needs CAP_SYS_MODULE"
        }
        if output.contains("Invalid module format") || output.contains("Exec format error") {
            return "\(module) was not built for this kernel (vermagic or symbol versions differ): suture kmod build"
        }
        return nil
    }

    public static func rmmod() throws(LabError) -> CommandOutcome {
        let result = try HostTool.run("rmmod", [KernelModule.name], package: "kmod", throwing: LabError.self)
        return CommandOutcome(status: result.status, output: result.output)
    }
}

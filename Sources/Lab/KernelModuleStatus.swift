import Foundation
import Patching

/// Whether the helper module is loaded on this machine, and what would keep it from loading.
public struct KernelModuleStatus: Sendable, Hashable {
    public var loaded: Bool
    public var device: String
    public var deviceExists: Bool
    /// `/sys/kernel/security/lockdown`'s active mode (`none`, `integrity`, `confidentiality`), when readable.
    public var lockdown: String?
    /// `module.sig_enforce`: unsigned modules are refused.
    public var signaturesEnforced: Bool?
    /// `/proc/sys/kernel/modules_disabled`: no module can be loaded until reboot.
    public var modulesDisabled: Bool?
    /// A kernel with /dev/kmem needs no module (`-t local` uses it).
    public var kmemExists: Bool

    /// Why loading would fail, if something says it will.
    public var blocker: String? {
        if modulesDisabled == true { return "module loading is disabled until reboot (kernel.modules_disabled=1)" }
        if let lockdown, lockdown != "none" {
            return "the kernel is locked down (\(lockdown)): unsigned modules are refused and text writes would be too"
        }
        if signaturesEnforced == true {
            return "module signatures are enforced (module.sig_enforce=1): sign suture.ko with a key the kernel trusts "
                + "(scripts/sign-file sha256 KEY CERT suture.ko; --sign-key is not implemented yet)"
        }
        return nil
    }

    public static func current(device: String = "/dev/suture") -> KernelModuleStatus {
        func text(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // "[none] integrity confidentiality": the active one is bracketed.
        let lockdown = text("/sys/kernel/security/lockdown").flatMap { line in
            line.split(separator: " ").first { $0.hasPrefix("[") }.map { String($0.dropFirst().dropLast()) }
        }
        return KernelModuleStatus(
            loaded: FileManager.default.fileExists(atPath: "/sys/module/\(KernelModule.name)"),
            device: device,
            deviceExists: FileManager.default.fileExists(atPath: device),
            lockdown: lockdown,
            signaturesEnforced: text("/sys/module/module/parameters/sig_enforce").map { $0 == "Y" },
            modulesDisabled: text("/proc/sys/kernel/modules_disabled").map { $0 == "1" },
            kmemExists: FileManager.default.fileExists(atPath: "/dev/kmem"))
    }

    public func describe() -> String {
        var lines: [String] = []
        lines.append(loaded ? "loaded: yes (\(device) \(deviceExists ? "present" : "missing"))" : "loaded: no")
        lines.append("lockdown: \(lockdown ?? "unknown (mount securityfs on /sys/kernel/security to read it)")")
        lines.append("module signatures enforced: \(signaturesEnforced.map { $0 ? "yes" : "no" } ?? "unknown")")
        lines.append("module loading disabled: \(modulesDisabled.map { $0 ? "yes" : "no" } ?? "unknown")")
        if kmemExists { lines.append("/dev/kmem exists: -t local uses it and needs no module") }
        if !loaded { lines.append("can load: " + (blocker.map { "no, \($0)" } ?? "yes (suture kmod load)")) }
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

    public static func rmmod() throws(LabError) -> CommandOutcome {
        let result = try HostTool.run("rmmod", [KernelModule.name], package: "kmod", throwing: LabError.self)
        return CommandOutcome(status: result.status, output: result.output)
    }
}

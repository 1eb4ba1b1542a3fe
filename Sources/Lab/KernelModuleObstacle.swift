/// One reason the running kernel would refuse to load the helper module, with the file that says so.
public enum KernelModuleObstacle: Sendable, Hashable, CustomStringConvertible {
    /// Built without CONFIG_MODULES: no /proc/modules; `config` names the config saying so, if found.
    case noModuleSupport(config: String?)
    /// kernel.modules_disabled=1: no module loads until reboot.
    case modulesDisabled
    /// The lockdown LSM is in `mode` (integrity or confidentiality): only signed modules load.
    case lockdown(mode: String)
    /// Unsigned modules are refused: `source` is module.sig_enforce or CONFIG_MODULE_SIG_FORCE.
    case signaturesEnforced(source: String)
    /// Loading needs CAP_SYS_MODULE; this process runs as `uid`.
    case notRoot(uid: UInt32)

    /// Whether a module signed with a key the kernel trusts gets past it.
    public var isLiftedBySigning: Bool {
        switch self {
        case .lockdown, .signaturesEnforced: return true
        case .noModuleSupport, .modulesDisabled, .notRoot: return false
        }
    }

    public var description: String {
        switch self {
        case let .noModuleSupport(config):
            return "the kernel has no loadable module support (no /proc/modules"
                + (config.map { "; CONFIG_MODULES is not set in \($0)" } ?? "") + "): -t local needs /dev/kmem or a kernel with modules"
        case .modulesDisabled:
            return "module loading is disabled until reboot (/proc/sys/kernel/modules_disabled is 1)"
        case let .lockdown(mode):
            return "the kernel is locked down (\(mode), /sys/kernel/security/lockdown): it loads only modules signed with a key it trusts"
        case let .signaturesEnforced(source):
            return "module signatures are enforced (\(source)): unsigned modules are refused"
        case let .notRoot(uid):
            return "loading a module needs root (CAP_SYS_MODULE); this process runs as uid \(uid)"
        }
    }
}

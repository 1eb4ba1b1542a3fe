import ELF
import Foundation

/// Why `suture build` would not, or could not, turn a source patch into a bundle. Each message names
/// the file (tree, config, patch, object), what was expected and what was found, and what to do.
public enum KernelBuildError: Error, CustomStringConvertible {
    /// A host program is not installed.
    case toolMissing(tool: String, package: String)
    /// Build prerequisites are missing: what is missing and the Debian packages that provide it.
    case prerequisitesMissing(missing: [String], packages: [String])
    case commandFailed(command: String, status: Int32, log: String?, output: String)
    case io(path: String, operation: String, errno: Int32)
    case notAKernelTree(path: String, expected: String, found: String)
    case configMissing(path: String)
    /// The config names no compiler (`CONFIG_CC_VERSION_TEXT`), so the build cannot be matched to it.
    case compilerUnknown(config: String)
    /// The compiler that would build the objects is not the one the kernel was built with.
    case compilerMismatch(config: String, configText: String, compiler: String, found: String)
    case patchUnreadable(path: String, reason: String)
    case patchMalformed(path: String, line: Int, expected: String, found: String)
    case patchEmpty(path: String)
    /// `patch` refused: its own output says which hunk and why.
    case patchDoesNotApply(patch: String, tree: String, output: String)
    /// The patch touches a file that is not a C source built into an object.
    case unsupportedFile(patch: String, file: String, reason: String)
    /// The .c file exists but no object is built from it under this config.
    case objectNotBuilt(file: String, object: String, makefile: String, reason: String)
    /// The Makefile and kbuild itself disagree on which module an object belongs to.
    case membershipMismatch(object: String, makefile: String, expected: String, kbuild: String)
    case objectMissing(path: String, command: String)
    case unknownDebianKernel(release: String, known: [String])
    case packageUnavailable(package: String, version: String, output: String, policy: String)
    case kernelImage(path: String, reason: String)
    /// Restoring the tree after building failed: the journal still holds the original files.
    case restoreFailed(tree: String, journal: String, reason: String)
    /// The build was interrupted (SIGINT, SIGTERM, SIGHUP) while `command` ran.
    case interrupted(command: String)
    /// ObjectDiff could not compare the objects, or their difference cannot be made in place.
    case diff(ObjectDiffError)

    public var description: String {
        switch self {
        case let .toolMissing(tool, package):
            return "\(tool) is not installed (Debian package \(package)): apt-get install -y \(package)"
        case let .prerequisitesMissing(missing, packages):
            return "kernel build prerequisites missing: \(missing.joined(separator: ", "))\n"
                + "  install them with: apt-get install -y \(packages.joined(separator: " "))"
        case let .commandFailed(command, status, log, output):
            var text = "\(command) exited with status \(status)"
            if let log { text += " (full output in \(log))" }
            let trimmed = output.trimmingCharacters(in: .whitespacesAndNewlines)
            if !trimmed.isEmpty { text += ":\n" + Self.indent(trimmed) }
            return text
        case let .io(path, operation, code):
            return "\(path): cannot \(operation): \(String(cString: strerror(code)))"
        case let .notAKernelTree(path, expected, found):
            return "\(path): not a kernel source tree: expected \(expected), found \(found)"
        case let .configMissing(path):
            return "\(path): no kernel config there (give --config, the /boot/config-* the kernel was built with)"
        case let .compilerUnknown(config):
            return "\(config): no CONFIG_CC_VERSION_TEXT: cannot tell which compiler built this kernel, so a rebuild cannot be matched to it"
        case let .compilerMismatch(config, configText, compiler, found):
            return "\(config): the kernel was built with \"\(configText)\" (CONFIG_CC_VERSION_TEXT) but "
                + "`\(compiler) --version` says \"\(found)\": objects built with another compiler differ from the "
                + "kernel's, so their diff would not describe the running code. Install that compiler (or give --cc)."
        case let .patchUnreadable(path, reason):
            return "\(path): cannot read the patch: \(reason)"
        case let .patchMalformed(path, line, expected, found):
            return "\(path):\(line): not a unified diff: expected \(expected), found \"\(found)\""
        case let .patchEmpty(path):
            return "\(path): the patch changes no file (expected --- a/FILE / +++ b/FILE headers and @@ hunks)"
        case let .patchDoesNotApply(patch, tree, output):
            return "\(patch) does not apply to \(tree) (patch -p1 said):\n" + Self.indent(output.trimmingCharacters(in: .whitespacesAndNewlines))
                + "\n  the tree was left unmodified"
        case let .unsupportedFile(patch, file, reason):
            return "\(patch): \(file): \(reason)"
        case let .objectNotBuilt(file, object, makefile, reason):
            return "\(file): no object \(object) is built from it under this config (\(makefile)): \(reason)"
        case let .membershipMismatch(object, makefile, expected, kbuild):
            return "\(object): \(makefile) says \(expected) but kbuild compiled it as \(kbuild)"
        case let .objectMissing(path, command):
            return "\(path): not there after `\(command)` succeeded"
        case let .unknownDebianKernel(release, known):
            return "no pinned source for Debian kernel \(release): Suture knows \(known.joined(separator: ", ")) "
                + "(use --kernel-source DIR --config F for another kernel)"
        case let .packageUnavailable(package, version, output, policy):
            return "\(package)=\(version) is not available from the apt archive (the pinned source of this kernel):\n"
                + Self.indent(output) + "\n  apt-cache policy \(package):\n" + Self.indent(policy)
        case let .kernelImage(path, reason):
            return "\(path): cannot read the kernel's identity: \(reason)"
        case let .restoreFailed(tree, journal, reason):
            return "\(tree): could not restore the files the patch changed (\(reason)); the originals are kept in \(journal) "
                + "and the next `suture build` on this tree restores them first"
        case let .interrupted(command):
            return "interrupted during `\(command)`; the tree was left as it was before the build"
        case let .diff(error):
            return "\(error)"
        }
    }

    static func indent(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n")
    }
}

import ArgumentParser
import Foundation
import Lab
import Patching

/// `suture kmod ...`: the helper module behind `-t local` on kernels without /dev/kmem.
struct KmodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kmod",
        abstract: "Build, load, unload and inspect the helper kernel module (/dev/suture) behind -t local.",
        subcommands: [Build.self, Load.self, Unload.self, Status.self]
    )

    static let progress: LabProgress = { line in
        FileHandle.standardError.write(Data(("kmod: " + line + "\n").utf8))
    }

    static func runningRelease() -> String { KernelModuleStatus.runningRelease() }

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compile suture.ko against a kernel's headers (the running kernel's by default).")

        @Option(name: .customLong("kernel-release"), help: "The kernel to build for (default: uname -r).")
        var kernelRelease: String?
        @Option(help: ArgumentHelp("Kernel headers folder (default: /lib/modules/R/build, /usr/src/linux-headers-R, "
                                   + "or Debian's packages for the lab's kernel, fetched into the cache).", valueName: "dir"))
        var headers: String?
        @Option(help: ArgumentHelp("The Suture checkout holding kmod/ (default: the one this binary was built from).", valueName: "dir"))
        var source: String?
        @Option(name: .customLong("sign-key"), help: ArgumentHelp(
            "Sign the module with this PEM private key (the headers' scripts/sign-file, hash from CONFIG_MODULE_SIG_HASH), "
            + "for kernels that enforce signatures or are locked down.", valueName: "key"))
        var signKey: String?
        @Option(name: .customLong("sign-cert"), help: ArgumentHelp(
            "The key's X.509 certificate, PEM or DER (default: the --sign-key file, when it holds both).", valueName: "cert"))
        var signCert: String?

        func validate() throws {
            if signCert != nil && signKey == nil { throw ValidationError("--sign-cert needs --sign-key") }
        }

        func run() throws {
            try running("kmod build") {
                let release = kernelRelease ?? KmodCommand.runningRelease()
                let module = KernelModule(sourceRoot: source)
                // Checked before the build, so a wrong key file fails in a second, not after make.
                let signer = try signKey.map { key throws(ModuleSigningError) in try ModuleSigner(key: key, certificate: signCert) }
                let path = try module.build(release: release, headers: headers, signer: signer, progress: KmodCommand.progress)
                FileHandle.standardOutput.write(Data((path + "\n").utf8))
            }
        }
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "insmod the module built for the running kernel.")

        @Option(help: ArgumentHelp("The module file (default: the cache's build for uname -r).", valueName: "ko"))
        var module: String?

        func run() throws {
            try running("kmod load") {
                let status = KernelModuleStatus.current()
                if status.loaded {
                    FileHandle.standardOutput.write(Data("already loaded: \(status.device)\n".utf8))
                    return
                }
                let path = module ?? KernelModule().modulePath(release: KmodCommand.runningRelease())
                guard FileManager.default.fileExists(atPath: path) else {
                    throw CommandFailure("\(path) does not exist: run `suture kmod build` first")
                }
                let signed = ModuleSignature.of(file: path) != nil
                let blocking = status.obstacles(moduleSigned: signed)
                if !blocking.isEmpty {
                    var message = "cannot load \(path)" + (signed ? "" : " (unsigned)") + ":\n"
                        + blocking.map { "  - \($0)" }.joined(separator: "\n")
                    if blocking.contains(where: \.isLiftedBySigning) { message += "\n  " + KernelModuleStatus.signingHint }
                    throw CommandFailure(message)
                }
                let result = try KernelModuleStatus.insmod(path)
                guard result.status == 0 else {
                    let meaning = KernelModuleStatus.explainInsmodFailure(result.output, module: path, signed: signed)
                    throw CommandFailure((meaning.map { $0 + "\n" } ?? "")
                                         + "insmod \(path) failed (status \(result.status)): \(result.output)")
                }
                FileHandle.standardOutput.write(Data("loaded \(path): \(KernelModuleStatus.current().device)\n".utf8))
            }
        }
    }

    struct Unload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "rmmod the module. Patches already written stay; `revert -t local` needs the module loaded again.")

        @Option(name: .customLong("state-dir"), help: ArgumentHelp(
            "The journal's folder, to list the patches that stay (default $SUTURE_STATE_DIR or /var/lib/suture).", valueName: "dir"))
        var stateDirectory: String?

        func run() throws {
            try running("kmod unload") {
                guard KernelModuleStatus.current().loaded else {
                    FileHandle.standardOutput.write(Data("not loaded\n".utf8))
                    return
                }
                let result = try KernelModuleStatus.rmmod()
                guard result.status == 0 else {
                    throw CommandFailure("rmmod \(KernelModule.name) failed (status \(result.status)): \(result.output)")
                }
                // Unloading never touches patched text: say which patches stay, and what reverting needs.
                let journal = Journal(directory: stateDirectory ?? Journal.defaultDirectory())
                let applied = ((try? journal.patches(target: "local")) ?? []).filter { $0.state == .applied }.map(\.id)
                let staying = applied.isEmpty ? "applied patches stay in place"
                    : "\(applied.count) applied patch\(applied.count == 1 ? "" : "es") stay\(applied.count == 1 ? "s" : "") in place: "
                        + applied.joined(separator: ", ")
                FileHandle.standardOutput.write(Data("unloaded (\(staying); reverting needs `suture kmod load`)\n".utf8))
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Whether the module is loaded, and what would stop it from loading (no module support, "
                + "modules disabled, lockdown, signature enforcement, not root).")

        @Option(help: ArgumentHelp("The module file `kmod load` would use (default: the cache's build for uname -r).", valueName: "ko"))
        var module: String?

        func run() throws {
            try running("kmod status") {
                let path = module ?? KernelModule().modulePath(release: KmodCommand.runningRelease())
                FileHandle.standardOutput.write(Data(KernelModuleStatus.current().describe(module: path).utf8))
            }
        }
    }
}

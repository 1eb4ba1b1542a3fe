import ArgumentParser
import Foundation
import Lab

/// `suture lab ...`: the Debian kernel under QEMU that Suture patches by default.
struct LabCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lab",
        abstract: "Boot and drive the lab VM: the pinned Debian kernel under QEMU.",
        subcommands: [Fetch.self, Up.self, Down.self, Status.self, Exec.self, Kallsyms.self, Info.self]
    )

    /// Progress lines go to stderr so stdout stays clean for output meant for pipes.
    static let progress: LabProgress = { line in
        FileHandle.standardError.write(Data(("lab: " + line + "\n").utf8))
    }

    static func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download the kernel and NFS packages and build the initramfs (once; later runs check).")

        func run() throws {
            let image = try Ingredients().fetch(progress: LabCommand.progress)
            LabCommand.write("kernel \(image.kernel)\ninitramfs \(image.initramfs)\n")
        }
    }

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Boot the lab VM and wait for its shell.")

        @Flag(name: .customLong("kaslr"), help: "Randomize the kernel base (the kernel's default).")
        var kaslr = false
        @Flag(name: .customLong("nokaslr"), help: "Boot with nokaslr: addresses equal the kernel's System.map.")
        var nokaslr = false
        @Option(help: "Virtual CPUs.")
        var smp = 2
        @Option(help: "Guest memory in MB.")
        var memory = 512
        @Flag(help: "Serve a tmpfs over NFSv3 in the guest and mount it on /mnt/nfs.")
        var nfs = false
        @Flag(help: ArgumentHelp("Carry suture, its shared libraries and the helper module (built for the lab's kernel) into the guest.",
                                 discussion: "suture is the release build `\(GuestSuture.buildCommand)` leaves in \(GuestSuture.buildPath), "
                                     + "with the Swift runtime linked in statically."))
        var inside = false
        @Option(help: ArgumentHelp("With --inside: the suture binary to carry instead of the `\(GuestSuture.buildCommand)` build.",
                                   valueName: "path"))
        var binary: String?

        func validate() throws {
            if kaslr && nokaslr { throw ValidationError("--kaslr and --nokaslr exclude each other") }
            if smp < 1 || smp > 64 { throw ValidationError("--smp must be between 1 and 64") }
            if memory < 128 { throw ValidationError("--memory must be at least 128 (MB)") }
            if binary != nil && !inside { throw ValidationError("--binary goes with --inside") }
        }

        func run() throws {
            var options = LabOptions(kaslr: nokaslr ? false : (kaslr ? true : nil), smp: smp, memoryMB: memory, nfs: nfs)
            if inside {
                let kernelModule = KernelModule()
                // The binary is checked before the module is built: a missing build fails at once.
                let guest = try GuestSuture(binary: binary ?? GuestSuture.defaultBinary(sourceRoot: kernelModule.sourceRoot))
                LabCommand.progress("carrying \(guest.binary) and \(guest.libraries.count) shared libraries into the guest")
                let module = try kernelModule.build(release: Ingredients.kernelRelease, progress: LabCommand.progress)
                options.extraFiles = guest.files(module: module)
            }
            let state = try LabVM().up(options, progress: LabCommand.progress)
            LabCommand.write(Status.describe(state))
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the lab VM (QMP quit, then SIGTERM/SIGKILL).")

        func run() throws {
            LabCommand.write(try LabVM().down() ? "lab stopped\n" : "lab was not running\n")
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say whether the lab VM is up (exit status 0) or not (exit status 3).")

        func run() throws {
            switch try LabVM().status() {
            case .up(let state):
                LabCommand.write(Self.describe(state))
            case .booting(let state):
                LabCommand.write("booting: QEMU pid \(state.qemu.pid), gdbstub \(state.gdbAddress)\n")
                throw ExitCode(3)
            case .down(let stale):
                LabCommand.write(stale == nil ? "down\n" : "down (QEMU pid \(stale!.qemu.pid) from the last `up` is gone)\n")
                throw ExitCode(3)
            }
        }

        static func describe(_ state: LabState) -> String {
            var lines = [
                "up: QEMU pid \(state.qemu.pid), gdbstub \(state.gdbAddress), KASLR \(state.kaslr ? "on" : "off"), "
                    + "\(state.smp) CPUs, \(state.memoryMB) MB\(state.nfs ? ", NFS on /mnt/nfs" : "")",
                "console \(state.serialSocket) (log \(state.serialLog)), QMP \(state.qmpSocket)",
            ]
            if let bootID = state.bootID { lines.append("boot id \(bootID)") }
            if let boot = state.bootSeconds {
                var timing = String(format: "shell after %.1f s", boot)
                if let uptime = state.guestUptime { timing += String(format: " (guest uptime %.2f s)", uptime) }
                if let nfs = state.nfsSeconds { timing += String(format: ", NFS setup %.1f s", nfs) }
                lines.append(timing)
            }
            return lines.joined(separator: "\n") + "\n"
        }
    }

    struct Exec: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a shell command in the guest; print its output and exit with its status.")

        @Option(help: "Seconds to wait for the command (it gets ^C after that).")
        var timeout: Double = 60
        @Argument(parsing: .captureForPassthrough, help: "The command (joined with spaces, run by the guest's sh).")
        var command: [String] = []

        func validate() throws {
            if command.isEmpty { throw ValidationError("give a command to run in the guest") }
        }

        func run() throws {
            let words = command.first == "--" ? Array(command.dropFirst()) : command
            let result = try LabVM().exec(words.joined(separator: " "), timeout: timeout)
            LabCommand.write(result.output)
            if result.status != 0 { throw ExitCode(result.status) }
        }
    }

    struct Kallsyms: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the guest's /proc/kallsyms (moved over the bulk channel, cached per boot).")

        @Flag(help: "Print the cached file's path and line count instead of the symbols.")
        var path = false

        func run() throws {
            let symbols = try LabVM().kallsyms()
            if path {
                LabCommand.write("\(symbols.path) (\(symbols.lineCount) lines\(symbols.cached ? ", cached" : ""))\n")
            } else {
                FileHandle.standardOutput.write(Data(symbols.text))
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the guest kernel's release and build-id.")

        func run() throws {
            let vm = LabVM()
            let info = try vm.info()
            var text = "release \(info.release)\nbuild-id \(info.buildIDHex)\nboot id \(info.bootID)\n"
            text += "cmdline \(info.commandLine)\n"
            if case .up(let state) = try vm.status() { text += "gdbstub \(state.gdbAddress)\n" }
            LabCommand.write(text)
        }
    }
}

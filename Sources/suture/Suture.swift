import ArgumentParser
import Foundation

@main
struct Suture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suture",
        abstract: "Patch the machine code of a running Linux kernel or process: safely, verifiably, reversibly.",
        subcommands: [
            LabCommand.self, SymbolsCommand.self, DisasmCommand.self, LocateCommand.self,
            ReadCommand.self, PokeCommand.self, FlipCommand.self,
            DiffCommand.self, ApplyCommand.self, RevertCommand.self, StatusCommand.self, RecoverCommand.self, PsCommand.self,
            BuildCommand.self, DemoCommand.self, KmodCommand.self, BenchCommand.self,
        ]
    )

    /// Exit codes are part of the interface: 0 done, 1 error, 2 usage, 3 refused by preflight.
    /// ArgumentParser reports usage errors as 64 (EX_USAGE); Suture says 2, like most Unix tools.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

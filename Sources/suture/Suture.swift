import ArgumentParser

@main
struct Suture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suture",
        abstract: "Patch the machine code of a running Linux kernel or process: safely, verifiably, reversibly.",
        subcommands: [
            LabCommand.self, SymbolsCommand.self, DisasmCommand.self, LocateCommand.self,
            ReadCommand.self, PokeCommand.self, FlipCommand.self,
            DiffCommand.self, ApplyCommand.self, RevertCommand.self, StatusCommand.self, RecoverCommand.self, PsCommand.self,
            DemoCommand.self, BenchCommand.self, KmodCommand.self,
        ]
    )
}

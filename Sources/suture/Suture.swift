import ArgumentParser

@main
struct Suture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suture",
        abstract: "Patch the machine code of a running Linux kernel or process: safely, verifiably, reversibly.",
        subcommands: [
            LabCommand.self, SymbolsCommand.self,
            ReadCommand.self, PokeCommand.self, FlipCommand.self,
            ApplyCommand.self, RevertCommand.self, StatusCommand.self, RecoverCommand.self,
            DemoCommand.self,
        ]
    )
}

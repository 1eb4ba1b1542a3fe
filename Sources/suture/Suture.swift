import ArgumentParser

@main
struct Suture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suture",
        abstract: "Patch the machine code of a running Linux kernel or process: safely, verifiably, reversibly.",
        subcommands: [SymbolsCommand.self, DiffCommand.self]
    )
}

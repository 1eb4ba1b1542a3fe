import ArgumentParser
import Foundation
import ELF
import Patching

/// `suture poke -t T EXPR --expect HEX --write HEX`: the article's one-liner, made safe.
struct PokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poke", abstract: "Replace bytes at an address after checking what is there now.",
        discussion: "The article's perl one-liner, with every check: suture poke 'nfs_flock [nfs]+0x2f' --expect 74 --write 75")

    @OptionGroup var targetOptions: TargetOptions
    @OptionGroup var writeOptions: WriteOptions
    @OptionGroup var referenceOptions: ReferenceOptions

    @Argument(help: ArgumentHelp("Where: nfs_flock+0x2f, \"nfs_flock [nfs]+0x2f\", 0xffffffffc03b228f.", valueName: "expr"))
    var expression: String

    @Option(name: .long, help: ArgumentHelp("The bytes that must be there now (hex).", valueName: "hex"))
    var expect: String

    @Option(name: .long, help: ArgumentHelp("The bytes to write (hex, same length).", valueName: "hex"))
    var write: String

    @Option(name: .long, help: ArgumentHelp("Also save the one-hunk bundle to this file.", valueName: "file"))
    var save: String?

    func run() throws {
        try running("poke") {
            guard let expected = Hex.parseBytes(expect) else { throw ValidationError("--expect: not hex bytes: \(expect)") }
            guard let replacement = Hex.parseBytes(write) else { throw ValidationError("--write: not hex bytes: \(write)") }
            try applyHandPatch(at: expression, save: save, targetOptions: targetOptions, writeOptions: writeOptions,
                               referenceOptions: referenceOptions) { patch, address in
                try patch.poke(at: address, expected: expected, replacement: replacement)
            }
        }
    }
}

/// `suture flip -t T EXPR`: invert the conditional jump at EXPR.
struct FlipCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flip", abstract: "Invert the conditional jump at an address (je ↔ jne, jg ↔ jle, …).")

    @OptionGroup var targetOptions: TargetOptions
    @OptionGroup var writeOptions: WriteOptions
    @OptionGroup var referenceOptions: ReferenceOptions

    @Argument(help: ArgumentHelp("Where the jump is: \"nfs_flock [nfs]+0x2f\".", valueName: "expr"))
    var expression: String

    @Option(name: .long, help: ArgumentHelp("Also save the one-hunk bundle to this file.", valueName: "file"))
    var save: String?

    func run() throws {
        try running("flip") {
            try applyHandPatch(at: expression, save: save, targetOptions: targetOptions, writeOptions: writeOptions,
                               referenceOptions: referenceOptions, describe: true) { patch, address in
                try patch.flip(at: address)
            }
        }
    }
}

/// What poke and flip share: resolve EXPR on the target, make the one-hunk bundle (checked whole
/// against a reference object when there is one), save it if asked, and apply it through the engine.
private func applyHandPatch(at expression: String, save: String?, targetOptions: TargetOptions, writeOptions: WriteOptions,
                            referenceOptions: ReferenceOptions, describe: Bool = false,
                            make: (HandPatch, UInt64) throws -> PatchBundle) throws {
    let session = try targetOptions.open()
    let place = try session.resolve(expression)
    let reference = try referenceOptions.reference(for: place, session: session)
    if let reference { print("whole function checked against \(reference.path)") }
    let bundle = try make(HandPatch(target: session.target, symbols: session.symbols, reference: reference), place.address)
    try save.map { try bundle.save(path: $0) }
    if describe { print(bundle.description ?? "") }
    let result = try session.engine(journal: targetOptions.journal)
        .apply(bundle, options: try writeOptions.preflightOptions(), dryRun: writeOptions.dryRun)
    print(PatchReport.apply(result, target: session.name))
}
